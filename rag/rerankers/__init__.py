"""The reranking stage: one protocol, one module per kind, an explicit registry.

``load_reranker(kind, model=..., ...)`` does the heavy loading once; the
returned object's ``rerank(query, candidates)`` gives every candidate back,
best first. The kind is always named in config (``reranker.kind``); it is
never guessed from the model name.
"""
from __future__ import annotations

from typing import Protocol

from rag.models import ModelLoadError
from rag.rerankers.base import (
    NORMALIZERS,
    Reranker,
    RerankError,
    check_normalize,
    normalize_scores,
    rank_candidates,
)
from rag.rerankers.cross_encoder import CrossEncoderReranker, load_cross_encoder
from rag.rerankers.llm_yes import LlmYesReranker, load_llm_reranker


class RerankerLoader(Protocol):
    def __call__(
        self, *, model: str, device: str, dtype: str, batch_size: int, max_length: int, normalize: str
    ) -> Reranker: ...


RERANKERS: dict[str, RerankerLoader] = {
    "cross-encoder": load_cross_encoder,
    "llm": load_llm_reranker,
}


def load_reranker(
    kind: str, *, model: str, device: str, dtype: str, batch_size: int, max_length: int, normalize: str
) -> Reranker:
    """Build the reranker of ``kind``; ``ModelLoadError`` names the model spec if it cannot load.

    ``device`` is "auto", "cpu", "cuda[:N]" or "mps"; ``dtype`` is "auto",
    "float32", "float16" or "bfloat16" (half precision only on a GPU).
    """
    if kind not in RERANKERS:
        raise ValueError(f"unknown reranker kind {kind!r}; valid: {', '.join(RERANKERS)}")
    check_normalize(normalize)
    return RERANKERS[kind](model=model, device=device, dtype=dtype, batch_size=batch_size,
                           max_length=max_length, normalize=normalize)


__all__ = [
    "NORMALIZERS",
    "RERANKERS",
    "CrossEncoderReranker",
    "LlmYesReranker",
    "ModelLoadError",
    "RerankError",
    "Reranker",
    "RerankerLoader",
    "load_reranker",
    "normalize_scores",
    "rank_candidates",
]
