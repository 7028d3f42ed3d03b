"""First-stage retrieval: dense (the bi-encoder in Chroma), BM25, or both fused by reciprocal rank.

``reciprocal_rank_fusion`` is a pure function. ``LexicalIndex`` keeps a BM25 index
of a store's chunks and rebuilds it when the store's file ledger changes, so
BM25 sees exactly what Chroma holds after any ingest, update or removal (also
ones made by another process). ``retrieve`` runs the configured mode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rag.lexical import Bm25Index
from rag.store import ChunkStore
from rag.types import Chunk

MODES = ("dense", "bm25", "hybrid")


def check_mode(mode: str) -> None:
    """An unknown mode raises ValueError listing the valid ones."""
    if mode not in MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; valid: {', '.join(MODES)}")


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(id) = sum of weight / (k + rank) over the lists that hold it.

    Best first; ties go to the id seen first (list order, then rank), so the
    result is deterministic. Cormack et al. (2009) found k = 60 robust.
    """
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    if k < 1:
        raise ValueError(f"rrf k = {k!r}: must be at least 1")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    seen = list(scores)  # insertion order = first appearance
    return sorted(((i, scores[i]) for i in seen), key=lambda pair: -pair[1])


class LexicalIndex:
    """A BM25 index that follows a ChunkStore: rebuilt when the store's ledger changes."""

    def __init__(self, store: ChunkStore, *, korean: str = "morphemes") -> None:
        self.store = store
        self.korean = korean
        self._lock = threading.Lock()
        self._key: str | None = None
        self._index: Bm25Index | None = None

    def current(self) -> Bm25Index:
        key = self.store.fingerprint()
        with self._lock:
            if self._index is None or key != self._key:
                ids, texts = self.store.all_texts()
                self._index, self._key = Bm25Index(ids, texts, korean=self.korean), key
            return self._index


def retrieve(
    question: str,
    *,
    mode: str,
    k: int,
    store: ChunkStore,
    embed: Callable[[str], np.ndarray],
    lexical: LexicalIndex | None,
    rrf_k: int = 60,
    weights: tuple[float, float] = (1.0, 1.0),
    hidden: Mapping[str, int] | None = None,
) -> list[tuple[Chunk, float]]:
    """The top k chunks with their scores: cosine similarity (dense), BM25 score, or fused RRF
    score.

    ``hidden``: files whose chunks are left out (source -> chunk count; half-written files).
    """
    check_mode(mode)
    if mode != "dense" and lexical is None:
        raise ValueError(f"retrieval mode {mode!r} needs a BM25 index, and this pipeline has none")
    hidden = hidden or {}
    if mode == "dense":
        return store.query(embed(question), k, exclude_sources=list(hidden))
    # BM25 cannot filter by file: ask for enough more that k are left after the hidden files' chunks
    # go
    lexical_hits = lexical.current().search(question, k + sum(hidden.values()))
    if mode == "bm25":
        return _with_chunks(store, lexical_hits, hidden)[:k]
    dense_hits = store.query(embed(question), k, exclude_sources=list(hidden))
    lexical_chunks = _with_chunks(store, lexical_hits, hidden)[:k]
    fused = reciprocal_rank_fusion(
        [[c.id for c, _ in dense_hits], [c.id for c, _ in lexical_chunks]], list(weights), rrf_k
    )[:k]
    known = {c.id: c for c, _ in dense_hits + lexical_chunks}
    return [(known[i], score) for i, score in fused]


def _with_chunks(
    store: ChunkStore, hits: Sequence[tuple[str, float]], hidden: Mapping[str, int]
) -> list[tuple[Chunk, float]]:
    chunks = {c.id: c for c in store.get_chunks([i for i, _ in hits])}
    return [
        (chunks[i], score) for i, score in hits if i in chunks and chunks[i].source not in hidden
    ]
