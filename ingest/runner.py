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

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest.loaders import MIN_CHARS, LoadError, special_kind
from ingest.manifest import chunk_id, file_hash, make_plan
from ingest.prepare import (
    VANISHED,
    Chunking,
    Failure,
    Prepared,
    prepare_files,
    read_failure,
)
from rag.config import Settings
from rag.embedder import Embedder
from rag.languages import language_chars, shares
from rag.models import usable_cores
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
    # processes that load and chunk files (ingest.workers; 1: this process alone; 0: auto_workers)
    workers: int = 1

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
            workers=i.workers if i.workers > 0 else 0 if settings.embedder.kind == "remote" else 1,
        )


# ingest.workers = 0 starts worker processes only where they paid off here (bench/scaleout.py,
# 2 cores): with a remote embedder and about 1 MB of files to load (the 220-page bench corpus,
# 1.04 MB of PDFs: 2 workers 1.08x one process). With the local embedder the embedding takes
# every core: 0.98x on that corpus, and the sample docs/ (92 KB) took 18-19.5 s instead of 15 s.
AUTO_WORKERS_MIN_BYTES = 1_000_000


def auto_workers(work: Sequence[Path]) -> int:
    """Worker processes for ``ingest.workers = 0`` with a remote embedder: one per usable core
    when the files to load add up to AUTO_WORKERS_MIN_BYTES, else none (starting them costs
    seconds)."""
    total = 0
    for path in work:
        try:
            total += path.stat().st_size
        except OSError:
            pass  # the loader says what is wrong with it
    return usable_cores() if total >= AUTO_WORKERS_MIN_BYTES else 1


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
    stages: Stages | None = None,
) -> IngestReport:
    """Bring the store in line with ``paths``; returns what happened to each file.

    ``on_start(n_files)`` is called once the work is known, ``on_file(source, status)``
    after each file and ``on_chunks(source, n)`` as its chunks are embedded. Pages and
    chunks with fewer than ``min_chars`` letters or digits are not stored (``ingest.min_chars``).
    ``stop_requested()`` is asked before each file; True raises KeyboardInterrupt there.
    ``stages`` runs read, load, chunk and embed (:func:`local_stages` unless given, e.g. a Ray
    Data pipeline, :mod:`ingest.distributed`); the writes are made here, in order, either way.
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
            outcomes.append(FileOutcome(str(path), FAILED, reason=read_failure(exc)))
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
    how = Chunking(
        tokenizer=embedder.tokenizer,
        size=chunk_size,
        overlap=options.chunk_overlap,
        max_bytes=options.max_file_bytes,
        min_chars=options.min_chars,
    )
    work = [Path(source) for source in plan.add + plan.update]
    if stages is None:
        workers = options.workers if options.workers > 0 else auto_workers(work)
        stages = functools.partial(
            local_stages, embedder=embedder, workers=workers, on_chunks=on_chunks
        )
    embedded = stages(work, how)
    try:
        for group, vectors in embedded:
            for item in group:
                _stop_if(stop_requested)
                status = ADDED if item.source in plan.add else UPDATED
                if isinstance(item, Prepared):
                    outcome = _write_file(
                        item,
                        vectors[item.source],
                        status,
                        embedder=embedder,
                        store=store,
                        check_space=options.check_space,
                    )
                else:
                    outcome = FileOutcome(
                        item.source, FAILED, reason=item.reason, warnings=item.warnings
                    )
                if (
                    outcome.reason == VANISHED
                    and item.source in records
                    and _under(Path(item.source), found.whole_dirs)
                ):
                    # deleted during the run, from a folder given whole: as a deleted file
                    store.remove_file(item.source)
                    outcome = FileOutcome(item.source, REMOVED)
                outcomes.append(outcome)
                _notify(on_file, item.source, outcome.status)
    finally:
        embedded.close()
    for source in plan.remove:
        _stop_if(stop_requested)
        store.remove_file(source)
        outcomes.append(FileOutcome(source, REMOVED))
        _notify(on_file, source, REMOVED)
    return IngestReport(
        tuple(outcomes), time.perf_counter() - started, found.skipped, found.special
    )


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


def _stop_if(stop_requested: Callable[[], bool] | None) -> None:
    """Between files, the store is consistent: the place to honour an interrupt whose exception
    was lost.
    """
    if stop_requested is not None and stop_requested():
        raise KeyboardInterrupt


def _notify(callback: Progress | None, source: str, status: str) -> None:
    if callback is not None:
        callback(source, status)


# A group of files, in the order given, and the vectors of the prepared ones by source
Embedded = tuple[list[Prepared | Failure], dict[str, np.ndarray]]
# What reads, loads, chunks and embeds the files to write: (paths, chunking) -> groups in order
Stages = Callable[[list[Path], Chunking], Generator[Embedded, None, None]]


def local_stages(
    work: list[Path],
    how: Chunking,
    *,
    embedder: Embedder,
    workers: int,
    on_chunks: ChunkProgress | None,
) -> Generator[Embedded, None, None]:
    """This machine's stages: worker processes load and chunk (``workers`` > 1), this process
    embeds, about EMBED_SLICE chunks at a time across files. A remote embedder embeds the next
    group while the caller writes this one (the server works while the store does); a local
    one embeds between writes, as both would use the same cores."""
    prepared = prepare_files(work, how, workers=workers)
    ahead = ThreadPoolExecutor(max_workers=1) if embedder.kind == "remote" else None
    try:
        if ahead is None:
            for group in _groups(prepared):
                files = [item for item in group if isinstance(item, Prepared)]
                yield group, _embed_group(embedder, files, on_chunks)
            return
        pending: tuple[list[Prepared | Failure], Future] | None = None
        for group in _groups(prepared):
            files = [item for item in group if isinstance(item, Prepared)]
            future = ahead.submit(_embed_group, embedder, files, None)
            if pending is not None:
                yield _reported(*pending, on_chunks)
            pending = (group, future)
        if pending is not None:
            yield _reported(*pending, on_chunks)
    finally:
        prepared.close()
        if ahead is not None:
            ahead.shutdown(wait=True, cancel_futures=True)


def _reported(
    group: list[Prepared | Failure], future: Future, on_chunks: ChunkProgress | None
) -> Embedded:
    """A group embedded in the background, its progress reported from the caller's thread (the
    app's callbacks must not run on another thread)."""
    vectors: dict[str, np.ndarray] = future.result()
    if on_chunks is not None:
        for source, rows in vectors.items():
            on_chunks(source, len(rows))
    return group, vectors


def _groups(items: Iterator[Prepared | Failure]) -> Iterator[list[Prepared | Failure]]:
    """Consecutive files, in order, holding about EMBED_SLICE chunks between them: small files
    are embedded together (one batch, or concurrent requests to a remote embedder), a large
    one alone."""
    group: list[Prepared | Failure] = []
    chunks = 0
    for item in items:
        group.append(item)
        chunks += len(item.pieces) if isinstance(item, Prepared) else 0
        if chunks >= EMBED_SLICE:
            yield group
            group, chunks = [], 0
    if group:
        yield group


def _embed_group(
    embedder: Embedder, files: list[Prepared], on_chunks: ChunkProgress | None
) -> dict[str, np.ndarray]:
    """Each file's vectors, embedded EMBED_SLICE chunks a call across the files (progress is
    reported per file as its chunks are embedded)."""
    texts = [text for f in files for _, text in f.pieces]
    owners = [f.source for f in files for _ in f.pieces]
    parts = []
    for start in range(0, len(texts), EMBED_SLICE):
        parts.append(embedder.embed_passages(texts[start : start + EMBED_SLICE]))
        if on_chunks is not None:
            for source, n in Counter(owners[start : start + EMBED_SLICE]).items():
                on_chunks(source, n)
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    out: dict[str, np.ndarray] = {}
    start = 0
    for f in files:
        out[f.source] = vectors[start : start + len(f.pieces)]
        start += len(f.pieces)
    return out


def _write_file(
    file: Prepared,
    vectors: np.ndarray,
    status: str,
    *,
    embedder: Embedder,
    store: ChunkStore,
    check_space: bool,
) -> FileOutcome:
    """The file's chunks replace its old ones: ledger ``writing``, delete, write, ``complete``."""
    source, digest = file.source, file.digest
    chunks = [
        Chunk(
            id=chunk_id(source, digest, i),
            text=text,
            source=source,
            page=page,
            chunk_index=i,
            content_hash=digest,
        )
        for i, (page, text) in enumerate(file.pieces)
    ]
    if check_space:
        store.check_room(
            [c.text for c in chunks],
            embedder.dimension,
            what=f"{Path(source).name} ({len(chunks)} chunks)",
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
        source, status, chunks=len(chunks), warnings=file.warnings, languages=languages
    )
