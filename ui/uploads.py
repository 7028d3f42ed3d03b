"""Files uploaded in the app: checked, saved inside the upload folder, then ingested.

Every upload is checked before anything is written (count, size, total size, a
usable name and extension, content that matches the extension), saved under a
sanitised name directly inside ``ui.upload_dir`` (never through a link, never
outside it), and ingested with the process's shared models and store.
"""

from __future__ import annotations

import errno
import math
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.content import BOMS, TEXT_SUFFIXES, content_mismatch
from ingest.runner import IngestOptions, IngestReport, ingest
from rag.common import clip
from rag.config import Settings
from rag.store import free_bytes, mib
from ui.services import embedder, store

_UNSAFE = re.compile(r"[^\w.\- ]+")
# a saved name's stem in UTF-8 (ext4 allows 255 bytes a name; Hangul takes 3 a character)
MAX_STEM_BYTES = 120
MAX_SUFFIX_CHARS = 16
_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])", re.IGNORECASE)


def safe_name(name: str) -> str:
    """A plain file name for the upload folder, or ValueError when nothing usable is left.

    Only the base name is kept (``/`` and ``\\`` both separate, so ``../../x.md``,
    ``C:\\x.md`` and ``/etc/x.md`` become ``x.md``); Unicode is normalised to NFC
    (macOS sends Hangul decomposed); anything but letters, digits, ``_ . -`` and
    spaces (control characters, NUL, ``:``, ``?``) becomes ``_``; leading dots
    (hidden files, ``..``) and trailing dots and spaces go; a long stem is cut
    to ``MAX_STEM_BYTES`` bytes, keeping the extension.
    """
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name))[-1]
    cleaned = _UNSAFE.sub("_", base).strip(" .")
    stem, dot, suffix = cleaned.rpartition(".")
    stem = stem.rstrip(" .")
    if not dot or suffix == "" or not re.search(r"[^\W_]", stem):
        raise ValueError("unusable file name: it needs a name and an extension")
    if len(suffix) > MAX_SUFFIX_CHARS:
        raise ValueError(f"unusable file name: an extension of {len(suffix)} characters")
    stem = stem.encode("utf-8")[:MAX_STEM_BYTES].decode("utf-8", "ignore").rstrip(" .")
    if _WINDOWS_DEVICES.fullmatch(stem.split(".")[0]):
        stem = "_" + stem
    return f"{stem}.{suffix}"


def upload_target(folder: Path, name: str) -> Path:
    """``folder / name``, checked: it resolves inside the folder and is not a symlink."""
    root = folder.resolve()
    target = folder / name
    if target.is_symlink():
        raise ValueError(
            f"{name} in the upload folder is a symbolic link; it is not written through"
        )
    if target.parent != folder or target.resolve().parent != root:
        raise ValueError(f"{name!r} would be saved outside the upload folder")
    if target.exists() and not target.is_file():
        raise ValueError(f"{name} in the upload folder is not a plain file")
    return target


_BOM_LABELS = {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}


def sniff_mismatch(name: str, data: bytes) -> str | None:
    """Why an upload's bytes contradict its extension, or None when they do not (or it is not
    checked).

    The same check as ``python -m ingest`` (:func:`ingest.content.content_mismatch`:
    a ``.pdf`` needs ``%PDF-`` in its first 1024 bytes; text must not be a known
    binary format, hold NUL bytes or many control bytes), plus one the app can make
    because it holds the whole upload: text with a byte-order mark must decode as
    the encoding the mark names. Text without one need not be UTF-8: the loader
    detects legacy encodings (cp949, Shift_JIS...). Empty data is left to ingestion.
    """
    suffix = Path(name).suffix.lower()
    if suffix in TEXT_SUFFIXES:
        for bom, codec in BOMS:
            if data.startswith(bom):
                try:
                    data.decode(codec)
                except UnicodeDecodeError:
                    return f"not text: invalid {_BOM_LABELS[codec]} after its byte-order mark"
                return None
    return content_mismatch(suffix, data)


def shown_name(name: str, limit: int = 80) -> str:
    """A user-supplied file name for a message: no control characters, short, no Markdown."""
    text = "".join(c if unicodedata.category(c)[0] != "C" else "\ufffd" for c in name)
    text = clip(text, limit)
    return re.sub(r"([\\`*_{}\[\]()#+!|<>~$])", r"\\\1", text)


def upload_size_cap_mb(settings: Settings, server_max_mb: int) -> int:
    """The per-file cap for the browser's file picker: the config's limits, never above the
    server's.
    """
    wanted = math.ceil(min(settings.ingest.max_file_mb, settings.ui.max_upload_mb))
    return max(1, min(wanted, server_max_mb))


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def ingest_uploads(
    settings: Settings, uploads: Sequence[Upload], on_progress: Callable[[float, str], None]
) -> tuple[IngestReport, list[tuple[str, str]]]:
    """Save uploads into the upload folder and ingest them; returns the report and refused uploads.

    Every upload is checked before anything is written; refused (name, reason):
    more than ``ui.max_upload_files`` files, over ``ingest.max_file_mb``, past
    ``ui.max_upload_mb`` for the whole upload, an unusable name or extension, a
    name another file of the same upload already takes, content that contradicts
    the extension (:func:`sniff_mismatch`), or a target that is not a plain file
    inside the folder. Files are written under a temporary name and renamed, so
    a half-written file is never ingested.
    """
    limit = settings.ingest.max_file_mb * 1e6
    folder = settings.resolve_path(settings.ui.upload_dir)
    folder.mkdir(parents=True, exist_ok=True)
    refused: list[tuple[str, str]] = []
    accepted: list[tuple[Path, bytes]] = []
    taken: set[str] = set()
    total = 0
    for index, upload in enumerate(uploads):
        try:
            target = _check_upload(settings, folder, index, upload, taken, total)
        except ValueError as exc:
            refused.append((upload.name, str(exc)))
            continue
        taken.add(target.name.casefold())
        total += len(upload.data)
        accepted.append((target, upload.data))
    if not accepted:
        return IngestReport((), 0.0), refused
    # opened first: a store that refuses this embedder leaves no saved copies
    chunks = store(settings)
    saved = [_save(target, data) for target, data in accepted]
    done = {"files": 0}

    def file_done(source: str, status: str) -> None:
        done["files"] += 1
        on_progress(done["files"] / len(saved), f"{status} {Path(source).name}")

    report = ingest(
        saved,
        embedder=embedder(settings),
        store=chunks,
        options=IngestOptions.from_settings(settings, max_file_bytes=int(limit)),
        on_file=file_done,
        on_chunks=lambda source, n: on_progress(
            done["files"] / len(saved), f"embedding {Path(source).name}"
        ),
    )
    return report, refused


def _check_upload(
    settings: Settings, folder: Path, index: int, upload: Upload, taken: set[str], total: int
) -> Path:
    """Where one upload goes; ValueError with the reason it is refused."""
    ui, size = settings.ui, len(upload.data)
    if index >= ui.max_upload_files:
        raise ValueError(f"more than ui.max_upload_files = {ui.max_upload_files} files")
    if size > settings.ingest.max_file_mb * 1e6:
        raise ValueError(
            f"{size / 1e6:.1f} MB is over ingest.max_file_mb = {settings.ingest.max_file_mb:g}"
        )
    if total + size > ui.max_upload_mb * 1e6:
        raise ValueError(f"the upload would pass ui.max_upload_mb = {ui.max_upload_mb:g} MB in all")
    name = safe_name(upload.name)
    suffix = Path(name).suffix.lower()
    if suffix not in {e.lower() for e in settings.ingest.extensions}:
        raise ValueError(f"{suffix} files are not accepted (ingest.extensions)")
    if name.casefold() in taken:
        raise ValueError(f"another file of this upload has the same name ({name})")
    mismatch = sniff_mismatch(name, upload.data)
    if mismatch is not None:
        raise ValueError(mismatch)
    return upload_target(folder, name)


def _save(target: Path, data: bytes) -> Path:
    """Write under a hidden temporary name (created, never opened through a link), then rename."""
    partial = target.with_name(f".{target.name}.{time.time_ns()}.partial")
    try:
        with open(partial, "xb") as out:
            out.write(data)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)  # e.g. a full disk: leave nothing half-written behind
        if exc.errno == errno.ENOSPC:
            raise ValueError(
                f"the disk holding {target.parent} is full ({mib(free_bytes(target.parent))} "
                "free): "
                f"{target.name} was not saved; free some space and upload it again"
            ) from exc
        raise
    return target
