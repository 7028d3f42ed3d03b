"""A stand-in OpenAI-compatible server on 127.0.0.1: the process boundary the tests may mock.

It speaks the chat-completions wire format (streamed server-sent events and plain
JSON); replies come from a script, and every request is recorded.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.stand_in import QuietHandler, StandIn


def sse_body(
    pieces: list[str], extra: list[dict[str, Any]], model: str, finish: str = "stop"
) -> bytes:
    """A streamed reply: a role chunk, one chunk per piece, a finish chunk (``finish``: "stop", or
    "length" for an answer the token limit cut), a usage-style empty one, [DONE]."""
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    events += extra
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}, {"choices": []}]
    header = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model}
    lines = [f"data: {json.dumps({**header, **event})}\n\n" for event in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def json_body(pieces: list[str], model: str) -> bytes:
    message = {"role": "assistant", "content": "".join(pieces)}
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    ).encode()


def reranker_env(model: str) -> dict[str, str]:
    """RAG_* overrides for a cross-encoder reranker at ``model`` (a path in tests)."""
    return {
        "RAG_RERANKER__KIND": "cross-encoder",
        "RAG_RERANKER__MODEL": model,
        "RAG_RERANKER__MAX_LENGTH": "256",
    }


def llm_env(url: str) -> dict[str, str]:
    """RAG_* overrides that send generation to a stand-in server at ``url``, without retries."""
    return {
        "RAG_LLM__BASE_URL": url,
        "RAG_LLM__MODEL": "stand-in",
        "RAG_LLM__API_KEY_ENV": "",
        "RAG_LLM__MAX_RETRIES": "0",
        "RAG_LLM__TIMEOUT": "5",
    }


class FakeLLMServer(StandIn):
    """Speaks the chat-completions wire format; replies come from a script, requests are
    recorded.
    """

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[dict[str, Any]] = []
        self.echo = False
        owner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {name.lower(): value for name, value in self.headers.items()}
                owner.requests.append({"path": self.path, "headers": headers, "body": body})
                if owner.script:
                    reply = owner.script.pop(0)
                # answer with the question itself: concurrent sessions can check theirs
                elif owner.echo:
                    question = body["messages"][-1]["content"].rsplit("Question: ", 1)[-1]
                    reply = {"pieces": ["Answer to: ", question, " [1]"]}
                else:
                    reply = {"pieces": ["ok"]}
                time.sleep(reply.get("delay", 0))
                if "status" in reply:
                    self._send(
                        reply["status"], "application/json", json.dumps(reply["error"]).encode()
                    )
                elif body.get("stream"):
                    stream = sse_body(
                        reply["pieces"],
                        reply.get("extra", []),
                        body["model"],
                        reply.get("finish", "stop"),
                    )
                    # the connection drops mid-answer: half the events, then close
                    if reply.get("cut"):
                        self._send(200, "text/event-stream", stream, cut_at=len(stream) // 2)
                        self.close_connection = True
                    else:
                        self._send(200, "text/event-stream", stream)
                else:
                    self._send(200, "application/json", json_body(reply["pieces"], body["model"]))

            def _send(self, status: int, kind: str, data: bytes, cut_at: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                # the client's retries need not wait in tests
                self.send_header("retry-after-ms", "1")
                self.end_headers()
                self.write_body(data if cut_at is None else data[:cut_at])

        self._listen(Handler, port)
        self.url = f"http://127.0.0.1:{self.port}/v1"
