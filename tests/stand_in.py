"""What the stand-in HTTP servers share: a threaded server on a free 127.0.0.1 port, served while
open.

Stand-ins speak an endpoint's wire format at the process boundary (an LLM
server, a rerank server); each subclass supplies its request handler.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and tolerates a client that hung up first."""

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def write_body(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (the timeout tests)


class StandIn:
    """Serves ``handler`` on 127.0.0.1 in a background thread between ``__enter__`` and
    ``__exit__``.
    """

    def _listen(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ScriptedJsonServer(StandIn):
    """A JSON-over-HTTP stand-in whose replies may be scripted; every request is recorded.

    Subclasses answer as a real server of their kind would (:meth:`answer`). A script entry is
    a dict with any of ``status`` (default 200), ``headers``, ``body`` (JSON-encoded) or
    ``raw`` (bytes as they are), and ``delay`` (seconds before answering). Without
    ``status``/``body``/``raw`` the entry only delays the normal answer.
    """

    def __init__(self, *, api_key: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[dict[str, Any]] = []
        self.api_key = api_key
        self._script_lock = threading.Lock()
        owner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with owner._script_lock:
                    owner.requests.append({"path": self.path, "headers": headers, "body": body})
                    reply = owner.script.pop(0) if owner.script else {}
                time.sleep(reply.get("delay", 0))
                if "raw" in reply:
                    self._send(reply.get("status", 200), reply["raw"], reply.get("headers", {}))
                elif "body" in reply or "status" in reply:
                    data = json.dumps(reply.get("body", {"message": "scripted failure"})).encode()
                    self._send(reply.get("status", 200), data, reply.get("headers", {}))
                else:
                    status, answer = owner.answer(self.path, headers, body)
                    self._send(status, json.dumps(answer).encode(), {})

            def _send(self, status: int, data: bytes, extra: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.write_body(data)

        self._listen(Handler)
        self.base = f"http://127.0.0.1:{self.port}"

    def authorised(self, headers: dict[str, str]) -> bool:
        return self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}"

    def answer(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        """(status, JSON body) a real server of this kind would answer to ``body`` at ``path``."""
        raise NotImplementedError
