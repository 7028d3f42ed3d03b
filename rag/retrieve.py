"""First-stage retrieval: dense (the bi-encoder in Chroma), BM25, or both fused by reciprocal rank.

``reciprocal_rank_fusion`` is a pure function. ``LexicalIndex`` keeps a BM25 index
of a store's chunks and rebuilds it when the store's file ledger changes, so
BM25 sees exactly what Chroma holds after any ingest, update or removal (also
ones made by another process). ``retrieve`` runs one mode; ``Retriever`` is the first stage
as configured (its index, fusion, a mode per language), timing itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rag.choices import MODES
from rag.common import check_int
from rag.config import Settings
from rag.embedder import Embedder
from rag.lexical import Bm25Index
from rag.store import ChunkStore
from rag.types import Chunk


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
    check_int("rrf k", k, 1)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    seen = list(scores)  # insertion order = first appearance
    return sorted(((i, scores[i]) for i in seen), key=lambda pair: -pair[1])


class LexicalIndex:
    """A BM25 index that follows a ChunkStore: rebuilt when the store's ledger changes."""

    def __init__(
        self, store: ChunkStore, *, korean: str = "morphemes", stemming: str = "english"
    ) -> None:
        self.store = store
        self.korean = korean
        self.stemming = stemming
        self._lock = threading.Lock()
        self._key: str | None = None
        self._index: Bm25Index | None = None

    @classmethod
    def from_settings(cls, store: ChunkStore, settings: Settings) -> LexicalIndex:
        """The BM25 index ``retrieval.*`` configures (its Korean terms and English stems)."""
        r = settings.retrieval
        return cls(store, korean=r.korean_tokens, stemming=r.stemming)

    def current(self) -> Bm25Index:
        key = self.store.fingerprint()
        with self._lock:
            if self._index is None or key != self._key:
                ids, texts = self.store.all_texts()
                self._index, self._key = (
                    Bm25Index(ids, texts, korean=self.korean, stemming=self.stemming),
                    key,
                )
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
    # BM25 cannot filter by file: ask for enough more that k are left after the
    # hidden files' chunks go
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


def language_routes(settings: Settings, mode: str | None = None) -> dict[str, str]:
    """``retrieval.modes_by_language`` while the configured mode is kept (``mode`` None or the
    same); none once another mode is picked (the app's sidebar, a ``--mode`` flag)."""
    r = settings.retrieval
    return dict(r.modes_by_language) if mode in (None, r.mode) else {}


@dataclass(frozen=True)
class Retrieval:
    """What the first stage found for one question.

    ``hits`` best first with their scores; ``hidden`` the half-written files whose chunks were
    left out (source -> chunk count); ``timings`` in seconds: ``embed_query`` (when the mode
    embeds) and ``retrieve`` (the search itself, embedding not included).
    """

    hits: list[tuple[Chunk, float]]
    hidden: dict[str, int]
    timings: dict[str, float]


@dataclass(frozen=True)
class Retriever:
    """The first stage over one store: dense (the bi-encoder), BM25 or hybrid, with its index,
    its fusion settings and a mode per question language (``retrieval.modes_by_language``).

    Built from settings by :meth:`from_settings` (the command lines, the app, evaluation and
    the benchmark all do); holds no per-question state.
    """

    embedder: Embedder
    store: ChunkStore
    lexical: LexicalIndex | None
    mode: str = "dense"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)  # (dense, BM25) in hybrid mode
    modes_by_language: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        embedder: Embedder,
        store: ChunkStore,
        *,
        lexical: LexicalIndex | None = None,
        mode: str | None = None,
    ) -> Retriever:
        """``retrieval.*`` as configured; ``lexical`` shares an index already built (the app's),
        ``mode`` replaces the configured one (and then no language picks another)."""
        r = settings.retrieval
        return cls(
            embedder=embedder,
            store=store,
            lexical=lexical if lexical is not None else LexicalIndex.from_settings(store, settings),
            mode=mode if mode is not None else r.mode,
            rrf_k=r.rrf_k,
            weights=(r.dense_weight, r.bm25_weight),
            modes_by_language=language_routes(settings, mode),
        )

    def search(self, question: str, *, k: int, mode: str, also: str | None = None) -> Retrieval:
        """The top ``k`` for ``question`` by ``mode``; with ``also``, the top ``k`` of the two
        questions fused by reciprocal rank (``also``'s list first: a follow-up as typed beside
        its widened form)."""
        check_mode(mode)
        check_int("k", k, 1)
        questions = [q for q in (also, question) if q is not None]
        timings: dict[str, float] = {}
        vectors: dict[str, np.ndarray] = {}
        if mode != "bm25":
            started = time.perf_counter()
            vectors = {q: self.embedder.embed_query(q) for q in questions}
            timings["embed_query"] = time.perf_counter() - started
        started = time.perf_counter()
        hidden = self.store.half_written()
        lists = [
            retrieve(
                q,
                mode=mode,
                k=k,
                store=self.store,
                embed=vectors.__getitem__,
                lexical=self.lexical,
                rrf_k=self.rrf_k,
                weights=self.weights,
                hidden=hidden,
            )
            for q in questions
        ]
        hits = lists[0] if len(lists) == 1 else self._fuse(lists, k)
        timings["retrieve"] = time.perf_counter() - started
        return Retrieval(hits=hits, hidden=hidden, timings=timings)

    def _fuse(self, lists: list[list[tuple[Chunk, float]]], k: int) -> list[tuple[Chunk, float]]:
        known = {c.id: c for hits in lists for c, _ in hits}
        ids = [[c.id for c, _ in hits] for hits in lists]
        fused = reciprocal_rank_fusion(ids, [1.0] * len(ids), self.rrf_k)[:k]
        return [(known[i], score) for i, score in fused]

    def models(self, mode: str) -> dict[str, str]:
        """The models a search in ``mode`` runs, for the trace: the embedder unless BM25 alone."""
        if mode == "bm25":
            return {}
        return {"embedder": f"{self.embedder.name} ({self.embedder.device})"}
