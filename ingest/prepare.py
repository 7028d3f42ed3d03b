"""A file made ready to embed: read once, hashed, loaded and chunked; no model, no store.

This is the CPU-bound half of ingestion (PDF parsing, tokenising for chunk sizes), so it
runs in worker processes when ``ingest.workers`` > 1 (:func:`prepare_files`); it imports
only the loaders and the chunker, so a worker starts in a fraction of a second. What it
returns is plain data: a :class:`Prepared` file or the :class:`Failure` to report, in the
order the files were given, whatever order the workers finish in.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ingest.chunking import chunk_document
from ingest.loaders import LoadError, content_chars, load, read_regular
from ingest.manifest import content_hash

logger = logging.getLogger(__name__)

VANISHED = (
    "the file disappeared during the run (deleted or moved); its stored chunks, if any, are kept"
)


@dataclass(frozen=True)
class Chunking:
    """How a file becomes chunks: sizes in the embedder's tokens, and the limits."""

    tokenizer: Any
    size: int
    overlap: int
    max_bytes: int
    min_chars: int


@dataclass(frozen=True)
class Prepared:
    """A file's chunks, (page, text) in order, and the hash of the bytes they came from."""

    source: str
    digest: str
    pieces: tuple[tuple[int | None, str], ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    """Why a file gives no chunks this run (its stored chunks, if any, are kept)."""

    source: str
    reason: str
    warnings: tuple[str, ...] = ()


def read_failure(exc: OSError | LoadError) -> str:
    if isinstance(exc, LoadError):
        return exc.reason
    return f"cannot read: {exc.strerror or exc}"


def size_text(n_bytes: int) -> str:
    """ "3.0 MB", or the bytes when that would round to 0.0 MB."""
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 50_000 else f"{n_bytes:,} bytes"


def prepare_file(path: Path, how: Chunking) -> Prepared | Failure:
    """Read the file once and chunk what was read, under the hash of those bytes."""
    source = str(path)
    try:
        n_bytes = path.stat().st_size
        if n_bytes > how.max_bytes:
            return Failure(
                source,
                f"file is {size_text(n_bytes)}, over the limit ingest.max_file_mb = "
                f"{how.max_bytes / 1e6:g}",
            )
        data = read_regular(path)
    except FileNotFoundError:
        return Failure(source, VANISHED)
    except (OSError, LoadError) as exc:
        return Failure(source, read_failure(exc))
    digest = content_hash(data)
    try:
        doc = load(path, min_chars=how.min_chars, data=data)
    except LoadError as exc:
        return Failure(source, exc.reason)
    pieces = tuple(
        (page, text)
        for page, text in chunk_document(
            doc, tokenizer=how.tokenizer, size=how.size, overlap=how.overlap
        )
        if content_chars(text, stop=how.min_chars) >= how.min_chars
    )
    if not pieces:
        return Failure(source, "no text left after chunking", tuple(doc.warnings))
    return Prepared(source, digest, pieces, tuple(doc.warnings))


# --- worker processes -------------------------------------------------------------------------

_WORKER_CHUNKING: Chunking | None = None


def _start_worker(how: Chunking) -> None:
    """Each worker keeps the chunking settings (the tokenizer is sent once, not per file) and
    leaves Ctrl-C and SIGTERM to the main process, which stops the run between files."""
    global _WORKER_CHUNKING
    _WORKER_CHUNKING = how
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A worker holds both ends of its task queue, so it never sees the main process die: it
    # watches the parent's sentinel instead and goes with it (SIGKILL, a crash).
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)


def _prepare_in_worker(source: str) -> Prepared | Failure:
    assert _WORKER_CHUNKING is not None
    return prepare_file(Path(source), _WORKER_CHUNKING)


def _spawn_is_safe() -> bool:
    """Whether a spawned worker can start without running the main script again.

    A worker first imports the parent's main module: by name when it was run as one (``python -m
    ingest``: a ``__main__`` module is never re-run), else from its path, which runs the script
    again: a Streamlit app (or a test driving one) is such a script, and a worker that fails
    there leaves the parent waiting for it forever. There, files are prepared in this process.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        return True
    return getattr(main, "__file__", None) is None


def prepare_files(
    paths: Sequence[Path], how: Chunking, *, workers: int
) -> Iterator[Prepared | Failure]:
    """Each file prepared, in the order given. With ``workers`` > 1 (and more than one file),
    that many processes prepare them, at most ``2 * workers`` files ahead of the caller, so
    memory stays bounded however many files there are; else this process does, one at a time.

    Closing the iterator early (an interrupt, an error downstream) cancels what has not
    started and lets the workers go."""
    if workers > 1 and len(paths) > 1 and not _spawn_is_safe():
        logger.info(
            "loading and chunking in this process: the main module is a script (%s) that each "
            "worker process would run again",
            getattr(sys.modules.get("__main__"), "__file__", "?"),
        )
        workers = 1
    if workers <= 1 or len(paths) <= 1:
        for path in paths:
            yield prepare_file(path, how)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding model threads
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(paths)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(how,),
    )
    ahead = 2 * workers
    pending: list[Future] = []
    queue = iter(paths)
    try:
        for path in queue:
            pending.append(pool.submit(_prepare_in_worker, str(path)))
            if len(pending) >= ahead:
                break
        while pending:
            done = pending.pop(0).result()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(pool.submit(_prepare_in_worker, str(nxt)))
            yield done
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
