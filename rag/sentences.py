"""Sentence boundaries in English, Korean and CJK text, as exact character spans.

Shared by chunking (chunks are filled with whole sentences), the local model's
prompt (each source sentence ends with its citation marker), answer streaming
(whole sentences are shown; an answer cut at the token limit loses its unfinished
last sentence) and evidence (the sentences of a source that support an answer).
Everything here is a pure function.
"""

from __future__ import annotations

import re

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# Latin terminators count only before whitespace; CJK ones end a sentence even without a space.
# quotes, brackets, 」』）〕】》〉
_CLOSERS = "\"'\u201d\u2019)\\]\u300d\u300f\uff09\u3015\u3011\u300b\u3009"
_LATIN_END = re.compile(rf"[.?!\u2026]+[{_CLOSERS}]*(?=\s)")
_CJK_END = re.compile(rf"[\u3002\uff01\uff1f\uff61\uff0e]+[{_CLOSERS}]*")  # 。！？｡．
# 다 / 요 / 죠 at a line end, or before a terminator glued to the next Hangul syllable ("있다.다음")
_HANGUL_END = re.compile(r"[\ub2e4\uc694\uc8e0](?:[.?!]+(?=[\uac00-\ud7a3])|(?=[ \t]*\n))")
_NEXT_CHAR = re.compile(r"\s*(\S)")
_LAST_WORD = re.compile(r"\S*$")
ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "cf",
        "fig",
        "figs",
        "no",
        "nos",
        "vol",
        "vols",
        "pp",
        "ed",
        "eds",
        "approx",
        "dept",
        "est",
        "al",
        "ca",
        "ch",
        "sec",
        "eq",
        "ref",
        "resp",
    }
)


def period_ends_sentence(text: str, start: int, end: int) -> bool:
    """Is the "." (or "...") in text[start:end] a sentence end rather than an abbreviation or
    list number?
    """
    following = _NEXT_CHAR.match(text, end)
    if following is not None and following.group(1).islower():
        return False  # "e.g. the", "approx. five": sentences do not start in lower case
    raw = _LAST_WORD.search(text, max(0, start - 40), start).group()
    word = raw.lstrip("([{\"'\u201c\u2018").lower()
    if word in ABBREVIATIONS or re.fullmatch(r"[a-z]|(?:[a-z]\.)+[a-z]", word):
        return False  # "Dr.", initials "H. G. Wells", "e.g.", "U.S."
    word_start = start - len(raw)
    at_line_start = word_start == 0 or text[word_start - 1] == "\n"
    return not (at_line_start and word.isdigit() and len(word) <= 3)  # "1. Introduction"


def _breaks(text: str, lo: int, hi: int) -> list[int]:
    """Positions in (lo, hi) where a sentence ends inside the paragraph text[lo:hi]."""
    cuts = {m.end() for m in _CJK_END.finditer(text, lo, hi)}
    cuts.update(m.end() for m in _HANGUL_END.finditer(text, lo, hi))
    for m in _LATIN_END.finditer(text, lo, hi):
        if "?" in m.group() or "!" in m.group() or period_ends_sentence(text, m.start(), m.end()):
            cuts.add(m.end())
    return sorted(c for c in cuts if lo < c < hi)


def _stripped(text: str, lo: int, hi: int) -> tuple[int, int]:
    while lo < hi and text[lo].isspace():
        lo += 1
    while hi > lo and text[hi - 1].isspace():
        hi -= 1
    return lo, hi


def sentence_spans(text: str) -> list[list[tuple[int, int]]]:
    """Paragraphs (split at blank lines), each a list of (start, end) sentence spans in ``text``."""
    paragraphs: list[list[tuple[int, int]]] = []
    bounds, lo = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        bounds.append((lo, m.start()))
        lo = m.end()
    bounds.append((lo, len(text)))
    for p_lo, p_hi in bounds:
        sentences, prev = [], p_lo
        for cut in [*_breaks(text, p_lo, p_hi), p_hi]:
            start, end = _stripped(text, prev, cut)
            if start < end:
                sentences.append((start, end))
            prev = cut
        if sentences:
            paragraphs.append(sentences)
    return paragraphs


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` in order, each an exact substring with outer whitespace stripped.

    Ends: ". ", "? ", "! " (not after "e.g.", "Dr.", initials, or before a
    lower-case word; "3.14" never matches), 。！？ without a following space,
    Korean 다/요/죠 at a line end, and blank lines. Only whitespace is dropped,
    so joining the sentences reproduces the text modulo whitespace.
    """
    return [text[s:e] for paragraph in sentence_spans(text) for s, e in paragraph]


def spans(text: str) -> list[tuple[int, int]]:
    """Every sentence's (start, end) in ``text``, in order, across paragraphs."""
    return [span for paragraph in sentence_spans(text) for span in paragraph]
