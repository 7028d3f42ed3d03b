"""The reranking stage: one protocol, one module per kind, an explicit registry.

``load_reranker(kind, model=..., ...)`` does the heavy loading once; the
returned object's ``rerank(query, candidates)`` gives every candidate back,
best first. The kind is always named in config (``reranker.kind``); it is
never guessed from the model name. ``cross-encoder`` and ``llm`` run a model in
this process; ``remote`` asks a rerank server at ``endpoint`` (TEI, Infinity,
vLLM, Cohere). ``backend`` picks what runs an in-process model: torch for every
kind, and for the cross-encoder also ONNX Runtime on CPU (``onnx``, fp32, or
``onnx-int8``, int8 weights), exported once per model and cached on disk.
"""
from __future__ import annotations

import functools
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
from rag.rerankers.remote import RemoteEndpoint, RemoteReranker, load_remote_reranker


class InProcessLoader(Protocol):
    """Loads a model that runs in this process; these kinds talk to no endpoint."""

    def __call__(
        self, *, model: str, device: str, dtype: str, batch_size: int, max_length: int, normalize: str
    ) -> Reranker: ...


class RerankerLoader(Protocol):
    def __call__(
        self, *, model: str, device: str, dtype: str, batch_size: int, max_length: int, normalize: str,
        endpoint: RemoteEndpoint | None = None,
    ) -> Reranker: ...


def in_process(loader: InProcessLoader) -> RerankerLoader:
    """The registry entry of a kind that runs in this process: ``endpoint`` does not apply to it.

    The endpoint belongs to the whole ``[reranker]`` section (the app offers
    local alternatives beside a remote reranker), so it is ignored, not refused.
    """

    @functools.wraps(loader)
    def load(
        *, model: str, device: str, dtype: str, batch_size: int, max_length: int, normalize: str,
        endpoint: RemoteEndpoint | None = None,
    ) -> Reranker:
        return loader(model=model, device=device, dtype=dtype, batch_size=batch_size, max_length=max_length,
                      normalize=normalize)

    return load


RERANKERS: dict[str, RerankerLoader] = {
    "cross-encoder": in_process(load_cross_encoder),
    "llm": in_process(load_llm_reranker),
    "remote": load_remote_reranker,
}

# Inference backends (config: reranker.backend). Every kind runs on "torch" (remote: on its server), through
# RERANKERS; the others are listed per kind here, each with its loader. Only the cross-encoder has any.
BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
BACKEND_LOADERS: dict[str, dict[str, RerankerLoader]] = {
    "cross-encoder": {
        "onnx": in_process(functools.partial(load_cross_encoder, backend="onnx")),
        "onnx-int8": in_process(functools.partial(load_cross_encoder, backend="onnx-int8")),
    },
}


def load_reranker(
    kind: str, *, model: str, device: str, dtype: str, batch_size: int, max_length: int, normalize: str,
    endpoint: RemoteEndpoint | None = None, backend: str = "torch",
) -> Reranker:
    """Build the reranker of ``kind``; ``ModelLoadError`` names the model spec if it cannot load.

    ``device`` is "auto", "cpu", "cuda[:N]" or "mps"; ``dtype`` is "auto",
    "float32", "float16" or "bfloat16" (half precision only on a GPU). Both are
    ignored by ``remote``, which needs ``endpoint`` (``ValueError`` without it).
    ``backend`` is one of ``BACKENDS``; other than "torch" only for a
    cross-encoder, on CPU (``ValueError`` for another kind).
    """
    if kind not in RERANKERS:
        raise ValueError(f"unknown reranker kind {kind!r}; valid: {', '.join(RERANKERS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown reranker backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        loader = RERANKERS[kind]
    elif backend in BACKEND_LOADERS.get(kind, {}):
        loader = BACKEND_LOADERS[kind][backend]
    else:
        offered = [k for k, loaders in BACKEND_LOADERS.items() if backend in loaders]
        raise ValueError(f"reranker backend {backend!r} applies to kind {' | '.join(offered)} only, not to "
                         f"{kind!r}; use backend = 'torch'")
    check_normalize(normalize)
    return loader(model=model, device=device, dtype=dtype, batch_size=batch_size, max_length=max_length,
                  normalize=normalize, endpoint=endpoint)


__all__ = [
    "BACKENDS",
    "BACKEND_LOADERS",
    "NORMALIZERS",
    "RERANKERS",
    "CrossEncoderReranker",
    "LlmYesReranker",
    "ModelLoadError",
    "RemoteEndpoint",
    "RemoteReranker",
    "RerankError",
    "Reranker",
    "RerankerLoader",
    "load_reranker",
    "normalize_scores",
    "rank_candidates",
]
