"""Remote embedder: vectors from an embedding server (``embedder.kind = "remote"``).

Two wire formats (``embedder.api``), posted to ``embedder.url`` as given:

* ``tei``, Hugging Face text-embeddings-inference (``http://HOST/embed``)::

      {"inputs": [...], "normalize": true, "truncate": true} -> [[float, ...], ...]

* ``openai``, the OpenAI embeddings API, spoken by Infinity (``/embeddings``), vLLM,
  Ollama and OpenAI (``/v1/embeddings``)::

      {"model": m, "input": [...], "encoding_format": "float"}
      -> {"data": [{"index": i, "embedding": [...]}, ...]}

Vectors are L2-normalised here whatever the server did, so a cosine is a dot product as
with a local model. Chunk sizes are still counted here, in the tokens of the served
model's tokenizer (``embedder.tokenizer``), so the server never cuts a chunk.

Requests carry at most ``batch_size`` texts (TEI refuses more than its
``--max-client-batch-size`` with HTTP 413) and up to ``concurrency`` of them are in flight
at once; results come back in the caller's order. Retries, timeouts, the API key and the
messages are :class:`rag.jsonclient.JsonClient`'s. The vector length is asked of the
server once, with the first request (or a one-word probe when the store opens first).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rag.choices import EMBED_APIS
from rag.common import check_int, one_line
from rag.embedder import AUTO, Embedder, EmbedError, auto_prefixes
from rag.jsonclient import Endpoint, JsonClient, auth_hint
from rag.models import ModelLoadError, load_error, resolve_model

logger = logging.getLogger(__name__)

KIND = "remote"
PROBE = "dimension"  # the text embedded to learn the vector length
TOKEN_LIMIT_UNKNOWN = 100_000  # a tokenizer's model_max_length above this means "not set"


@dataclass(frozen=True)
class EmbedEndpoint(Endpoint):
    """How to reach an embedding server: ``embedder.url``, ``api``, ``api_key_env``,
    ``timeout``, ``max_retries`` and ``concurrency``."""

    SECTION: ClassVar[str] = "embedder"
    APIS: ClassVar[tuple[str, ...]] = EMBED_APIS
    EXAMPLE: ClassVar[str] = "http://embedder:80/embed"

    api: str = "openai"
    timeout: float = 60.0
    concurrency: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("embedder.concurrency", self.concurrency, 1)


class RemoteEmbedder(Embedder):
    """Embeds on a server; building it sends nothing."""

    kind = KIND

    def __init__(
        self,
        endpoint: EmbedEndpoint,
        *,
        model: str,
        tokenizer: Any,
        max_tokens: int,
        query_prefix: str,
        passage_prefix: str,
        batch_size: int,
        api_key: str = "",
        backoff: float = 0.5,
        retry_after_max: float = 30.0,
    ) -> None:
        super().__init__(
            name=model,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            batch_size=batch_size,
        )
        self.endpoint = endpoint
        self._tokenizer = tokenizer
        self._max_tokens = check_int("embedder.max_tokens", max_tokens, 1)
        self._dimension: int | None = None
        self._dimension_lock = threading.Lock()
        self._http = JsonClient.for_endpoint(
            endpoint,
            server="embedding server",
            error=EmbedError,
            api_key=api_key,
            hint=self._hint,
            connections=endpoint.concurrency,
            backoff=backoff,
            retry_after_max=retry_after_max,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=endpoint.concurrency, thread_name_prefix="embed-request"
        )

    def __repr__(self) -> str:
        return (
            f"RemoteEmbedder({self.name!r} @ {self.endpoint.shown_url}, api={self.endpoint.api!r})"
        )

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._encode([PROBE])
        assert self._dimension is not None
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        return self._max_tokens

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def device(self) -> str:
        return self.endpoint.host

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        if len(batches) == 1:
            parts = [self._embed_batch(batches[0])]
        else:
            parts = list(self._pool.map(self._embed_batch, batches))
        return np.concatenate(parts)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        if self.endpoint.api == "tei":
            payload: dict[str, Any] = {"inputs": texts, "normalize": True, "truncate": True}
        else:
            payload = {"model": self.name, "input": texts, "encoding_format": "float"}
        logger.debug("POST %s: %d texts", self.endpoint.shown_url, len(texts))
        data = self._http.post(payload)
        try:
            vectors = parse_vectors(data, api=self.endpoint.api, count=len(texts))
        except ValueError as exc:
            raise self._http.malformed(
                f" (embedder.api = {self.endpoint.api!r}): {self._http.scrub(str(exc))}"
            ) from None
        self._check_dimension(vectors.shape[1])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise self._http.malformed(
                f" (embedder.api = {self.endpoint.api!r}): a vector of zeros"
            )
        return (vectors / norms).astype(np.float32)

    def _check_dimension(self, dimension: int) -> None:
        with self._dimension_lock:
            if self._dimension is None:
                self._dimension = dimension
                logger.info(
                    "embedding server %s: %s, %d-d", self.endpoint.shown_url, self.name, dimension
                )
            elif dimension != self._dimension:
                raise EmbedError(
                    f"{self.endpoint.shown_url} sent {dimension}-d vectors after "
                    f"{self._dimension}-d ones: is another model serving there now?"
                )

    def _hint(self, status: int) -> str:
        """What the user can change for a refused request."""
        if status in (401, 403):
            return auth_hint("embedder", self.endpoint.api_key_env)
        if status in (413, 422):
            return (
                f"; lower embedder.batch_size (now {self.batch_size}) to the server's limit "
                "(TEI: --max-client-batch-size, 32 by default)"
                + (
                    f", or check that embedder.api = {self.endpoint.api!r} matches the server"
                    if status == 422
                    else ""
                )
            )
        if status in (404, 405):
            return (
                "; check embedder.url (TEI: http://HOST/embed, Infinity: http://HOST/embeddings, "
                "vLLM, Ollama and OpenAI: http://HOST/v1/embeddings)"
            )
        if status == 400:
            return (
                f"; check embedder.api = {self.endpoint.api!r} and embedder.model = {self.name!r} "
                "(the name the server serves it under)"
            )
        return ""


def parse_vectors(data: Any, *, api: str, count: int) -> np.ndarray:
    """``count`` vectors in request order from TEI's list of lists or an OpenAI-style
    ``{"data": [{"index", "embedding"}]}``; ``ValueError`` says what is wrong otherwise."""
    if api == "tei":
        if not isinstance(data, list):
            raise ValueError(f"expected a JSON list of vectors, got {one_line(repr(data), 80)}")
        rows: list[Any] = list(data)
    else:
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValueError(
                f'expected a JSON object with a "data" list, got {one_line(repr(data), 80)}'
            )
        slots: list[Any] = [None] * count
        for item in items:
            index = item.get("index") if isinstance(item, dict) else None
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise ValueError(f"item {one_line(repr(item), 80)} has no index in 0..{count - 1}")
            if slots[index] is not None:
                raise ValueError(f"index {index} appears twice")
            slots[index] = item.get("embedding")
        rows = slots
    if len(rows) != count:
        raise ValueError(f"{len(rows)} vectors for {count} texts")
    lengths = set()
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise ValueError(f"vector {i} is not a list of numbers: {one_line(repr(row), 80)}")
        if not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in row
        ):
            raise ValueError(f"vector {i} holds something other than finite numbers")
        lengths.add(len(row))
    if len(lengths) > 1:
        raise ValueError(f"vectors of different lengths {sorted(lengths)} in one answer")
    return np.asarray(rows, dtype=np.float64)


def load_tokenizer(spec: str) -> tuple[Any, Path | None]:
    """The fast tokenizer at ``spec`` (a folder, a pkg: model or a cached hub id) and its folder,
    when it is one."""
    from transformers import AutoTokenizer

    location = resolve_model(spec).location
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise load_error(f"the tokenizer {spec!r} (embedder.tokenizer)", location, exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"embedder.tokenizer = {spec!r}: chunking needs a fast tokenizer (tokenizer.json), "
            f"got {type(tokenizer).__name__}"
        )
    folder = Path(location)
    return tokenizer, folder if folder.is_dir() else None


def token_limit(tokenizer: Any, folder: Path | None, spec: str) -> int:
    """Tokens the model reads: sentence-transformers' max_seq_length in ``folder``, else the
    tokenizer's own model_max_length."""
    config = folder / "sentence_bert_config.json" if folder is not None else None
    if config is not None and config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value <= TOKEN_LIMIT_UNKNOWN:
        return value
    raise ModelLoadError(
        f"cannot tell how many tokens the served model reads from the tokenizer {spec!r}: "
        "set embedder.max_tokens to the server's limit"
    )


def saved_prompts(folder: Path | None) -> dict[str, str]:
    """The query/document prompts a sentence-transformers folder saved, if any."""
    config = folder / "config_sentence_transformers.json" if folder is not None else None
    if config is None or not config.is_file():
        return {}
    prompts = json.loads(config.read_text(encoding="utf-8")).get("prompts") or {}
    return {k: v for k, v in prompts.items() if isinstance(v, str)}


def load_remote_embedder(
    endpoint: EmbedEndpoint,
    *,
    model: str,
    batch_size: int,
    tokenizer: str = AUTO,
    max_tokens: int = 0,
    query_prefix: str = AUTO,
    passage_prefix: str = AUTO,
    environ: dict[str, str] | None = None,
) -> RemoteEmbedder:
    """A client for ``endpoint`` with the served model's tokenizer loaded here; sends nothing."""
    api_key = endpoint.api_key(environ)
    spec = model if tokenizer == AUTO else tokenizer
    try:
        tok, folder = load_tokenizer(spec)
    except ModelLoadError as exc:
        if tokenizer != AUTO:
            raise
        raise ModelLoadError(
            f"{exc}; a remote embedder needs the served model's tokenizer here to size chunks: "
            "set embedder.tokenizer to a local copy of it (a folder or pkg:NAME)"
        ) from exc
    limit = max_tokens if max_tokens > 0 else token_limit(tok, folder, spec)
    query, passage = auto_prefixes(model, saved_prompts(folder), query_prefix, passage_prefix)
    embedder = RemoteEmbedder(
        endpoint,
        model=model,
        tokenizer=tok,
        max_tokens=limit,
        query_prefix=query,
        passage_prefix=passage,
        batch_size=batch_size,
        api_key=api_key,
    )
    logger.info(
        "remote embedder %s at %s (api %s, %d texts a request, %d at once, %d tokens, query "
        "prefix %r, passage prefix %r)",
        model,
        endpoint.shown_url,
        endpoint.api,
        batch_size,
        endpoint.concurrency,
        limit,
        query,
        passage,
    )
    return embedder
