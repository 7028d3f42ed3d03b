"""What the app needs from rag/ and ingest/, loaded once per process and shared by every browser session.

Streamlit reruns the page script on every click. Each model is loaded by a
``st.cache_resource`` function keyed by the settings that shape it, so changing
top-k or the reorder strategy reloads nothing, and picking another reranker
loads only that reranker (once). The objects shared here hold no per-request
state: a Pipeline is a small frozen value built per question.
"""
from __future__ import annotations

import math
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import streamlit as st

from ingest.runner import IngestReport, ingest
from rag.config import RerankerSettings, Settings
from rag.embedder import Embedder
from rag.generate import Generator
from rag.languages import collection_languages, coverage_warning
from rag.pipeline import Pipeline, load_configured_reranker, load_embedder, load_generator, open_store
from rag.rerankers import Reranker
from rag.retrieve import LexicalIndex
from rag.store import ChunkStore, FileRecord


@dataclass(frozen=True)
class Choices:
    """What the user picked in the sidebar for the next question."""

    top_k: int
    top_n: int
    reranker: str  # a label from reranker_options()
    strategy: str
    llm_model: str
    retrieval: str = "dense"  # dense | bm25 | hybrid


@st.cache_resource(show_spinner="Loading the embedding model…")
def _embedder(key: str, _settings: Settings) -> Embedder:
    return load_embedder(_settings)


@st.cache_resource(show_spinner=False)
def _store(key: str, _settings: Settings, _embedder: Embedder) -> ChunkStore:
    return open_store(_settings, _embedder, create=True)


@st.cache_resource(show_spinner=False)
def _lexical(key: str, _store: ChunkStore, korean: str) -> LexicalIndex:
    return LexicalIndex(_store, korean=korean)


@st.cache_resource(show_spinner="Loading the reranker…")
def _reranker(key: str, _settings: Settings) -> Reranker:
    return load_configured_reranker(_settings)


@st.cache_resource(show_spinner="Loading the LLM…")
def _generator(key: str, _settings: Settings) -> Generator:
    return load_generator(_settings)


def _embedder_key(settings: Settings) -> str:
    return settings.embedder.model_dump_json(exclude={"languages"})  # only the language warning reads it


def embedder(settings: Settings) -> Embedder:
    return _embedder(_embedder_key(settings), settings)


def _store_key(settings: Settings) -> str:
    return settings.store.model_dump_json() + settings.base_dir + _embedder_key(settings)


def store(settings: Settings) -> ChunkStore:
    return _store(_store_key(settings), settings, embedder(settings))


def forget_store() -> None:
    """Drop the cached store connection and what hangs on it, so the next use connects afresh.

    Called when the Chroma server was unreachable: once it is back (restarted,
    perhaps with its collections recreated), the next rerun reconnects instead of
    reusing a client and collection handles from before the outage.
    """
    _store.clear()
    _lexical.clear()
    _languages.clear()


def lexical(settings: Settings) -> LexicalIndex:
    """The BM25 index that follows this store (built on first use, rebuilt when the store changes)."""
    return _lexical(_store_key(settings), store(settings), settings.retrieval.korean_tokens)


@st.cache_data(show_spinner=False, max_entries=64)
def _languages(key: str, fingerprint: str, _store: ChunkStore) -> dict[str, float]:
    return collection_languages(_store)


def languages(settings: Settings) -> dict[str, float]:
    """The collection's main languages (share of characters), detected again only when its ledger changes."""
    chunks = store(settings)
    return _languages(_store_key(settings), chunks.fingerprint(), chunks)


def language_warning(settings: Settings, found: dict[str, float], subject: str = "the collection is") -> str | None:
    """Why the configured embedder cannot read the languages found, or None when it can (or is unknown)."""
    return coverage_warning(settings.embedder.model, found, settings.embedder.languages, subject=subject)


def reranker_options(settings: Settings) -> dict[str, RerankerSettings]:
    """Label -> reranker settings: the configured reranker first, then the configured alternatives."""
    base = settings.reranker
    options = {f"{base.kind}: {base.model}": base}
    for choice in base.alternatives:
        options.setdefault(f"{choice.kind}: {choice.model}",
                           base.model_copy(update={"kind": choice.kind, "model": choice.model}))
    return options


def reranker(settings: Settings, label: str) -> Reranker:
    chosen = reranker_options(settings)[label]
    return _reranker(chosen.model_dump_json(), settings.model_copy(update={"reranker": chosen}))


def generator(settings: Settings, llm_model: str) -> Generator:
    llm = settings.llm.model_copy(update={"model": llm_model})
    return _generator(llm.model_dump_json(), settings.model_copy(update={"llm": llm}))


def pipeline(settings: Settings, choices: Choices, *, rerank: bool, llm: Generator | None) -> Pipeline:
    """A pipeline for one question; the reranker is loaded only when this question reranks."""
    return Pipeline(
        embedder=embedder(settings), store=store(settings),
        reranker=reranker(settings, choices.reranker) if rerank else None,
        generator=llm, top_k=choices.top_k, top_n=choices.top_n, reorder_strategy=choices.strategy,
        lexical=lexical(settings), retrieval_mode=choices.retrieval, rrf_k=settings.retrieval.rrf_k,
        fusion_weights=(settings.retrieval.dense_weight, settings.retrieval.bm25_weight),
    )


def is_offline_profile(settings: Settings) -> list[str]:
    """What runs on demo models: "packaged embedder", "packaged reranker", "local LLM" (empty for production)."""
    reasons = []
    if settings.embedder.model.startswith("pkg:"):
        reasons.append("packaged embedder")
    if settings.reranker.model.startswith("pkg:"):
        reasons.append("packaged reranker")
    if settings.llm.base_url.strip() == "":
        reasons.append("local LLM")
    return reasons


# --- documents ------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^\w.\- ]+")
MAX_STEM_BYTES = 120  # a saved name's stem in UTF-8 (ext4 allows 255 bytes a name; Hangul takes 3 a character)
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
        raise ValueError(f"{name} in the upload folder is a symbolic link; it is not written through")
    if target.parent != folder or target.resolve().parent != root:
        raise ValueError(f"{name!r} would be saved outside the upload folder")
    if target.exists() and not target.is_file():
        raise ValueError(f"{name} in the upload folder is not a plain file")
    return target


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig", "UTF-8"), (b"\xff\xfe\x00\x00", "utf-32", "UTF-32"),
         (b"\x00\x00\xfe\xff", "utf-32", "UTF-32"), (b"\xff\xfe", "utf-16", "UTF-16"), (b"\xfe\xff", "utf-16", "UTF-16"))
_MAGIC = ((b"%PDF-", "a PDF"), (b"PK\x03\x04", "a ZIP archive (or a Word/Excel file)"), (b"\x89PNG", "a PNG image"),
          (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"), (b"\x7fELF", "a program (ELF)"),
          (b"\x1f\x8b", "gzip data"), (b"\xd0\xcf\x11\xe0", "an old Office document"))
# C0 control bytes that text does not contain (tab, newlines, form feed and escape are allowed)
_CONTROLS = bytes(b for b in range(32) if b not in b"\t\n\r\x0c\x1b") + b"\x7f"
PDF_HEADER_WINDOW = 1024  # readers accept %PDF- anywhere in the first 1024 bytes
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")


def sniff_mismatch(name: str, data: bytes) -> str | None:
    """Why the bytes contradict the file's extension, or None when they do not (or it is not checked).

    A ``.pdf`` must carry ``%PDF-`` in its first 1024 bytes. Text (``.txt``,
    ``.md``, ``.markdown``, ``.html``, ``.htm``) must not be a known binary
    format or contain NUL bytes or more than 2% control characters; with a
    byte-order mark it must decode as the encoding the mark names. Text without
    one need not be UTF-8: legacy cp949 or Shift_JIS text is text, and the
    loader detects its encoding as it does for ``python -m ingest``. An empty
    file is left to ingestion, which reports "empty file".
    """
    suffix = Path(name).suffix.lower()
    if not data:
        return None
    known = next((what for magic, what in _MAGIC if data.startswith(magic)), None)
    if suffix == ".pdf":
        if b"%PDF-" in data[:PDF_HEADER_WINDOW]:
            return None
        return f"not a PDF: the content is {known}" if known else \
            f"not a PDF: no %PDF- header in the first {PDF_HEADER_WINDOW} bytes"
    if suffix not in TEXT_SUFFIXES:
        return None
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            try:
                data.decode(codec)
            except UnicodeDecodeError:
                return f"not text: invalid {label} after its byte-order mark"
            return None
    if known:
        return f"not a {suffix} file: the content is {known}"
    if b"\x00" in data:
        return f"not a {suffix} file: binary content (NUL bytes)"
    controls = len(data) - len(data.translate(None, _CONTROLS))
    if controls * 50 > len(data):
        return f"not a {suffix} file: binary content ({controls} control bytes in {len(data)})"
    return None


def shown_name(name: str, limit: int = 80) -> str:
    """A user-supplied file name for a message: no control characters, short, no Markdown."""
    text = "".join(c if unicodedata.category(c)[0] != "C" else "\ufffd" for c in name)
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return re.sub(r"([\\`*_{}\[\]()#+!|<>~$])", r"\\\1", text)


def upload_size_cap_mb(settings: Settings, server_max_mb: int) -> int:
    """The per-file cap for the browser's file picker: the config's limits, never above the server's."""
    wanted = math.ceil(min(settings.ingest.max_file_mb, settings.ui.max_upload_mb))
    return max(1, min(wanted, server_max_mb))


def documents(settings: Settings) -> list[FileRecord]:
    """The files in the collection, newest first."""
    records = store(settings).file_records().values()
    return sorted(records, key=lambda r: r.ingest_time, reverse=True)


def remove_document(settings: Settings, source: str) -> None:
    """Delete a file's chunks and ledger entry; an uploaded copy is deleted too, so it does not come back."""
    store(settings).remove_file(source)
    uploads = settings.resolve_path(settings.ui.upload_dir)
    path = Path(source)
    if path.parent == uploads and path.is_file():
        path.unlink()


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def ingest_uploads(settings: Settings, uploads: Sequence[Upload],
                   on_progress: Callable[[float, str], None]) -> tuple[IngestReport, list[tuple[str, str]]]:
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
    saved = [_save(target, data) for target, data in accepted]
    if not saved:
        return IngestReport((), 0.0), refused
    done = {"files": 0}

    def file_done(source: str, status: str) -> None:
        done["files"] += 1
        on_progress(done["files"] / len(saved), f"{status} {Path(source).name}")

    report = ingest(saved, embedder=embedder(settings), store=store(settings),
                    chunk_size=settings.chunking.size, chunk_overlap=settings.chunking.overlap,
                    extensions=settings.ingest.extensions, max_file_bytes=int(limit), on_file=file_done,
                    on_chunks=lambda source, n: on_progress(done["files"] / len(saved),
                                                            f"embedding {Path(source).name}"))
    return report, refused


def _check_upload(settings: Settings, folder: Path, index: int, upload: Upload, taken: set[str],
                  total: int) -> Path:
    """Where one upload goes; ValueError with the reason it is refused."""
    ui, size = settings.ui, len(upload.data)
    if index >= ui.max_upload_files:
        raise ValueError(f"more than ui.max_upload_files = {ui.max_upload_files} files")
    if size > settings.ingest.max_file_mb * 1e6:
        raise ValueError(f"{size / 1e6:.1f} MB is over ingest.max_file_mb = {settings.ingest.max_file_mb:g}")
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
    except OSError:
        partial.unlink(missing_ok=True)  # e.g. a full disk: leave nothing half-written behind
        raise
    return target
