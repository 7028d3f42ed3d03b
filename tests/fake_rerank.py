"""A stand-in rerank server on 127.0.0.1: the process boundary the tests may mock.

It speaks two wire formats, by path:

* ``POST /rerank``: text-embeddings-inference (TEI). ``{"query", "texts",
  "raw_scores", "truncate"}`` -> ``[{"index", "score"}]`` best first; more than
  ``max_batch`` texts gives 413 ``{"error", "error_type": "Validation"}`` as TEI
  does above its ``--max-client-batch-size``; a body without ``texts`` gives 422.
* ``POST /v1/rerank`` and ``/v2/rerank``: the Cohere-style API of Infinity, vLLM
  and Cohere. ``{"model", "query", "documents", "top_n"}`` ->
  ``{"results": [{"index", "relevance_score"}]}`` best first, the score a
  probability; errors are ``{"message"}``.

Scores are :func:`relevance_logit`: the number of query words in the text, less
a little for length, so tests can compute the expected order. With ``api_key``
set, requests need ``Authorization: Bearer <api_key>`` (401 otherwise). Replies
can be scripted (status, headers, body, delay), and every request is recorded.
"""

from __future__ import annotations

import math
import re
from typing import Any

from tests.stand_in import ScriptedJsonServer

TEI_PATH = "/rerank"
COHERE_PATHS = ("/v1/rerank", "/v2/rerank")


def relevance_logit(query: str, text: str) -> float:
    """The stand-in model: shared lowercase words, minus 0.001 per character of the text."""
    words = set(re.findall(r"\w+", query.lower()))
    shared = sum(1 for w in set(re.findall(r"\w+", text.lower())) if w in words)
    return shared - 0.001 * len(text)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def reranker_env(url: str, api: str = "tei", model: str = "stand-in-reranker") -> dict[str, str]:
    """RAG_* overrides for a remote reranker at ``url``, without retries, in the server's order
    alone (retrieval_weight 0: the offline profile's 0.5 was chosen for its own shipped model)."""
    return {
        "RAG_RERANKER__KIND": "remote",
        "RAG_RERANKER__URL": url,
        "RAG_RERANKER__API": api,
        "RAG_RERANKER__MODEL": model,
        "RAG_RERANKER__MAX_RETRIES": "0",
        "RAG_RERANKER__TIMEOUT": "10",
        "RAG_RERANKER__RETRIEVAL_WEIGHT": "0",
    }


class FakeRerankServer(ScriptedJsonServer):
    """Speaks TEI's and the Cohere-style rerank APIs; replies may be scripted, requests are
    recorded (tests/stand_in.py, ScriptedJsonServer).
    """

    def __init__(self, *, max_batch: int = 32, api_key: str | None = None) -> None:
        super().__init__(api_key=api_key)
        self.max_batch = max_batch
        self.tei_url = self.base + TEI_PATH
        self.cohere_url = self.base + COHERE_PATHS[0]

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        """What a real server of that kind would answer to ``body`` at ``path``."""
        if not self.authorised(headers):
            return 401, {"message": "invalid api token"}
        if path == TEI_PATH:
            return self._tei(body)
        if path in COHERE_PATHS:
            return self._cohere(body)
        return 404, {"message": f"no route for {path}"}

    def _tei(self, body: Any) -> tuple[int, Any]:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("texts"), list)
            or "query" not in body
        ):
            return 422, {
                "error": "Failed to deserialize the JSON body: missing field `texts`",
                "error_type": "Validation",
            }
        texts = body["texts"]
        if len(texts) > self.max_batch:
            return 413, {
                "error": f"batch size {len(texts)} > maximum allowed batch size {self.max_batch}",
                "error_type": "Validation",
            }
        raw = body.get("raw_scores", False)
        scores = [relevance_logit(body["query"], t) for t in texts]
        results = [{"index": i, "score": s if raw else sigmoid(s)} for i, s in enumerate(scores)]
        return 200, sorted(results, key=lambda r: -r["score"])

    def _cohere(self, body: Any) -> tuple[int, Any]:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("documents"), list)
            or not body.get("model")
        ):
            return 400, {"message": "model, query and documents are required"}
        documents = body["documents"]
        if len(documents) > self.max_batch:
            return 413, {"message": f"too many documents: {len(documents)} > {self.max_batch}"}
        results = [
            {"index": i, "relevance_score": sigmoid(relevance_logit(body["query"], d))}
            for i, d in enumerate(documents)
        ]
        results.sort(key=lambda r: -r["relevance_score"])
        top_n = body.get("top_n")
        return 200, {
            "id": "r1",
            "results": results[:top_n] if top_n else results,
            "meta": {"billed_units": {"search_units": 1}},
        }
