"""Helpers every part shares: what a message may show, and the checks of numeric arguments.

* :func:`shown_url`: a URL without ``user:password@``, query string or fragment (where a key
  written into a URL would otherwise show).
* :func:`scrub_secret`: a key taken out of a server's message, also when echoed cut short or
  masked.
* :func:`clip` and :func:`one_line`: long text cut to a limit with "…".
* :func:`check_int` and :func:`check_number`: a value from config or a caller is the right
  type and in range, or ``ValueError`` names it, its value and the rule.

Nothing here imports anything of the project: every layer may use it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# Of a server's or library's error message, in our messages.
MESSAGE_CHARS = 300
# A key a server echoes masked: sk-pr****************wxyz
_MASKED = re.compile(r"[\w-]*\*{4,}[\w-]*")
_WORD = re.compile(r"[^\s'\"`]+")


def shown_url(url: str) -> str:
    """``url`` fit for messages, the trace and the page: no ``user:password@`` and no query
    string or fragment."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment=""))


def scrub_secret(text: str, secret: str) -> str:
    """``text`` with ``secret`` replaced by ``***``: the whole key, any word that holds 8 or more
    characters of it in a row (a server may echo it cut short), and masked echoes of a key."""
    if secret == "":
        return text
    text = text.replace(secret, "***")
    pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
    text = _WORD.sub(lambda m: "***" if any(p in m[0] for p in pieces) else m[0], text)
    return _MASKED.sub("***", text)


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` cut to at most ``limit`` characters, the last one "…" when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: object, limit: int = MESSAGE_CHARS) -> str:
    """``text`` (an exception: its message, else its type's name) on one line, clipped."""
    flat = " ".join(str(text).split())
    if flat == "" and isinstance(text, BaseException):
        flat = type(text).__name__
    return clip(flat, limit)


def check_int(name: str, value: object, minimum: int, note: str = "") -> int:
    """``value`` if it is a whole number >= ``minimum`` (not a bool), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} = {value!r}: must be a whole number >= {minimum}{note}")
    return value


def check_number(name: str, value: object, minimum: float, *, strict: bool = False) -> float:
    """``value`` if it is a number >= ``minimum`` (> with ``strict``; not a bool, not NaN),
    else ``ValueError``."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and (value > minimum if strict else value >= minimum)
    )
    if not ok:
        rule = ">" if strict else ">="
        raise ValueError(f"{name} = {value!r}: must be a number {rule} {minimum:g}")
    return float(value)  # type: ignore[arg-type]
