"""Bytes before text: does a file's content fit its extension, and which encoding is its text in.

Both the command line and the app reach these through ``ingest.loaders``, so a
file is judged by what it holds, not only by its name: a ``.pdf`` without a
``%PDF-`` header, a PNG renamed ``.txt`` or a PDF renamed ``.md`` is refused
with one line naming the problem. Pure functions over bytes.

Text that is not UTF-8 is decoded, not refused: a byte-order mark decides
first, then UTF-8 (with a handful of stray bytes replaced), then a charset the
file declares (HTML ``<meta charset>``), then charset-normalizer's detection
restricted to :data:`LEGACY_ENCODINGS`. The caller reports the encoding used
as a warning, so a wrong guess is visible.
"""

from __future__ import annotations

import codecs

import charset_normalizer

PDF_HEADER_WINDOW = 1024  # PDF readers accept %PDF- anywhere in the first 1024 bytes
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
# Known binary formats by their first bytes (what a file renamed to .txt or .pdf usually is).
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/Excel file)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "a program (ELF)"),
    (b"\x1f\x8b", "gzip data"),
    (b"\xd0\xcf\x11\xe0", "an old Office document"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"{\\rtf", "an RTF document"),
)
BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 control bytes that text does not contain (tab, newlines, form feed and escape are allowed)
_CONTROLS = bytes(b for b in range(32) if b not in b"\t\n\r\x0c\x1b") + b"\x7f"
_SNIFF_BYTES = 8192  # NUL and control bytes are looked for in the first 8 KiB
# Encodings detection may pick for text that is not UTF-8, in order of preference where it cannot
# tell them apart: Korean, Japanese, Chinese, then Western, Cyrillic, Central European, Greek,
# Turkish, Hebrew, Arabic, Baltic, Vietnamese and Thai code pages. EBCDIC, UTF-16/32 without a
# byte-order mark and the rarer code pages are left out: on short files detection ranks them
# first, and they are wrong.
LEGACY_ENCODINGS: tuple[str, ...] = (
    "cp949",
    "cp932",
    "euc_jp",
    "gb18030",
    "big5",
    "cp1252",
    "cp1251",
    "koi8_r",
    "cp1250",
    "cp1253",
    "cp1254",
    "cp1255",
    "cp1256",
    "cp1257",
    "cp1258",
    "cp874",
)
# UTF-8 with at most this share of invalid sequences is read as UTF-8 (as U+FFFD)
MAX_STRAY_SHARE = 0.01


def known_format(data: bytes) -> str | None:
    """What the bytes are when they start like a known binary format ("a PNG image"), else None."""
    return next((what for magic, what in SIGNATURES if data.startswith(magic)), None)


def content_mismatch(suffix: str, data: bytes) -> str | None:
    """Why the content contradicts the extension, or None when it does not (or the suffix is not
    checked).

    A ``.pdf`` must carry ``%PDF-`` in its first 1024 bytes. Text (``.txt``,
    ``.md``, ``.markdown``, ``.html``, ``.htm``) must not start like a known
    binary format, nor hold NUL bytes or more than 2% control bytes, unless a
    byte-order mark says it is UTF-16/32. Empty data passes (the loaders say
    "empty file"). Only the first few KiB are looked at, so ``data`` may be a head.
    """
    suffix = suffix.lower()
    if not data:
        return None
    known = known_format(data)
    if suffix == ".pdf":
        if b"%PDF-" in data[:PDF_HEADER_WINDOW]:
            return None
        return (
            f"not a PDF: the content is {known}"
            if known
            else f"not a PDF: no %PDF- header in the first {PDF_HEADER_WINDOW} bytes"
        )
    if suffix not in TEXT_SUFFIXES or any(data.startswith(bom) for bom, _ in BOMS):
        return None
    if known:
        return f"not a {suffix} file: the content is {known}"
    head = data[:_SNIFF_BYTES]
    if b"\x00" in head:
        return f"not a {suffix} file: binary content (NUL bytes)"
    controls = len(head) - len(head.translate(None, _CONTROLS))
    if controls * 50 > len(head):
        return f"not a {suffix} file: binary content ({controls} control bytes in {len(head)})"
    return None


def decode(data: bytes, *, declared: str | None = None) -> tuple[str, list[str]]:
    """Bytes of a text file -> (text, warnings); raises ValueError with the reason for the user.

    Order: byte-order mark, UTF-8, UTF-8 with a few stray bytes replaced, the
    declared charset, detection among :data:`LEGACY_ENCODINGS`.
    """
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), []
            except UnicodeDecodeError as exc:
                shown = encoding.upper().removesuffix("-SIG")
                raise ValueError(f"not text: invalid {shown} after its byte-order mark") from exc
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    stray = _stray_utf8_bytes(data)
    if stray is not None:
        return data.decode("utf-8", errors="replace"), [
            f"{stray} invalid UTF-8 {'sequence' if stray == 1 else 'sequences'} replaced by \ufffd"
        ]
    if declared:
        try:
            return data.decode(declared), [f"decoded as {declared} (declared, not UTF-8)"]
        except (UnicodeDecodeError, LookupError):
            pass
    encoding = detect_encoding(data)
    if encoding is None:
        raise ValueError("not text: no text encoding fits (binary content?)")
    return data.decode(encoding), [f"decoded as {encoding} (not UTF-8)"]


def _stray_utf8_bytes(data: bytes) -> int | None:
    """The number of invalid sequences when ``data`` is UTF-8 text with a few stray bytes, else
    None.

    It counts as UTF-8 when the invalid sequences are at most 1% of the bytes and
    the file holds more valid multi-byte characters than invalid sequences: the
    evidence that it was written as UTF-8 (a file cut inside a character, a
    pasted Latin-1 byte). ASCII with a few high bytes is more likely a legacy
    code page, and goes to detection.
    """
    text = data.decode("utf-8", errors="replace")
    stray = text.count("\ufffd") - data.count("\ufffd".encode())
    if stray == 0 or stray > max(1.0, MAX_STRAY_SHARE * len(data)):
        return None
    multibyte = len(text) - len(text.encode("ascii", errors="ignore")) - text.count("\ufffd")
    return stray if multibyte > stray else None


def _rank(encoding: str) -> int:
    return (
        LEGACY_ENCODINGS.index(encoding) if encoding in LEGACY_ENCODINGS else len(LEGACY_ENCODINGS)
    )


def _preferred_name(match: charset_normalizer.CharsetMatch) -> str:
    """Of the encodings that give this same text, the one earliest in LEGACY_ENCODINGS."""
    return min([match.encoding, *match.could_be_from_charset], key=_rank)


def detect_encoding(data: bytes) -> str | None:
    """The most plausible of :data:`LEGACY_ENCODINGS` for ``data``, or None when none decodes it
    sensibly.

    charset-normalizer scores each candidate's "chaos" (mojibake) and language
    coherence; among the least chaotic, the most coherent wins, and ties go to
    the earlier encoding in :data:`LEGACY_ENCODINGS` (so a short "Café" is
    cp1252, not cp1251's "Cafй").
    """
    matches = list(charset_normalizer.from_bytes(data, cp_isolation=list(LEGACY_ENCODINGS)))
    if not matches:
        return None
    least = min(m.chaos for m in matches)
    close = [m for m in matches if m.chaos <= least + 0.01]
    best = min(close, key=lambda m: (-round(m.coherence, 1), _rank(_preferred_name(m))))
    return _preferred_name(best)
