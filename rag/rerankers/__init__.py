"""The reranking stage: one base class, one module per kind, an explicit registry.

``load_reranker(kind, options, backend=...)`` does the heavy loading once; the
returned :class:`Reranker`'s ``rerank(query, candidates)`` gives every candidate
back, best first. The kind is always named in config (``reranker.kind``); it is
never guessed from the model name. ``cross-encoder`` and ``llm`` run a model in
this process; ``lexical`` scores words in Python, with weights fitted on data (for a
language no shipped model reads: :mod:`rag.rerankers.lexical`); ``ensemble`` adds the
logits of other kinds (:mod:`rag.rerankers.ensemble`); ``remote`` asks a
rerank server at ``options.endpoint`` (TEI, Infinity, vLLM, Cohere). The backend is
what runs the model: torch for the local kinds, and for the cross-encoder also ONNX
Runtime on CPU (``onnx``, fp32, or ``onnx-int8``, int8 weights), exported once per model
and cached on disk; a remote reranker's is its server (``http``); a lexical one's, Python.

Every loader in :data:`LOADERS` has one signature: ``(RerankerOptions) -> Reranker``.
"""

from __future__ import annotations

from collections.abc import Callable

from rag.choices import BACKENDS, BACKENDS_BY_KIND, KINDS, NORMALIZERS
from rag.models import ModelLoadError
from rag.rerankers.base import Reranker, RerankError, normalize_scores, rank_candidates
from rag.rerankers.cache import ScoreCache
from rag.rerankers.cross_encoder import CrossEncoderReranker, load_cross_encoder
from rag.rerankers.ensemble import EnsembleReranker, load_ensemble_reranker
from rag.rerankers.lexical import LexicalReranker, load_lexical_reranker
from rag.rerankers.llm_yes import LlmYesReranker, load_llm_reranker
from rag.rerankers.options import RemoteEndpoint, RerankerOptions
from rag.rerankers.reading import resolve_reading
from rag.rerankers.remote import RemoteReranker, load_remote_reranker

Loader = Callable[[RerankerOptions], Reranker]


def _onnx(backend: str) -> Loader:
    def load(options: RerankerOptions) -> Reranker:
        from rag.rerankers.cross_encoder import build
        from rag.rerankers.onnx_backend import load_onnx_engine

        tokenizer, engine = load_onnx_engine(options, backend)
        return build(tokenizer, engine, options)

    return load


def _ensemble(options: RerankerOptions) -> Reranker:
    # its members load through this registry
    return load_ensemble_reranker(options, lambda kind, given: load_reranker(kind, given))


# (kind, backend) -> loader. The first backend listed for a kind is its default.
LOADERS: dict[tuple[str, str], Loader] = {
    ("cross-encoder", "torch"): load_cross_encoder,
    ("cross-encoder", "onnx"): _onnx("onnx"),
    ("cross-encoder", "onnx-int8"): _onnx("onnx-int8"),
    ("llm", "torch"): load_llm_reranker,
    ("remote", "http"): load_remote_reranker,
    ("lexical", "python"): load_lexical_reranker,
    ("ensemble", "python"): _ensemble,
}
# The names themselves (kinds, backends, which backend runs which kind) are rag.choices'; the
# registry's keys are tested to be exactly those pairs (tests/rag/rerankers/test_registry.py).
DEFAULT_BACKEND: dict[str, str] = {kind: backends[0] for kind, backends in BACKENDS_BY_KIND.items()}


def backends_of(kind: str) -> tuple[str, ...]:
    return BACKENDS_BY_KIND.get(kind, ())


def load_reranker(kind: str, options: RerankerOptions, *, backend: str | None = None) -> Reranker:
    """Build the reranker of ``kind`` on ``backend`` (None: the kind's default).

    ``ValueError`` names an unknown kind or a backend the kind does not run on, with
    the valid ones; ``ModelLoadError`` names the model spec if it cannot load.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown reranker kind {kind!r}; valid: {', '.join(KINDS)}")
    chosen = backend if backend is not None else DEFAULT_BACKEND[kind]
    if (kind, chosen) not in LOADERS:
        offered = [k for k, b in LOADERS if b == chosen]
        where = (
            f"applies to kind {' | '.join(offered)} only, not to {kind!r}"
            if offered
            else "is unknown"
        )
        raise ValueError(
            f"reranker backend {chosen!r} {where}; valid for {kind!r}: "
            f"{', '.join(backends_of(kind))}"
        )
    return LOADERS[(kind, chosen)](resolve_reading(options))


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "KINDS",
    "LOADERS",
    "NORMALIZERS",
    "CrossEncoderReranker",
    "EnsembleReranker",
    "LexicalReranker",
    "LlmYesReranker",
    "Loader",
    "ModelLoadError",
    "RemoteEndpoint",
    "RemoteReranker",
    "RerankError",
    "Reranker",
    "RerankerOptions",
    "ScoreCache",
    "backends_of",
    "load_reranker",
    "normalize_scores",
    "rank_candidates",
]
