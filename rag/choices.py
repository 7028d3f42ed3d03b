"""Every list of valid names, defined once.

The config's field types are these ``Literal`` types, so a bad name is refused when the
config loads (with the nearest valid one suggested, rag/config.py); the components check
their arguments against the tuples derived from them (``get_args``), and the registries
(``rag.rerankers.LOADERS``, ``rag.reorder.STRATEGIES``) are tested to hold exactly these
names. Nothing here imports anything of the project: every layer may use it.
"""

from __future__ import annotations

from typing import Literal, get_args

StoreMode = Literal["embedded", "server"]
RetrievalMode = Literal["dense", "bm25", "hybrid"]
KoreanTokens = Literal["morphemes", "words"]
Stemming = Literal["english", "none"]
FollowUps = Literal["auto", "llm", "concat", "off"]

EmbedderKind = Literal["local", "remote"]
EmbedApi = Literal["tei", "openai"]

RerankerKind = Literal["cross-encoder", "llm", "remote", "lexical", "ensemble"]
Normalizer = Literal["sigmoid", "softmax", "none"]
LongPassages = Literal["head", "best-window"]
LocalBackend = Literal["torch", "onnx", "onnx-int8"]
RemoteApi = Literal["tei", "cohere"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]

ReorderStrategy = Literal["none", "descending", "lost_in_the_middle", "best_last"]
EvidenceScorer = Literal["bigrams", "embedder", "reranker", "off"]

MODES: tuple[str, ...] = get_args(RetrievalMode)
KINDS: tuple[str, ...] = get_args(RerankerKind)
NORMALIZERS: tuple[str, ...] = get_args(Normalizer)
LONG_PASSAGES: tuple[str, ...] = get_args(LongPassages)
APIS: tuple[str, ...] = get_args(RemoteApi)
EMBED_APIS: tuple[str, ...] = get_args(EmbedApi)
STRATEGIES: tuple[str, ...] = get_args(ReorderStrategy)

# What runs each kind of reranker; the first is its default. Only a cross-encoder has a choice
# (reranker.backend); a remote reranker runs wherever its server does.
BACKENDS_BY_KIND: dict[str, tuple[str, ...]] = {
    "cross-encoder": get_args(LocalBackend),
    "llm": ("torch",),
    "remote": ("http",),
    "lexical": ("python",),
    "ensemble": ("python",),
}
BACKENDS: tuple[str, ...] = tuple(dict.fromkeys(b for bs in BACKENDS_BY_KIND.values() for b in bs))


def backend_choice(kind: str, backend: str) -> str | None:
    """The backend ``kind`` runs on when ``backend`` is configured: ``backend`` where the kind
    has that choice (a cross-encoder), else None (the kind's own default).
    """
    offered = BACKENDS_BY_KIND.get(kind, ())
    return backend if len(offered) > 1 and backend in offered else None


def backend_applies(kind: str, backend: str) -> bool:
    """Whether ``backend`` may be configured beside ``kind``: its default always, a choice only
    where the kind offers it."""
    offered = BACKENDS_BY_KIND.get(kind, ())
    return backend == "torch" or backend in offered
