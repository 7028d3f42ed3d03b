"""What a reranker is built from: the options every kind takes, and how to reach a rerank server.

One frozen value per loaded reranker, checked when it is made, so a bad value from a
config file or a caller fails before any model loads. Every loader in the registry
(:data:`rag.rerankers.LOADERS`) takes a :class:`RerankerOptions` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from rag.choices import APIS
from rag.common import check_int, check_number, shown_url
from rag.rerankers.base import check_options


@dataclass(frozen=True)
class RemoteEndpoint:
    """How to reach a rerank server: ``reranker.url``, ``api``, ``api_key_env``, ``timeout``,
    ``max_retries``.
    """

    url: str
    api: str = "tei"
    api_key_env: str = ""
    timeout: float = 30.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"reranker.url = {self.url!r}: expected an http(s) URL such as "
                "http://reranker:80/rerank"
            )
        if self.api not in APIS:
            raise ValueError(f"reranker.api = {self.api!r}: valid: {', '.join(APIS)}")
        check_number("reranker.timeout (seconds)", self.timeout, 0, strict=True)
        check_int("reranker.max_retries", self.max_retries, 0)

    @property
    def host(self) -> str:
        """host[:port] without any user:password@ part: what the trace and the UI show as
        the device.
        """
        return urlsplit(self.url).netloc.rpartition("@")[2]

    @property
    def shown_url(self) -> str:
        """The URL for messages (rag.common.shown_url: no credentials, no query string)."""
        return shown_url(self.url)


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
