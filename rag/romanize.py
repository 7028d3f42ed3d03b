"""Hangul syllables written in Latin letters, so an English WordPiece vocabulary reads Korean as
words.

MiniLM's vocabulary has no Hangul syllables: it splits Korean into jamo, about three
tokens a syllable, whose embeddings were hardly trained, and a word with a jamo it lacks
becomes [UNK]. Spelled in Latin letters (Revised Romanization letter values, syllable by
syllable, without the sound-change rules), the same text is about one word piece a
syllable, every piece is a trained one, and a word spelled the same in question and
passage is spelled the same pieces. The mapping is deterministic and applied to the
question and to the passage alike, so it needs to be exact, not pronounceable.

Everything that is not a precomposed Hangul syllable (U+AC00-U+D7A3) is kept as it is.
"""

from __future__ import annotations

_FIRST = 0xAC00
_LAST = 0xD7A3
INITIALS = (
    "g",
    "kk",
    "n",
    "d",
    "tt",
    "r",
    "m",
    "b",
    "pp",
    "s",
    "ss",
    "",
    "j",
    "jj",
    "ch",
    "k",
    "t",
    "p",
    "h",
)
VOWELS = (
    "a",
    "ae",
    "ya",
    "yae",
    "eo",
    "e",
    "yeo",
    "ye",
    "o",
    "wa",
    "wae",
    "oe",
    "yo",
    "u",
    "wo",
    "we",
    "wi",
    "yu",
    "eu",
    "ui",
    "i",
)
# Final consonants by letter, not by sound (Revised Romanization's transliteration values), so that
# syllables that differ only in their final (있 / 잇) stay apart.
FINALS = (
    "",
    "g",
    "kk",
    "gs",
    "n",
    "nj",
    "nh",
    "d",
    "l",
    "lg",
    "lm",
    "lb",
    "ls",
    "lt",
    "lp",
    "lh",
    "m",
    "b",
    "bs",
    "s",
    "ss",
    "ng",
    "j",
    "ch",
    "k",
    "t",
    "p",
    "h",
)


def _syllable(code: int) -> str:
    index = code - _FIRST
    initial, rest = divmod(index, 21 * 28)
    vowel, final = divmod(rest, 28)
    return INITIALS[initial] + VOWELS[vowel] + FINALS[final]


def has_hangul(text: str) -> bool:
    return any(_FIRST <= ord(ch) <= _LAST for ch in text)


def romanize(text: str) -> str:
    """``text`` with every Hangul syllable spelled in Latin letters; other characters unchanged."""
    if not has_hangul(text):
        return text
    return "".join(_syllable(ord(ch)) if _FIRST <= ord(ch) <= _LAST else ch for ch in text)
