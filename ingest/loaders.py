"""Files -> ``Document``: PDF (page numbers kept), Markdown, plain text and HTML.

``load`` picks a loader from an explicit suffix registry, after checking that
the content fits the suffix (``ingest.content``: a ``.pdf`` must start like a
PDF, a ``.txt`` must not be a PNG or a PDF), and never returns a document
without text: a file that yields nothing searchable raises ``LoadError`` with a
short reason meant for the user, so ingestion can report it instead of storing
empty chunks. Pages (and text files) with fewer than ``min_chars`` letters or
digits count as holding nothing searchable (a page number, a lone "x").
Problems that still leave useful text (a page that fails to extract, a legacy
encoding, garbled pages, pages too short to keep) become ``Document.warnings``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import BinaryIO

from bs4 import BeautifulSoup, NavigableString
from pypdf import PasswordType, PdfReader
from pypdf.errors import PyPdfError

from ingest.content import content_mismatch, decode
from rag.common import check_int
from rag.config import IngestSettings
from rag.types import Document, Page

logger = logging.getLogger(__name__)

# pypdf logs a warning for every malformed object it recovers from; real-world
# PDFs produce thousands. Keep its errors, unless the user configured it already.
if logging.getLogger("pypdf").level == logging.NOTSET:
    logging.getLogger("pypdf").setLevel(logging.ERROR)

# What pypdf raises on malformed files besides its own errors (it parses untrusted bytes).
_PDF_ERRORS = (
    PyPdfError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
    ZeroDivisionError,
    AssertionError,
    struct.error,
)
_MAX_PAGE_WARNINGS = 10  # individual "page N: ..." warnings before they are summarised
GARBLED_SHARE = 0.15  # share of unlikely characters that marks a page as garbled
_GARBLED_MIN_CHARS = 20  # pages shorter than this are too small to judge
_HEAD_BYTES = 8192  # what the content check reads of each file
MIN_CHARS: int = IngestSettings.model_fields["min_chars"].default  # ingest.min_chars
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


class LoadError(Exception):
    """A file could not be turned into text; ``reason`` is short and meant for the user."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# ---------------------------------------------------------------- normalisation

_SPACES = (
    "\t\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)
_TRANSLATE = {
    **{ord(c): " " for c in _SPACES},
    **{ord(c): "\n" for c in "\f\v\x85\u2028\u2029"},
    **{ord(c): None for c in "\xad\u200b\u2060\ufeff"},  # soft hyphen, zero-width space, BOM
    **{
        0xFB00: "ff",
        0xFB01: "fi",
        0xFB02: "fl",
        0xFB03: "ffi",
        0xFB04: "ffl",
        0xFB05: "st",
        0xFB06: "st",
    },
}
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_HYPHENATED = re.compile(r"([^\W\d_]+)-\n([^\W\d_]+)")
_KEEP_HYPHEN_PREFIXES = frozenset(
    {"self", "non", "well", "ex", "all", "half", "cross", "quasi", "pseudo", "so"}
)


def normalize_whitespace(text: str, *, dehyphenate: bool = False) -> str:
    """Clean extracted text so that chunking and BM25 see words, not layout.

    NFC, Latin ligatures (PDF "ﬁ") expanded, control characters dropped
    (newlines kept), every line break style turned into ``\\n``, runs of
    spaces/tabs collapsed and lines stripped, at most one blank line in a row
    (paragraph breaks survive for the chunker). ``dehyphenate`` (for PDFs)
    re-joins words split across lines, see ``_dehyphenate``.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text.translate(_TRANSLATE))
    text = re.sub(r" *\n *", "\n", re.sub(r" {2,}", " ", text))
    if dehyphenate:
        text = _dehyphenate(text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _dehyphenate(text: str) -> str:
    """Join "exam-\\nple" into "example" when that is the likely reading.

    Only lower-case continuations are joined ("Rabbit-\\nHole" stays). A
    compound that the same text also writes with a hyphen elsewhere, or one
    with a prefix that keeps its hyphen ("self-", "well-"), keeps the hyphen
    and loses only the line break. Otherwise typesetting hyphenation is far
    more common than a compound broken exactly at its hyphen, so we join.
    """

    def fix(match: re.Match[str]) -> str:
        head, tail = match.group(1), match.group(2)
        if not tail[0].islower():
            return match.group(0)
        hyphenated = f"{head}-{tail}"
        if head.lower() in _KEEP_HYPHEN_PREFIXES or (
            hyphenated in text and f"{head}{tail}" not in text
        ):
            return hyphenated
        return head + tail

    return _HYPHENATED.sub(fix, text)


# ---------------------------------------------------------------- garbled text

_TYPOGRAPHIC = frozenset("‘’“”–—…•·©®°€£§¶")
# CJK and full-width punctuation, box drawing, dingbats and emoji: symbols that real text does use
_LIKELY_RANGES = ((0x3000, 0x303F), (0xFF00, 0xFFEF), (0x2500, 0x27BF), (0x1F000, 0x1FAFF))


@lru_cache(maxsize=4096)
def _unlikely(char: str) -> bool:
    """Characters that real text rarely contains but broken font encodings produce."""
    category = unicodedata.category(char)
    if category in ("Co", "Cn", "Cs", "Cc") or char == "\ufffd":
        return True
    code = ord(char)
    if any(lo <= code <= hi for lo, hi in _LIKELY_RANGES):
        return False
    return (category[0] == "P" or category in ("So", "Sk")) and char not in _TYPOGRAPHIC


_CANDIDATE = re.compile(r"[^\s\x21-\x7e]")  # ASCII text is never suspicious: skip it fast
_WHITESPACE = re.compile(r"\s+")


def garbled_share(text: str) -> float:
    """Share of non-space characters that look like mojibake (0.0 for empty text)."""
    visible = len(_WHITESPACE.sub("", text))
    if visible == 0:
        return 0.0
    return sum(1 for c in _CANDIDATE.findall(text) if _unlikely(c)) / visible


def content_chars(text: str, stop: int | None = None) -> int:
    """Letters and digits in ``text`` (any script): what the ``min_chars`` rule counts; at most
    ``stop``.
    """
    if stop is None:
        return len(_LETTER_OR_DIGIT.findall(text))
    return sum(1 for _ in islice(_LETTER_OR_DIGIT.finditer(text), stop))


def _page_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7" (a warning about many pages stays one line)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


# ---------------------------------------------------------------- PDF


def _open_pdf(path: Path, data: bytes) -> PdfReader:
    """Open and, when needed, decrypt with the empty password (many PDFs are 'encrypted' that
    way).
    """
    try:
        reader = PdfReader(io.BytesIO(data))
        needs_password = reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED
        # the page tree is where broken files fail
        n_pages = 0 if needs_password else len(reader.pages)
    except _PDF_ERRORS as exc:
        raise LoadError(path, f"PDF could not be opened (pypdf: {exc})") from exc
    if needs_password:
        raise LoadError(path, "encrypted PDF needs a password")
    if n_pages == 0:
        raise LoadError(path, "PDF has no pages")
    return reader


@dataclass
class _Extraction:
    pages: list[Page] = field(default_factory=list)  # pages with enough text
    # (number, error) of pages that failed
    failures: list[tuple[int, str]] = field(default_factory=list)
    garbled: list[int] = field(default_factory=list)  # numbers of kept pages that look garbled
    # numbers of pages with text, but under min_chars
    short: list[int] = field(default_factory=list)


def _extract_pages(reader: PdfReader, min_chars: int) -> _Extraction:
    found = _Extraction()
    for number, page in enumerate(reader.pages, start=1):
        try:
            raw = page.extract_text()
        except _PDF_ERRORS as exc:
            found.failures.append((number, f"{type(exc).__name__}: {exc}"))
            continue
        text = normalize_whitespace(raw, dehyphenate=True)
        if not text:
            continue
        if content_chars(text, stop=min_chars) < min_chars:
            found.short.append(number)
            continue
        if len(text) >= _GARBLED_MIN_CHARS and garbled_share(raw) >= GARBLED_SHARE:
            found.garbled.append(number)
        found.pages.append(Page(number, text))
    return found


def _too_little(n_pages: int, min_chars: int) -> str:
    what = (
        "its only page with text has"
        if n_pages == 1
        else f"each of its {n_pages} pages with text has"
    )
    return (
        f"too little text: {what} fewer than {min_chars} letters or digits (ingest.min_chars = "
        f"{min_chars})"
    )


def _load_pdf(path: Path, data: bytes, min_chars: int) -> Document:
    """One ``Page`` per PDF page with text, numbered 1-based as in a PDF viewer.

    A page that fails to extract is skipped with a warning, and so is a page
    with fewer than ``min_chars`` letters or digits (a page number, a lone
    "x": nothing to search, only noise among the results). Garbled pages
    (broken font encoding) are kept with a warning, because the detector can
    misjudge a page of symbols and a mostly good document stays useful. When
    every page is garbled, too short or empty, the file holds nothing
    searchable, and indexing it would only look like success: that raises
    ``LoadError`` like a scan does.
    """
    found = _extract_pages(_open_pdf(path, data), min_chars)
    pages, failures, garbled = found.pages, found.failures, found.garbled
    warnings = [
        f"page {n}: text extraction failed: {why}" for n, why in failures[:_MAX_PAGE_WARNINGS]
    ]
    if len(failures) > _MAX_PAGE_WARNINGS:
        warnings.append(
            f"text extraction failed on {len(failures) - _MAX_PAGE_WARNINGS} more pages"
        )
    if not pages:
        if failures:
            raise LoadError(path, f"text extraction failed on every page ({failures[0][1]})")
        if found.short:
            raise LoadError(path, _too_little(len(found.short), min_chars))
        raise LoadError(path, "no extractable text (scanned PDF without a text layer?)")
    if found.short:
        runs = _page_ranges(found.short).split(", ")
        where = (
            f"page {runs[0]}"
            if len(found.short) == 1
            else f"pages {', '.join(runs)}"
            if len(runs) <= _MAX_PAGE_WARNINGS
            else f"{len(found.short)} pages ({', '.join(runs[:5])}, …)"
        )
        warnings.append(
            f"{where}: fewer than {min_chars} letters or digits, not stored (ingest.min_chars)"
        )
    if garbled and len(garbled) == sum(len(p.text) >= _GARBLED_MIN_CHARS for p in pages):
        raise LoadError(
            path,
            f"text is garbled on all {len(garbled)} pages with text "
            "(broken font encoding?); nothing searchable",
        )
    if garbled:
        where = f"page {garbled[0]}" if len(garbled) == 1 else f"pages {_page_ranges(garbled)}"
        warnings.append(f"{where}: text looks garbled (broken font encoding?)")
    return Document(str(path), tuple(pages), tuple(warnings))


# ---------------------------------------------------------------- text


def _decode(path: Path, data: bytes, *, declared: str | None = None) -> tuple[str, list[str]]:
    """Bytes -> (text, warnings) by ``ingest.content.decode``: BOM, UTF-8, a declared charset,
    detection.
    """
    try:
        return decode(data, declared=declared)
    except ValueError as exc:
        raise LoadError(path, str(exc)) from exc


def open_regular(path: Path) -> BinaryIO:
    """A regular file, open for reading. A FIFO, socket or device is refused (LoadError) without a
    read that could block: opened with O_NONBLOCK, then checked by fstat. OSError as the OS raised
    it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    fh = os.fdopen(fd, "rb")
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        fh.close()
        raise LoadError(path, f"not a regular file ({special_kind(kind)})")
    return fh


def read_regular(path: Path) -> bytes:
    with open_regular(path) as fh:
        return fh.read()


def special_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its st_mode."""
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "a special file"


def _read(path: Path) -> bytes:
    try:
        return read_regular(path)
    except OSError as exc:
        raise LoadError(path, f"cannot read file ({exc.strerror or exc})") from exc


def _text_document(path: Path, text: str, warnings: list[str], min_chars: int) -> Document:
    """One page without a number; text with fewer than ``min_chars`` letters or digits is an
    error, not a document.
    """
    text = normalize_whitespace(text)
    if not text:
        raise LoadError(path, "no text (only whitespace or markup)")
    if garbled_share(text) >= 0.3:
        raise LoadError(
            path, f"not a {path.suffix.lower()} file: binary content (it decodes to mostly symbols)"
        )
    n = content_chars(text, stop=min_chars)
    if n < min_chars:
        what = "letter or digit" if n == 1 else "letters or digits"
        raise LoadError(
            path, f"too little text: {n} {what}, fewer than ingest.min_chars = {min_chars}"
        )
    return Document(str(path), (Page(None, text),), tuple(warnings))


def _load_text(path: Path, data: bytes, min_chars: int) -> Document:
    text, warnings = _decode(path, data)
    return _text_document(path, text, warnings, min_chars)


# ---------------------------------------------------------------- Markdown

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_MD_LINE_RULES = (
    (re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$"), r"\1"),  # ATX heading -> plain line
    (re.compile(r"^\s{0,3}(?:=+|-{3,}|\*{3,}|_{3,})\s*$"), ""),  # setext underline, horizontal rule
    (re.compile(r"^\s{0,3}\[[^\]]+\]:\s+\S+.*$"), ""),  # reference link definition
    (re.compile(r"^\s{0,3}(?:>\s?)+"), ""),  # block quote markers
)
_MD_INLINE_RULES = (
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url), ![alt](src) -> text, alt
    (re.compile(r"!?\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # [text][ref] -> text
    (re.compile(r"<(https?://[^>\s]+)>"), r"\1"),  # <http://autolink>
    (re.compile(r"<!--.*?-->"), ""),
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"), r"\1"),  # **bold** (not __bold__: think __init__)
    (re.compile(r"(?<![*\w])\*(?=\S)([^*]+?)(?<=\S)\*(?![*\w])"), r"\1"),  # *italic*
)
_CODE_SPAN = re.compile(r"(`[^`]+`)")


def _markdown_inline(text: str) -> str:
    for pattern, replacement in _MD_INLINE_RULES:
        text = pattern.sub(replacement, text)
    return text


def markdown_to_text(markdown: str) -> str:
    """Markdown -> readable text, keeping words that matter for search.

    Headings become plain lines, link and image text stays (URLs go), fence
    markers go but code inside fences is kept verbatim (identifiers are
    searchable), emphasis markers go. YAML front matter is dropped.
    """
    markdown = re.sub(r"\A---\n.*?\n---\n", "", markdown.replace("\r\n", "\n"), flags=re.S)
    lines: list[str] = []
    in_code = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            for pattern, replacement in _MD_LINE_RULES:
                line = pattern.sub(replacement, line)
            line = "".join(
                part[1:-1] if i % 2 else _markdown_inline(part)  # `code` stays verbatim
                for i, part in enumerate(_CODE_SPAN.split(line))
            )
        lines.append(line)
    return "\n".join(lines)


def _load_markdown(path: Path, data: bytes, min_chars: int) -> Document:
    text, warnings = _decode(path, data)
    return _text_document(path, markdown_to_text(text), warnings, min_chars)


# ---------------------------------------------------------------- HTML

_DROP_TAGS = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")
_PARAGRAPH_TAGS = (
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "table",
    "ul",
    "ol",
    "dl",
    "section",
    "article",
    "header",
    "footer",
    "aside",
    "main",
    "nav",
    "figure",
    "form",
    "hr",
    "address",
    "details",
    "fieldset",
)
_LINE_TAGS = ("br", "div", "li", "tr", "dt", "dd", "caption", "figcaption", "summary", "option")
_PARAGRAPH_MARK, _LINE_MARK = "\x1e", "\x1f"  # control characters: text nodes never keep them
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w.:-]+)""", re.I)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page: the <title> first, block elements on their own lines.

    Source line breaks inside a paragraph are only formatting, so text nodes
    collapse their whitespace (except inside <pre>). Block elements leave
    markers that become a blank line (paragraphs, which the chunker keeps
    together) or a line break (list items, rows, <br>).
    """
    soup = BeautifulSoup(html, "html.parser")
    title = normalize_whitespace(" ".join(soup.title.get_text(" ").split())) if soup.title else ""
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for node in soup.find_all(string=True):
        if type(node) is not NavigableString:  # comments, doctype, CDATA, processing instructions
            node.extract()
        elif node.find_parent("pre") is None:
            node.replace_with(re.sub(r"\s+", " ", str(node)))
    for tag in soup.find_all(_PARAGRAPH_TAGS + _LINE_TAGS):
        mark = _PARAGRAPH_MARK if tag.name in _PARAGRAPH_TAGS else _LINE_MARK
        tag.insert_before(mark)
        tag.insert_after(mark)
    for tag in soup.find_all(("td", "th")):
        tag.insert_after(" ")
    text = re.sub(
        rf"\s*{_PARAGRAPH_MARK}[\s{_LINE_MARK}{_PARAGRAPH_MARK}]*", "\n\n", soup.get_text()
    )
    body = normalize_whitespace(
        re.sub(rf"[ {_LINE_MARK}]*{_LINE_MARK}[ {_LINE_MARK}]*", "\n", text)
    )
    if title and not body.startswith(title):
        return f"{title}\n\n{body}" if body else title
    return body


def _load_html(path: Path, data: bytes, min_chars: int) -> Document:
    declared = _META_CHARSET.search(data[:4096])
    text, warnings = _decode(
        path, data, declared=declared.group(1).decode("ascii") if declared else None
    )
    return _text_document(path, html_to_text(text), warnings, min_chars)


# ---------------------------------------------------------------- registry

LOADERS: dict[str, Callable[[Path, int], Document]] = {
    ".pdf": _load_pdf,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".txt": _load_text,
    ".html": _load_html,
    ".htm": _load_html,
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(sorted(LOADERS))


def _check_content(path: Path, suffix: str, data: bytes) -> None:
    """Refuse an empty file, or one whose first bytes contradict its suffix (``ingest.content``)."""
    head = data[:_HEAD_BYTES]
    if not head:
        raise LoadError(path, "empty file")
    problem = content_mismatch(suffix, head)
    if problem is not None:
        raise LoadError(path, problem)


def load(path: Path, *, min_chars: int = MIN_CHARS, data: bytes | None = None) -> Document:
    """Load one file by its suffix; raise ``LoadError`` rather than return a document without text.

    ``min_chars`` (``ingest.min_chars``): pages, and text files as a whole, with
    fewer letters or digits hold nothing searchable and are not kept. ``data``: the file's
    bytes, read once by the caller (who hashes the same bytes), else read here.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    loader = LOADERS.get(suffix)
    if loader is None:
        shown = f"'{suffix}'" if suffix else "without a suffix"
        raise LoadError(
            path, f"unsupported file type {shown} (supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    check_int("min_chars", min_chars, 0)
    if data is None:
        data = _read(path)
    _check_content(path, suffix, data)
    doc = loader(path, data, min_chars)
    logger.debug("loaded %s: %d pages, %d warnings", path, len(doc.pages), len(doc.warnings))
    return doc
