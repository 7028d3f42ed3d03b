"""Lexical retrieval: BM25 (the bm25s library) over tokens that work for Korean, English and CJK.

Tokenisation, per text:

* with Hangul: Kiwi (kiwipiepy), a Korean morphological analyser, keeps the content
  morphemes (nouns, verb and adjective stems, roots, numbers, foreign words) and drops
  particles and endings, so "휴가를" and "휴가는" both give "휴가";
* otherwise: lower-cased words, English stopwords dropped, each word reduced to its
  Snowball English stem (PyStemmer: "founded" and "founding" both give "found"); runs of
  Chinese or Japanese characters become character bigrams (no spaces to split on there).
  ``stemming = "none"`` keeps the words as written.

``Bm25Index`` is built from (id, text) pairs in memory. The pipeline builds it
from the Chroma collection itself, so it always holds exactly what the
collection holds, through every add, update and removal.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import Any, get_args

from bm25s.stopwords import STOPWORDS_EN

from rag.choices import KoreanTokens, Stemming
from rag.common import check_int

# bm25s sets its own logger to DEBUG on import; put it back under the application's logging.
logging.getLogger("bm25s").setLevel(logging.NOTSET)

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Kiwi tags kept: nouns, verb/adjective stems, roots, numbers, foreign words, Hanja,
# determiners/adverbs.
_KEPT_TAGS = ("NN", "NP", "NR", "VV", "VA", "XR", "SL", "SN", "SH", "MA", "MM")
_STOPWORDS = frozenset(STOPWORDS_EN)
_KIWI: Any = None
_KIWI_LOCK = threading.Lock()
# A PyStemmer Stemmer keeps a cache and is not safe to share between threads: one per thread.
_STEMMERS = threading.local()


def _stem(words: list[str]) -> list[str]:
    stemmer = getattr(_STEMMERS, "english", None)
    if stemmer is None:
        import Stemmer

        stemmer = _STEMMERS.english = Stemmer.Stemmer("english")
    return stemmer.stemWords(words)


def _kiwi() -> Any:
    global _KIWI
    with _KIWI_LOCK:
        if _KIWI is None:
            from kiwipiepy import Kiwi

            _KIWI = Kiwi()
        return _KIWI


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def _plain_tokens(text: str, stemming: str) -> list[str]:
    tokens: list[str] = []
    words: list[int] = []  # where the stemmable words sit in tokens
    for word in _WORD.findall(text.lower()):
        pieces = _CJK_RUN.split(word)
        runs = _CJK_RUN.findall(word)
        for i, piece in enumerate(pieces):
            if piece and piece not in _STOPWORDS:
                words.append(len(tokens))
                tokens.append(piece)
            if i < len(runs):
                tokens.extend(_bigrams(runs[i]))
    if stemming == "english" and words:
        for at, stem in zip(words, _stem([tokens[i] for i in words])):
            tokens[at] = stem
    return tokens


KOREAN_TOKENS = get_args(KoreanTokens)
STEMMING = get_args(Stemming)


def tokenize(text: str, korean: str = "morphemes", stemming: str = "english") -> list[str]:
    """Index terms of a text (see the module docstring); the same function serves queries and
    passages.

    ``korean = "words"`` skips Kiwi and splits Korean like English (whole eojeol, particles
    attached): kept to measure what the morphological analyser buys. ``stemming`` applies to
    the words outside Korean and CJK (Latin letters in a Korean text included).
    """
    if korean not in KOREAN_TOKENS:
        raise ValueError(f"korean tokens {korean!r}: valid are {', '.join(KOREAN_TOKENS)}")
    if stemming not in STEMMING:
        raise ValueError(f"stemming {stemming!r}: valid are {', '.join(STEMMING)}")
    if korean == "words" or not _HANGUL.search(text):
        return _plain_tokens(text, stemming)
    kiwi = _kiwi()
    with _KIWI_LOCK:
        morphemes = kiwi.tokenize(text)
    tokens = []
    for m in morphemes:
        if m.tag.startswith(_KEPT_TAGS):
            form = m.form.lower()
            if m.tag.startswith(("SL", "SH", "SN")):  # split as in text without Hangul
                tokens.extend(_plain_tokens(form, stemming))
            elif form not in _STOPWORDS:
                tokens.append(form)
    return tokens


class Bm25Index:
    """BM25 over a fixed set of (id, text) pairs; ``search`` returns (id, score) best first."""

    def __init__(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        *,
        korean: str = "morphemes",
        stemming: str = "english",
    ) -> None:
        import bm25s

        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
        self.ids = list(ids)
        self.korean = korean
        self.stemming = stemming
        self._model = bm25s.BM25()
        if self.ids:
            self._model.index([tokenize(t, korean, stemming) for t in texts], show_progress=False)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Up to k (id, score) pairs with a positive score, best first (ties keep index order)."""
        check_int("k", k, 1)
        terms = tokenize(query, self.korean, self.stemming)
        if not self.ids or not terms:
            return []
        found, scores = self._model.retrieve(
            [terms], k=min(k, len(self.ids)), show_progress=False, n_threads=1
        )
        return [(self.ids[int(i)], float(s)) for i, s in zip(found[0], scores[0]) if s > 0]
