"""Scores already computed are not computed again: a bounded cache around any reranker.

In the app the same (question, passage) pairs come back often: the question is
asked again with another top-n, chunk order or LLM, the Compare view is opened
after a plain answer, top-k grows from 20 to 30 (20 pairs known, 10 new). A
reranker's raw score for a pair depends on nothing else (not on the other
passages in the call), so it can be kept. The key is the question and a hash of
the passage text, so a chunk whose text changed on re-ingest is scored afresh;
one cache belongs to one loaded reranker, so model, max_length and backend are
fixed for it. Entries are evicted least recently used first.

Scores from a cache equal the fresh ones up to padding noise (a pair batched
with a longer one sees more pad positions: differences of ~1e-6 in the logit).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Sequence

from rag.rerankers.base import Reranker, rank_candidates
from rag.types import Candidate

DEFAULT_PAIRS = 50_000  # about 10 MB of keys and floats


class CachedReranker:
    """A reranker that asks its inner reranker only for the pairs it has not scored yet.

    Thread-safe: the app shares one loaded reranker between sessions.
    """

    def __init__(self, inner: Reranker, *, max_pairs: int = DEFAULT_PAIRS) -> None:
        if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1:
            raise ValueError(f"max_pairs must be a positive integer, got {max_pairs!r}")
        self.inner = inner
        self.max_pairs = max_pairs
        self._scores: OrderedDict[tuple[str, bytes], tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    # What the trace and the UI show is the inner reranker's.
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def device(self) -> str:
        return self.inner.device

    @property
    def dtype(self) -> str:
        return self.inner.dtype

    @property
    def backend(self) -> str:
        return getattr(self.inner, "backend", "torch")

    @property
    def normalize(self) -> str:
        return self.inner.normalize  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._scores)

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> list[Candidate]:
        return self.rerank_counted(query, candidates)[0]

    def rerank_counted(self, query: str, candidates: Sequence[Candidate]) -> tuple[list[Candidate], int]:
        """The ranking and how many of its scores came from the cache."""
        if not candidates:
            return [], 0
        raw, truncated, reused = self._scores_for(query, [c.chunk.text for c in candidates])
        return rank_candidates(candidates, raw, truncated, self.normalize), reused

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        raw, truncated, _ = self._scores_for(query, passages)
        return raw, truncated

    def _scores_for(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool], int]:
        keys = [(query, hashlib.blake2b(p.encode("utf-8"), digest_size=16).digest()) for p in passages]
        found: dict[int, tuple[float, bool]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._scores.get(key)
                if hit is not None:
                    self._scores.move_to_end(key)
                    found[i] = hit
        missing = [i for i in range(len(passages)) if i not in found]
        first: dict[tuple[str, bytes], int] = {}  # each missing key -> its first passage: repeats are scored once
        for i in missing:
            first.setdefault(keys[i], i)
        if first:
            raw, flags = self.inner.score_pairs(query, [passages[i] for i in first.values()])
            fresh = {key: (float(r), bool(f)) for key, r, f in zip(first, raw, flags)}
            with self._lock:
                for key, value in fresh.items():
                    self._scores[key] = value
                    self._scores.move_to_end(key)
                while len(self._scores) > self.max_pairs:
                    self._scores.popitem(last=False)
            for i in missing:
                found[i] = fresh[keys[i]]
        reused = len(passages) - len(missing)
        return [found[i][0] for i in range(len(passages))], [found[i][1] for i in range(len(passages))], reused
