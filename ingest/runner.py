"""Ingestion: files -> loaders -> chunks -> embeddings -> store, incrementally and crash-safely.

Per file, the store is changed in an order that any interruption (Ctrl-C,
SIGTERM, SIGKILL, a full disk) leaves recoverable: the file's bytes are read
once, and the content hash stored is the hash of those bytes (a file edited
while it is ingested is never stored under its old hash); the content is loaded,
chunked and embedded (a file that now fails, or can no longer be read, keeps its
old chunks); the disk's free space is checked against the write; then the
ledger marks the file ``writing``, its old chunks are deleted, the new ones are
written, and the ledger marks it ``complete``. A file left ``writing`` is redone
by the next run, and answers leave it out until then. A file that disappears
during the run is treated as if it had been gone when the run started.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.chunking import chunk_document
from ingest.loaders import MIN_CHARS, LoadError, content_chars, load, read_regular, special_kind
from ingest.manifest import chunk_id, content_hash, file_hash, make_plan
from rag.config import Settings
from rag.embedder import Embedder
from rag.languages import language_chars, shares
from rag.store import COMPLETE, WRITING, ChunkStore, FileRecord
from rag.types import Chunk

logger = logging.getLogger(__name__)

ADDED, UPDATED, UNCHANGED, REMOVED, FAILED = "added", "updated", "unchanged", "removed", "failed"


class IngestInputError(ValueError):
    """The paths given to ingestion cannot be used (missing, or no supported files)."""


@dataclass(frozen=True)
class FileOutcome:
    source: str
    status: str
    chunks: int = 0
    reason: str = ""
    warnings: tuple[str, ...] = ()
    # (language, characters) in the chunks written, from a sample
    languages: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class IngestReport:
    outcomes: tuple[FileOutcome, ...]
    seconds: float
    skipped: int = 0  # files in the given folders with unsupported extensions
    # entries in the given folders that are not regular files (FIFOs, sockets, devices)
    special: int = 0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def files_seen(self) -> int:
        return sum(1 for o in self.outcomes if o.status != REMOVED)

    @property
    def chunks_written(self) -> int:
        return sum(o.chunks for o in self.outcomes if o.status in (ADDED, UPDATED))

    def languages(self) -> dict[str, float]:
        """The main languages of the chunks written: language -> share of characters,
        largest first.
        """
        chars: Counter[str] = Counter()
        for o in self.outcomes:
            if o.status in (ADDED, UPDATED):
                chars.update(dict(o.languages))
        return shares(chars)


@dataclass
class Discovery:
    files: list[Path] = field(default_factory=list)
    whole_dirs: list[Path] = field(default_factory=list)
    skipped: int = 0
    special: int = 0  # FIFOs, sockets and devices inside the folders (never opened)
    # given by name, not a regular file: why
    refused: list[tuple[Path, str]] = field(default_factory=list)


def discover(paths: Sequence[str | Path], extensions: Sequence[str]) -> Discovery:
    """Files to ingest. Folders are walked (hidden entries skipped); files given by name are kept
    even with an unsupported extension, so the loader can say why it refuses them."""
    found = Discovery()
    suffixes = {e.lower() for e in extensions}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise IngestInputError(f"path not found: {raw}")
        path = path.resolve()
        if path.is_file():
            found.files.append(path)
            continue
        if not path.is_dir():
            found.refused.append(
                (path, f"not a regular file ({special_kind(path.stat().st_mode)})")
            )
            continue
        found.whole_dirs.append(path)
        for item in sorted(path.rglob("*")):
            if any(part.startswith(".") for part in item.relative_to(path).parts) or item.is_dir():
                continue
            if not item.is_file():
                found.special += item.exists()  # a dangling link is neither counted nor read
            elif item.suffix.lower() in suffixes:
                found.files.append(item)
            else:
                found.skipped += 1
    found.files = list(dict.fromkeys(found.files))
    if not found.files and not found.whole_dirs and not found.refused:
        raise IngestInputError("no files given")
    return found


Progress = Callable[[str, str], None]  # (source, status) after each file
ChunkProgress = Callable[[str, int], None]  # (source, chunks embedded since the last call)
EMBED_SLICE = 256  # chunks embedded per call, so progress moves inside a large file
# chunks per file whose language is detected (evenly spaced; well under 1% of embedding time)
LANGUAGE_SAMPLE = 32


@dataclass(frozen=True)
class IngestOptions:
    """How files become chunks: ``chunking.*`` and ``ingest.*``, built from settings in one place
    (:meth:`from_settings`) for the command line and the app's uploads alike."""

    chunk_size: int
    chunk_overlap: int
    extensions: tuple[str, ...]
    max_file_bytes: int
    min_chars: int = MIN_CHARS
    # ingest.check_free_space: before each write into an embedded store, refuse with
    # StoreFullError when the disk has less free space than the write needs
    check_space: bool = True

    @classmethod
    def from_settings(
        cls, settings: Settings, *, max_file_bytes: int | None = None
    ) -> IngestOptions:
        """The configured options; ``max_file_bytes`` replaces ``ingest.max_file_mb`` (the app
        caps uploads lower when Streamlit's own limit is)."""
        i = settings.ingest
        return cls(
            chunk_size=settings.chunking.size,
            chunk_overlap=settings.chunking.overlap,
            extensions=tuple(i.extensions),
            max_file_bytes=max_file_bytes
            if max_file_bytes is not None
            else int(i.max_file_mb * 1e6),
            min_chars=i.min_chars,
            check_space=i.check_free_space,
        )


def ingest(
    paths: Sequence[str | Path],
    *,
    embedder: Embedder,
    store: ChunkStore,
    options: IngestOptions,
    on_start: Callable[[int], None] | None = None,
    on_file: Progress | None = None,
    on_chunks: ChunkProgress | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> IngestReport:
    """Bring the store in line with ``paths``; returns what happened to each file.

    ``on_start(n_files)`` is called once the work is known, ``on_file(source, status)``
    after each file and ``on_chunks(source, n)`` as its chunks are embedded. Pages and
    chunks with fewer than ``min_chars`` letters or digits are not stored (``ingest.min_chars``).
    ``stop_requested()`` is asked before each file; True raises KeyboardInterrupt there.
    """
    started = time.perf_counter()
    chunk_size, extensions = options.chunk_size, options.extensions
    budget = embedder.passage_budget()
    if chunk_size > budget:
        raise IngestInputError(
            f"chunking.size = {chunk_size} tokens is more than the embedder {embedder.name} reads "
            f"({budget} tokens after its prefix and special tokens); lower chunking.size"
        )
    found = discover(paths, extensions)
    if not found.files and found.whole_dirs and not store.file_records():
        raise IngestInputError(
            f"no supported files ({', '.join(extensions)}) in "
            f"{', '.join(str(d) for d in found.whole_dirs)}"
        )
    outcomes = [FileOutcome(str(path), FAILED, reason=why) for path, why in found.refused]
    hashes: dict[str, str] = {}
    unreadable: list[str] = []  # failed now, but their stored chunks stay
    for path in found.files:
        try:
            hashes[str(path)] = file_hash(path)
        except FileNotFoundError:  # gone since it was listed: as if it had not been found
            unreadable += [] if _under(path, found.whole_dirs) else [str(path)]
        except (OSError, LoadError) as exc:
            unreadable.append(str(path))
            outcomes.append(FileOutcome(str(path), FAILED, reason=_read_failure(exc)))
    records = store.file_records()
    plan = make_plan(hashes, records, found.whole_dirs, keep=unreadable)
    outcomes += [
        FileOutcome(s, FAILED, reason=VANISHED)
        for s in unreadable
        if s not in hashes and not any(o.source == s for o in outcomes)
    ]
    if on_start is not None:
        on_start(len(hashes) + len(plan.remove))
    outcomes += [FileOutcome(s, UNCHANGED) for s in plan.unchanged]
    for source in plan.unchanged:
        _notify(on_file, source, UNCHANGED)
    for source in plan.add + plan.update:
        _stop_if(stop_requested)
        status = ADDED if source in plan.add else UPDATED
        outcome = _ingest_file(
            Path(source),
            status,
            embedder=embedder,
            store=store,
            size=chunk_size,
            overlap=options.chunk_overlap,
            max_bytes=options.max_file_bytes,
            min_chars=options.min_chars,
            on_chunks=on_chunks,
            check_space=options.check_space,
        )
        if (
            outcome.reason == VANISHED
            and source in records
            and _under(Path(source), found.whole_dirs)
        ):
            # deleted during the run, from a folder given whole: as a deleted file
            store.remove_file(source)
            outcome = FileOutcome(source, REMOVED)
        outcomes.append(outcome)
        _notify(on_file, source, outcome.status)
    for source in plan.remove:
        _stop_if(stop_requested)
        store.remove_file(source)
        outcomes.append(FileOutcome(source, REMOVED))
        _notify(on_file, source, REMOVED)
    return IngestReport(
        tuple(outcomes), time.perf_counter() - started, found.skipped, found.special
    )


VANISHED = (
    "the file disappeared during the run (deleted or moved); its stored chunks, if any, are kept"
)


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


def _read_failure(exc: OSError | LoadError) -> str:
    if isinstance(exc, LoadError):
        return exc.reason
    return f"cannot read: {exc.strerror or exc}"


def _stop_if(stop_requested: Callable[[], bool] | None) -> None:
    """Between files, the store is consistent: the place to honour an interrupt whose exception
    was lost.
    """
    if stop_requested is not None and stop_requested():
        raise KeyboardInterrupt


def _size(n_bytes: int) -> str:
    """ "3.0 MB", or the bytes when that would round to 0.0 MB."""
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 50_000 else f"{n_bytes:,} bytes"


def _notify(callback: Progress | None, source: str, status: str) -> None:
    if callback is not None:
        callback(source, status)


def _embed(
    embedder: Embedder, source: str, texts: list[str], on_chunks: ChunkProgress | None
) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), EMBED_SLICE):
        parts.append(embedder.embed_passages(texts[start : start + EMBED_SLICE]))
        if on_chunks is not None:
            on_chunks(source, len(parts[-1]))
    return np.concatenate(parts)


def _ingest_file(
    path: Path,
    status: str,
    *,
    embedder: Embedder,
    store: ChunkStore,
    size: int,
    overlap: int,
    max_bytes: int,
    min_chars: int,
    on_chunks: ChunkProgress | None,
    check_space: bool,
) -> FileOutcome:
    """Read the file once and store what was read under the hash of those bytes."""
    source = str(path)
    try:
        n_bytes = path.stat().st_size
        if n_bytes > max_bytes:
            return FileOutcome(
                source,
                FAILED,
                reason=(
                    f"file is {_size(n_bytes)}, over the limit ingest.max_file_mb = "
                    f"{max_bytes / 1e6:g}"
                ),
            )
        data = read_regular(path)
    except FileNotFoundError:
        return FileOutcome(source, FAILED, reason=VANISHED)
    except (OSError, LoadError) as exc:
        return FileOutcome(source, FAILED, reason=_read_failure(exc))
    digest = content_hash(data)
    try:
        doc = load(path, min_chars=min_chars, data=data)
    except LoadError as exc:
        return FileOutcome(source, FAILED, reason=exc.reason)
    pieces = [
        (page, text)
        for page, text in chunk_document(
            doc, tokenizer=embedder.tokenizer, size=size, overlap=overlap
        )
        if content_chars(text, stop=min_chars) >= min_chars
    ]
    if not pieces:
        return FileOutcome(
            source, FAILED, reason="no text left after chunking", warnings=doc.warnings
        )
    chunks = [
        Chunk(
            id=chunk_id(source, digest, i),
            text=text,
            source=source,
            page=page,
            chunk_index=i,
            content_hash=digest,
        )
        for i, (page, text) in enumerate(pieces)
    ]
    vectors = _embed(embedder, source, [c.text for c in chunks], on_chunks)
    if check_space:
        store.check_room(
            [c.text for c in chunks], embedder.dimension, what=f"{path.name} ({len(chunks)} chunks)"
        )
    now = time.time()
    logger.info("writing %s: %d chunks", source, len(chunks))
    store.put_file(FileRecord(source, digest, WRITING, len(chunks), now))
    store.delete_source(source)
    store.upsert_chunks(chunks, vectors, now)
    store.put_file(FileRecord(source, digest, COMPLETE, len(chunks), now))
    logger.info("%s %s: %d chunks", status, source, len(chunks))
    languages = tuple(sorted(language_chars([c.text for c in chunks], LANGUAGE_SAMPLE).items()))
    return FileOutcome(
        source, status, chunks=len(chunks), warnings=doc.warnings, languages=languages
    )
