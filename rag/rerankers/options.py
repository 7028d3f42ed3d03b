"""What a reranker is built from: the options every kind takes, and how to reach a rerank server.

One frozen value per loaded reranker, checked when it is made, so a bad value from a
config file or a caller fails before any model loads. Every loader in the registry
(:data:`rag.rerankers.LOADERS`) takes a :class:`RerankerOptions` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rag.choices import APIS
from rag.jsonclient import Endpoint
from rag.rerankers.base import check_options


@dataclass(frozen=True)
class RemoteEndpoint(Endpoint):
    """How to reach a rerank server: ``reranker.url``, ``api``, ``api_key_env``, ``timeout``,
    ``max_retries``.
    """

    SECTION: ClassVar[str] = "reranker"
    APIS: ClassVar[tuple[str, ...]] = APIS
    EXAMPLE: ClassVar[str] = "http://reranker:80/rerank"

    api: str = "tei"


@dataclass(frozen=True)
class RerankerOptions:
    """The model spec and the options of one reranker.

    ``device`` is "auto", "cpu", "cuda[:N]" or "mps"; ``dtype`` "auto", "float32",
    "float16" or "bfloat16" (half precision on a GPU only); ``batch_tokens`` caps the
    padded tokens of a forward pass (0: automatic by device); ``endpoint`` is where a
    ``remote`` reranker sends its requests (the local kinds ignore it); ``long_passages`` is
    what a local reranker reads of a passage too long for ``max_length`` ("head" or
    "best-window", :mod:`rag.rerankers.window`); ``romanize_hangul`` spells Hangul in Latin
    letters before a local reranker tokenises (:mod:`rag.romanize`); "auto" for either: as
    recorded beside the model (:mod:`rag.rerankers.reading`).
    """

    model: str
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    batch_tokens: int = 0
    max_length: int = 512
    normalize: str = "sigmoid"
    long_passages: str = "auto"
    romanize_hangul: bool | str = "auto"
    endpoint: RemoteEndpoint | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"reranker model must be a non-empty string, got {self.model!r}")
        # "auto" readings are resolved from the model's reading.json when it loads
        # (rag.rerankers.reading).
        check_options(
            batch_size=self.batch_size,
            max_length=self.max_length,
            normalize=self.normalize,
            batch_tokens=self.batch_tokens,
            long_passages="head" if self.long_passages == "auto" else self.long_passages,
            romanize_hangul=False if self.romanize_hangul == "auto" else self.romanize_hangul,
        )
