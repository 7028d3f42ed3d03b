"""The one shape of every reranker, and the pure helpers they share.

:class:`Reranker` owns what every kind has in common: its options (batch size,
padded-token cap, max_length, normalisation), length-sorted batching, ``rerank``
(score, then rank by the raw scores) and the score cache. A kind writes one method,
``score_pairs``: one raw score per (query, passage) pair and whether that input was
cut at ``max_length`` (FlagEmbedding's AbsReranker shape). Turning scores into a
ranking (normalising, sorting, numbering, copying the candidates) is
:func:`rank_candidates`, once for every kind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rag.choices import NORMALIZERS
from rag.common import check_int, check_number
from rag.rerankers.window import check_mode
from rag.types import Candidate

if TYPE_CHECKING:
    from rag.rerankers.cache import ScoreCache

logger = logging.getLogger(__name__)

# Below this, no reranker input can hold a query, a passage and the special tokens.
MIN_MAX_LENGTH = 8


class RerankError(RuntimeError):
    """Reranking failed at inference time (not at load time: that is ModelLoadError)."""


def check_normalize(method: str) -> str:
    """Validate a normalisation name early (at load), so a typo fails before the first query."""
    if method not in NORMALIZERS:
        raise ValueError(f"unknown score normalisation {method!r}; valid: {', '.join(NORMALIZERS)}")
    return method


def check_options(
    *,
    batch_size: int,
    max_length: int,
    normalize: str,
    batch_tokens: int = 0,
    long_passages: str = "head",
    romanize_hangul: bool = False,
) -> None:
    """Shared constructor checks: the values come from config or from callers, never trust them."""
    check_int("batch_size", batch_size, 1)
    check_int("max_length", max_length, MIN_MAX_LENGTH)
    check_int("batch_tokens", batch_tokens, 0, " (0: automatic)")
    check_normalize(normalize)
    check_mode(long_passages)
    if not isinstance(romanize_hangul, bool):
        raise ValueError(f"romanize_hangul must be true or false, got {romanize_hangul!r}")


def _sigmoid(x: float) -> float:
    # Two branches so neither exp() can overflow for large |x|.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def normalize_scores(raw: Sequence[float], method: str) -> list[float]:
    """Map raw model scores to the score users see.

    * ``sigmoid``: each score on its own to (0, 1); comparable across queries,
      which is what a threshold needs (the bge rerankers' ``normalize=True``).
    * ``softmax``: over this query's candidates (exp(x - max) / sum, the
      overflow-safe form); says how the candidates share the probability mass,
      not how relevant any of them is in absolute terms.
    * ``none``: the raw scores, as floats.
    """
    check_normalize(method)
    values = [float(x) for x in raw]
    if method == "sigmoid":
        return [_sigmoid(x) for x in values]
    if method == "softmax":
        if not values:
            return []
        top = max(values)
        exps = [math.exp(x - top) for x in values]
        total = sum(exps)
        return [e / total for e in exps]
    return values


def rank_candidates(
    candidates: Sequence[Candidate],
    raw: Sequence[float],
    truncated: Sequence[bool],
    method: str,
) -> list[Candidate]:
    """New candidates sorted by score (ties keep retrieval order), ranked 1..n.

    Sorting uses the raw score: every normalisation is monotonic, but sigmoid
    saturates to exactly 1.0 for large logits and would turn real differences
    into ties.
    """
    if not (len(candidates) == len(raw) == len(truncated)):
        raise ValueError(
            f"got {len(candidates)} candidates but {len(raw)} scores and {len(truncated)} "
            "truncation flags"
        )
    raw_floats = [float(x) for x in raw]
    for candidate, value in zip(candidates, raw_floats):
        if math.isnan(value):
            raise RerankError(
                f"the reranker returned NaN for chunk {candidate.chunk.id!r} "
                "(half precision overflow? try dtype = 'float32')"
            )
    scores = normalize_scores(raw_floats, method)
    order = sorted(
        range(len(candidates)), key=lambda i: (-raw_floats[i], candidates[i].retrieval_rank)
    )
    return [
        dataclasses.replace(
            candidates[i],
            rank=position,
            rerank_score=scores[i],
            rerank_raw=raw_floats[i],
            truncated=bool(truncated[i]),
        )
        for position, i in enumerate(order, start=1)
    ]


def fuse_with_retrieval(ranked: Sequence[Candidate], weight: float, k: int = 60) -> list[Candidate]:
    """The reranked candidates reordered by reciprocal-rank fusion with their first-stage ranks.

    score = 1 / (k + reranked rank) + weight / (k + retrieval rank); ties keep the reranker's
    order. ``weight`` 0 returns the reranker's order unchanged. A small reranker that is right
    more often than the first stage but wrong in other places gains from the first stage's vote
    (``reranker.retrieval_weight``, chosen on validation data: guides/evaluation.md). Scores are
    not changed.
    """
    check_number("retrieval weight", weight, 0)
    if weight == 0:
        return list(ranked)
    fused = sorted(
        ranked, key=lambda c: (-(1.0 / (k + c.rank) + weight / (k + c.retrieval_rank)), c.rank)
    )
    return [dataclasses.replace(c, rank=position) for position, c in enumerate(fused, start=1)]


# Padded tokens a batch may hold on CPU (its longest pair x its pairs). Measured with bench/run.py
# on 2 cores: at 20 mixed-length candidates, batches under 1,024 tokens take 0.43-0.64x the time of
# 16 pairs a batch (less padding; a CPU gains nothing from wide batches); at 100, 0.83-0.95x. On a
# GPU wide batches pay: no cap there.
CPU_BATCH_TOKENS = 1024


def default_batch_tokens(device: str) -> int:
    """The padded-token cap per batch for ``device`` (0: none, only batch_size counts)."""
    return CPU_BATCH_TOKENS if device == "cpu" else 0


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int = 0
) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first.

    Padding each batch only to its own longest input wastes little compute when
    lengths are alike; longest first makes an out-of-memory error show up on
    the first batch rather than the last. A batch holds at most ``batch_size``
    inputs and, when ``max_tokens`` > 0, at most that many padded tokens (its
    longest input times its size; an input longer than that goes alone), so
    short inputs travel in wide batches and long ones in narrow batches.
    Callers put results back by index.
    """
    check_int("batch_size", batch_size, 1)
    check_int("max_tokens", max_tokens, 0, " (0: no cap)")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted longest first: the batch's first input is its longest, so it sets the padded width.
        full = len(current) >= batch_size or (
            max_tokens > 0 and current and lengths[current[0]] * (len(current) + 1) > max_tokens
        )
        if full:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


class Reranker(ABC):
    """Reorders retrieved candidates by a model's judgement of query/passage relevance.

    ``name`` is the model spec, ``kind`` the registry name, ``backend`` what runs the
    model (torch, onnx, onnx-int8, http), ``device`` and ``dtype`` plain strings
    ("cpu", "float32"): the trace and the UI show them so users can see what ran.
    Constructors are cheap: the loaders in the registry do the heavy loading.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        *,
        name: str,
        device: str,
        dtype: str,
        backend: str,
        batch_size: int,
        max_length: int,
        normalize: str,
        batch_tokens: int = 0,
        long_passages: str = "head",
        romanize_hangul: bool = False,
    ) -> None:
        check_options(
            batch_size=batch_size,
            max_length=max_length,
            normalize=normalize,
            batch_tokens=batch_tokens,
            long_passages=long_passages,
            romanize_hangul=romanize_hangul,
        )
        self.name = name
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.batch_size = batch_size
        # Padded tokens per forward pass (0 from config: automatic, by device).
        self.batch_tokens = batch_tokens if batch_tokens else default_batch_tokens(device)
        self.max_length = max_length
        self.normalize = normalize
        # What a passage longer than max_length leaves is read: its head, or its best window
        # (rag.rerankers.window).
        self.long_passages = long_passages
        # Hangul spelled in Latin letters before tokenising (rag.romanize), for
        # vocabularies without Hangul.
        self.romanize_hangul = romanize_hangul
        self.cache: ScoreCache | None = None

    @abstractmethod
    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        """Raw scores (higher is more relevant) and truncation flags, in the order of
        ``passages``.
        """

    def with_cache(self, cache: ScoreCache | None) -> Reranker:
        """This reranker, keeping the scores it computes in ``cache`` (None: no cache); set
        once, when built.
        """
        self.cache = cache
        return self

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices of the inputs in each forward pass: length-sorted, at most batch_size and
        batch_tokens.
        """
        return length_sorted_batches(lengths, self.batch_size, self.batch_tokens)

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> list[Candidate]:
        """All candidates as new objects, best first, with rank/rerank_*/truncated set.

        Keeping only the top n is the pipeline's business, so the trace can show
        where every candidate went.
        """
        return self.rerank_counted(query, candidates)[0]

    def rerank_counted(
        self, query: str, candidates: Sequence[Candidate]
    ) -> tuple[list[Candidate], int]:
        """The ranking, and how many of its scores came from the cache (0 without one)."""
        if not candidates:
            return [], 0
        passages = [c.chunk.text for c in candidates]
        if self.cache is None:
            raw, truncated = self.score_pairs(query, passages)
            reused = 0
        else:
            raw, truncated, reused = self.cache.scores(query, passages, self.score_pairs)
        return rank_candidates(candidates, raw, truncated, self.normalize), reused

    def describe(self) -> str:
        """What the trace and the UI show: ``kind: name (device, dtype[, backend])``."""
        shown = f"{self.device}, {self.dtype}" + (
            f", {self.backend}" if self.backend not in ("torch", "http") else ""
        )
        return f"{self.kind}: {self.name} ({shown})"
