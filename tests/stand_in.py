"""What the stand-in HTTP servers share: a threaded server on a free 127.0.0.1 port, served while
open.

Stand-ins speak an endpoint's wire format at the process boundary (an LLM
server, a rerank server); each subclass supplies its request handler.
"""

from __future__ import annotations

import threading
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
