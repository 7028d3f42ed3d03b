"""A stand-in embedding server on 127.0.0.1, for the faults a real one cannot be made to produce
(429 storms, 5xx, a vector of another length, malformed answers).

It speaks two wire formats, by path:

* ``POST /embed``: text-embeddings-inference (TEI). ``{"inputs", "normalize", "truncate"}``
  -> ``[[float, ...], ...]``; more than ``max_batch`` inputs gives 413 as TEI does.
* ``POST /v1/embeddings`` and ``/embeddings``: the OpenAI API (vLLM, Ollama, OpenAI,
  Infinity). ``{"model", "input", "encoding_format"}`` -> ``{"data": [{"index",
  "embedding"}]}``, returned in reverse order (the index is what counts).

Vectors are :func:`bag_vector`: words hashed into ``DIMENSION`` buckets, not normalised (the
client must). With ``api_key`` set, requests need ``Authorization: Bearer <api_key>``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from tests.stand_in import ScriptedJsonServer

TEI_PATH = "/embed"
OPENAI_PATHS = ("/v1/embeddings", "/embeddings")
DIMENSION = 16


def bag_vector(text: str) -> list[float]:
    """A deterministic vector: word counts hashed into DIMENSION buckets, plus one."""
    vector = [1.0] * DIMENSION
    for word in re.findall(r"\w+", text.lower()):
        vector[hashlib.sha256(word.encode()).digest()[0] % DIMENSION] += 2.0
    return vector


class FakeEmbedServer(ScriptedJsonServer):
    def __init__(self, *, max_batch: int = 32, api_key: str | None = None) -> None:
        super().__init__(api_key=api_key)
        self.max_batch = max_batch
        self.tei_url = self.base + TEI_PATH
        self.openai_url = self.base + OPENAI_PATHS[0]

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if not self.authorised(headers):
            return 401, {"error": {"message": "Incorrect API key provided", "type": "auth"}}
        if path == TEI_PATH:
            texts = body.get("inputs") if isinstance(body, dict) else None
            if not isinstance(texts, list):
                return 422, {"error": "missing field `inputs`", "error_type": "Validation"}
            if len(texts) > self.max_batch:
                return 413, {
                    "error": f"batch size {len(texts)} > maximum allowed batch size "
                    f"{self.max_batch}",
                    "error_type": "Validation",
                }
            return 200, [bag_vector(t) for t in texts]
        if path in OPENAI_PATHS:
            texts = body.get("input") if isinstance(body, dict) else None
            if not isinstance(texts, list) or not body.get("model"):
                return 400, {"error": {"message": "model and input are required"}}
            if len(texts) > self.max_batch:
                return 413, {"error": {"message": f"too many inputs: {len(texts)}"}}
            data = [
                {"object": "embedding", "index": i, "embedding": bag_vector(t)}
                for i, t in enumerate(texts)
            ]
            return 200, {"object": "list", "data": data[::-1], "model": body["model"]}
        return 404, {"detail": "Not Found"}
