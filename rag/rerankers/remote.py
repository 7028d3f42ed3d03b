"""Remote reranker: a client for the ``/rerank`` API of a reranking server.

Two wire formats (``reranker.api``), posted to ``reranker.url`` as given:

* ``tei``, Hugging Face text-embeddings-inference (``http://HOST/rerank``)::

      {"query": q, "texts": [...], "raw_scores": true, "truncate": true}
      -> [{"index": i, "score": s}, ...]

* ``cohere``, spoken by Infinity (``/rerank``), vLLM (``/v1/rerank``) and Cohere
  (``https://api.cohere.com/v2/rerank``)::

      {"model": m, "query": q, "documents": [...], "top_n": n, "return_documents": false}
      -> {"results": [{"index": i, "relevance_score": s}, ...]}

Scores. TEI's ``raw_scores: true`` gives the model's logits, used as the raw
score as a local cross-encoder would. A Cohere-style ``relevance_score`` is a
probability in [0, 1]; it becomes ``logit(p)`` (p clamped to
[1e-12, 1 - 1e-12]) so that ``normalize = "sigmoid"`` shows the server's score
unchanged and the ranking is the server's. If any score of a query falls
outside [0, 1] (a server that sends logits), the scores are kept as raw.

The server truncates long inputs itself (TEI: ``truncate: true``; the others
do it by default or refuse), and does not say whether it did, so truncation
flags are always False and ``max_length`` does not apply.

Requests carry at most ``batch_size`` texts (TEI refuses more than its
``--max-client-batch-size``, 32 by default, with HTTP 413), grouped by length
as for local models; results are put back in the caller's order by index.
429, 5xx and connection failures are retried (``max_retries``) with capped
exponential backoff and jitter, or after the server's ``Retry-After`` (capped);
a read timeout is not retried (the same batch would time out again). Failures
raise :class:`RerankError` naming the URL, the HTTP status and the server's
message. The API key is read from the environment variable named by
``api_key_env`` when the reranker is loaded, sent as a bearer token, and never
logged or put in a message (it is scrubbed from the server's messages too).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from rag.common import one_line
from rag.jsonclient import JsonClient, auth_hint
from rag.rerankers.base import MIN_MAX_LENGTH, Reranker, RerankError, length_sorted_batches
from rag.rerankers.options import RemoteEndpoint, RerankerOptions

logger = logging.getLogger(__name__)

KIND = "remote"
PROBABILITY_CLAMP = 1e-12


class RemoteReranker(Reranker):
    """Scores (query, passage) pairs on a rerank server; building it sends nothing."""

    kind = KIND

    def __init__(
        self,
        endpoint: RemoteEndpoint,
        *,
        model: str,
        batch_size: int,
        normalize: str,
        api_key: str = "",
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        retry_after_max: float = 30.0,
    ) -> None:
        # max_length is the server's business (it truncates and does not say so): the
        # smallest valid value here.
        super().__init__(
            name=model,
            device=endpoint.host,
            dtype="server",
            backend="http",
            batch_size=batch_size,
            max_length=MIN_MAX_LENGTH,
            normalize=normalize,
        )
        self.endpoint = endpoint
        self._http = JsonClient.for_endpoint(
            endpoint,
            server="reranker server",
            error=RerankError,
            api_key=api_key,
            hint=self._hint,
            backoff=backoff,
            backoff_max=backoff_max,
            retry_after_max=retry_after_max,
        )

    def __repr__(self) -> str:
        return (
            f"RemoteReranker({self.name!r} @ {self.endpoint.shown_url}, api={self.endpoint.api!r})"
        )

    def close(self) -> None:
        self._http.close()

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        """Raw scores (see the module docstring) and truncation flags (always False), in
        passage order.
        """
        values: list[float] = [0.0] * len(passages)
        for batch in length_sorted_batches([len(p) for p in passages], self.batch_size):
            for i, value in zip(batch, self._score_batch(query, [passages[i] for i in batch])):
                values[i] = value
        raw = values if self.endpoint.api == "tei" else relevance_to_raw(values)
        return raw, [False] * len(passages)

    def _score_batch(self, query: str, texts: list[str]) -> list[float]:
        if self.endpoint.api == "tei":
            payload: dict[str, Any] = {
                "query": query,
                "texts": texts,
                "raw_scores": True,
                "truncate": True,
            }
        else:
            payload = {
                "model": self.name,
                "query": query,
                "documents": texts,
                "top_n": len(texts),
                "return_documents": False,
            }
        logger.debug("POST %s: %d texts", self.endpoint.shown_url, len(texts))
        data = self._http.post(payload)
        try:
            return parse_scores(data, api=self.endpoint.api, count=len(texts))
        except ValueError as exc:
            raise self._http.malformed(
                f" (reranker.api = {self.endpoint.api!r}): {self._http.scrub(str(exc))}"
            ) from None

    def _hint(self, status: int) -> str:
        """What the user can change for a refused request."""
        api = self.endpoint.api
        if status in (401, 403):
            return auth_hint("reranker", self.endpoint.api_key_env)
        if status in (413, 422):
            hint = (
                f"; lower reranker.batch_size (now {self.batch_size}) to the server's limit "
                "(TEI: --max-client-batch-size, 32 by default)"
            )
            return hint + (
                f", or check that reranker.api = {api!r} matches the server"
                if status == 422
                else ""
            )
        if status in (404, 405):
            return (
                "; check reranker.url (TEI: http://HOST/rerank, vLLM: http://HOST/v1/rerank, "
                "Cohere: https://api.cohere.com/v2/rerank)"
            )
        if status == 400:
            return f"; check reranker.api = {api!r} and reranker.model = {self.name!r}"
        return ""


def parse_scores(data: Any, *, api: str, count: int) -> list[float]:
    """Scores in request order from TEI's list or a Cohere-style ``{"results": [...]}``.

    Every index 0..count-1 must appear exactly once with a finite number;
    ``ValueError`` says what is wrong otherwise.
    """
    key = "score" if api == "tei" else "relevance_score"
    items = data if api == "tei" else (data.get("results") if isinstance(data, dict) else None)
    if not isinstance(items, list):
        shape = "a JSON list" if api == "tei" else 'a JSON object with a "results" list'
        raise ValueError(f"expected {shape}, got {one_line(repr(data), 80)}")
    scores: list[float | None] = [None] * count
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"result {one_line(repr(item), 80)} has no index in 0..{count - 1}")
        if scores[index] is not None:
            raise ValueError(f"index {index} appears twice")
        score = item.get(key)
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            raise ValueError(f"index {index}: {key} = {score!r} is not a finite number")
        scores[index] = float(score)
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        raise ValueError(f"{len(missing)} of {count} texts got no score (indices {missing[:10]})")
    return [s for s in scores if s is not None]


def relevance_to_raw(scores: Sequence[float]) -> list[float]:
    """Cohere-style relevance scores as raw scores: logit(p) when all are in [0, 1], else unchanged.

    ``sigmoid(logit(p)) == p``, so the sigmoid normalisation shows the server's
    own score, and the logit is monotonic, so the ranking is the server's.
    """
    values = [float(s) for s in scores]
    if any(not 0.0 <= s <= 1.0 for s in values):
        return values
    return [_logit(min(max(p, PROBABILITY_CLAMP), 1.0 - PROBABILITY_CLAMP)) for p in values]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def load_remote_reranker(options: RerankerOptions) -> RemoteReranker:
    """A client for ``options.endpoint``; reads the API key from the environment, sends nothing yet.

    ``device``, ``dtype`` and ``max_length`` are the server's business.
    """
    endpoint = options.endpoint
    if endpoint is None:
        raise ValueError(
            "reranker kind 'remote' needs reranker.url (e.g. http://reranker:80/rerank)"
        )
    api_key = endpoint.api_key()
    reranker = RemoteReranker(
        endpoint,
        model=options.model,
        batch_size=options.batch_size,
        normalize=options.normalize,
        api_key=api_key,
    )
    logger.info(
        "remote reranker %s at %s (api %s, %d texts a request)",
        options.model,
        endpoint.shown_url,
        endpoint.api,
        options.batch_size,
    )
    return reranker
