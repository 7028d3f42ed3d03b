"""JSON over HTTP to a model server, with the care every remote component needs.

One :class:`JsonClient` per configured endpoint (the remote reranker's ``/rerank``, the
remote embedder's ``/embed`` or ``/v1/embeddings``). It POSTs a JSON body and returns the
decoded answer, and it owns what both clients must get right:

* 429, 5xx and connection failures are retried (``max_retries``) with capped exponential
  backoff and jitter, or after the server's ``Retry-After`` (seconds or an HTTP date,
  capped); a read timeout is not retried (the same request would time out again);
* every failure raises the component's own error class with a message that names the URL
  (credentials and query string removed), the HTTP status, the server's own message and the
  setting to change (``hint``);
* the API key is sent as a bearer token and never logged or put in a message: it is
  scrubbed from the server's messages too.

``httpx.Client`` is thread-safe, so one client serves concurrent requests (the embedder
sends batches in parallel).
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from rag.common import check_int, check_number, one_line, scrub_secret, shown_url
from rag.models import ModelLoadError

logger = logging.getLogger(__name__)

RETRY_AFTER_MAX = 30.0  # seconds: the longest a server's Retry-After is honoured


class _Transient(Exception):
    """A failure worth another try (429, 5xx, no connection); ``retry_after`` is the server's
    wish, in seconds.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Names:
    """How messages name the setting and the server: ``section`` is the config section
    (``reranker``), ``server`` what runs at the URL (``reranker server``)."""

    section: str
    server: str


@dataclass(frozen=True)
class Endpoint:
    """How to reach a model server: its URL, wire format, key variable, patience. A component's
    subclass names its config section, its valid ``api`` values and an example URL; values are
    checked when made, so a bad one fails before anything loads."""

    SECTION: ClassVar[str] = "endpoint"
    APIS: ClassVar[tuple[str, ...]] = ()
    EXAMPLE: ClassVar[str] = "http://server:80/"

    url: str
    api: str = ""
    api_key_env: str = ""
    timeout: float = 30.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{self.SECTION}.url = {self.url!r}: expected an http(s) URL such as {self.EXAMPLE}"
            )
        if self.api not in self.APIS:
            raise ValueError(f"{self.SECTION}.api = {self.api!r}: valid: {', '.join(self.APIS)}")
        check_number(f"{self.SECTION}.timeout (seconds)", self.timeout, 0, strict=True)
        check_int(f"{self.SECTION}.max_retries", self.max_retries, 0)

    @property
    def host(self) -> str:
        """host[:port] without any user:password@ part: what the trace and the UI show as the
        device."""
        return urlsplit(self.url).netloc.rpartition("@")[2]

    @property
    def shown_url(self) -> str:
        """The URL for messages (rag.common.shown_url: no credentials, no query string)."""
        return shown_url(self.url)

    def api_key(self, environ: Mapping[str, str] | None = None) -> str:
        """The bearer key from the variable ``api_key_env`` names ("" when none is named); a named
        variable that is unset or empty is an error, raised when the client is built."""
        if self.api_key_env == "":
            return ""
        environ = os.environ if environ is None else environ
        key = environ.get(self.api_key_env, "").strip()
        if key == "":
            raise ModelLoadError(
                f"{self.SECTION}.api_key_env = {self.api_key_env!r}, but the environment variable "
                f"{self.api_key_env} is not set or empty"
            )
        return key


class JsonClient:
    """POSTs JSON to ``url`` with retries; raises ``error`` with a message naming the URL."""

    def __init__(
        self,
        url: str,
        *,
        names: Names,
        error: type[Exception],
        timeout: float,
        max_retries: int,
        api_key: str = "",
        hint: Callable[[int], str] | None = None,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        retry_after_max: float = RETRY_AFTER_MAX,
        connections: int = 10,
    ) -> None:
        self.url = url
        self.shown_url = shown_url(url)
        self.names = names
        self.error = error
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_after_max = retry_after_max
        self._hint = hint or (lambda status: "")
        self._backoff = wait_exponential_jitter(initial=backoff, max=backoff_max, jitter=backoff)
        self._secret = api_key
        headers = {"Accept": "application/json"}
        if api_key != "":
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            timeout=timeout,
            headers=headers,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    @classmethod
    def for_endpoint(
        cls,
        endpoint: Endpoint,
        *,
        server: str,
        error: type[Exception],
        api_key: str,
        hint: Callable[[int], str],
        connections: int = 10,
        **backoff: float,
    ) -> JsonClient:
        """A client for ``endpoint``, its messages naming ``endpoint.SECTION`` and ``server``."""
        return cls(
            endpoint.url,
            names=Names(endpoint.SECTION, server),
            error=error,
            timeout=endpoint.timeout,
            max_retries=endpoint.max_retries,
            api_key=api_key,
            hint=hint,
            connections=connections,
            **backoff,
        )

    def close(self) -> None:
        self._client.close()

    def scrub(self, text: str) -> str:
        """``text`` with the API key (and echoes of it) removed."""
        return scrub_secret(text, self._secret)

    def post(self, payload: dict[str, Any]) -> Any:
        """POST with retries; the decoded JSON body of a 2xx answer."""
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._log_retry,
        )
        try:
            return retrying(self._post_once, payload)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            attempts = exc.last_attempt.attempt_number
            raise self.error(
                f"{last} (gave up after {attempts} attempt{'s' if attempts != 1 else ''}; "
                f"{self.names.section}.max_retries = {self.max_retries})"
            ) from None

    def malformed(self, what: str) -> Exception:
        """The error for a 2xx answer whose content is not what the API promises."""
        return self.error(f"malformed response from {self.shown_url}{what}")

    def _post_once(self, payload: dict[str, Any]) -> Any:
        url, section = self.shown_url, self.names.section
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.ConnectTimeout:
            raise _Transient(
                f"cannot connect to {url} within {section}.timeout = {self.timeout:g}s"
            ) from None
        except httpx.TimeoutException:
            raise self.error(
                f"{url} did not answer within {section}.timeout = {self.timeout:g}s; raise "
                f"{section}.timeout or lower {section}.batch_size"
            ) from None
        except httpx.ConnectError as exc:
            raise _Transient(
                f"cannot connect to {url} ({self.scrub(str(exc))}); check that the "
                f"{self.names.server} is running there ({section}.url)"
            ) from None
        except httpx.TransportError as exc:  # the connection dropped mid-way, a protocol error...
            raise _Transient(
                f"request to {url} failed: {self.scrub(str(exc)) or type(exc).__name__}"
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                raise self.malformed(
                    f": not JSON: {self.scrub(one_line(response.text))!r}"
                ) from None
        message = f"{url} answered HTTP {status}: {self.scrub(server_message(response))}"
        if status == 429 or status >= 500:
            raise _Transient(
                message, retry_after=retry_after_seconds(response.headers.get("retry-after"))
            )
        raise self.error(message + self._hint(status))

    def _wait(self, state: RetryCallState) -> float:
        """The server's Retry-After when it sent one (capped), else capped exponential backoff
        with jitter.
        """
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_max)
        return self._backoff(state)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        pause = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "%s; retry %d of %d in %.2fs", exc, state.attempt_number, self.max_retries, pause
        )


def auth_hint(section: str, api_key_env: str) -> str:
    """What to change after a 401/403."""
    if api_key_env == "":
        return (
            "; the server wants an API key: put it in an environment variable and name that "
            f"variable in {section}.api_key_env"
        )
    return f"; the API key in env var {api_key_env} is missing or wrong"


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds from now, or None if absent or
    unreadable.
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def server_message(response: httpx.Response) -> str:
    """The error text of TEI ({"error"}), Cohere ({"message"}), vLLM/Infinity/OpenAI ({"error":
    {"message"}}, {"detail"}).
    """
    try:
        data = response.json()
    except ValueError:
        return one_line(response.text) or "(no message)"
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return one_line(value["message"])
            if value is not None:
                return one_line(value if isinstance(value, str) else repr(value))
    return one_line(repr(data))
