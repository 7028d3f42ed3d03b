"""Chroma storage: chunks with their vectors, and a per-file ledger.

Two collections per store: ``<name>`` holds one record per chunk (vector, text,
source, page, chunk index, content hash, ingest time); ``<name>-files`` holds
one record per ingested file (its content hash, chunk count and whether its
chunks were completely written). The ledger lives in Chroma itself, so an
embedded store and a server behave the same and a copied ``.chroma`` folder
keeps its history.

The chunk collection records which embedding model and dimension built it;
opening it with another embedder is refused instead of mixing vectors.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rag.types import Chunk

logger = logging.getLogger(__name__)

FILES_SUFFIX = "-files"
COMPLETE, WRITING = "complete", "writing"


class StoreError(RuntimeError):
    """The vector store is unreachable, missing or inconsistent with the config."""


class EmbedderMismatchError(StoreError):
    """The collection was built with a different embedding model or dimension."""


class StoreDamagedError(StoreError):
    """The embedded store's files fail their checks (a damaged or truncated chroma.sqlite3)."""


class StoreFullError(StoreError):
    """The disk holding the embedded store is full, or too full for the next write."""


class StoreUnavailableError(StoreError):
    """The Chroma server (or the proxy in front of it) did not answer, or refused the token.

    Nothing half-done is left behind by such a failure: the ingest ledger marks a
    file ``writing`` before its chunks go in, and the next run redoes it. The
    same client works again once the server is back.
    """


_GATEWAY = ("502 Bad Gateway", "503 Service", "504 Gateway", "Could not connect to a Chroma server")
_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def describe_client(client: Any) -> str:
    """Where a Chroma client points: the server's URL or the embedded store's folder."""
    try:
        s = client.get_settings()
    except Exception:  # an unusual client object: say nothing more specific
        return "the Chroma store"
    if s.chroma_server_host:
        scheme = "https" if s.chroma_server_ssl_enabled else "http"
        return f"the Chroma server at {scheme}://{s.chroma_server_host}:{s.chroma_server_http_port}"
    return f"the Chroma store at {s.persist_directory}"


def embedded_path(client: Any) -> Path | None:
    """The folder of an embedded store; None for a server (or a client that does not say)."""
    try:
        s = client.get_settings()
    except Exception:
        return None
    return None if s.chroma_server_host or not s.persist_directory else Path(s.persist_directory)


def server_failure(where: str, exc: BaseException) -> StoreUnavailableError | None:
    """A clear error for an unreachable server or a refused token; None for any other exception."""
    import httpx

    text = str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return StoreUnavailableError(
            f"{where} did not answer in time ({type(exc).__name__}); is it overloaded "
            "or restarting? Try again in a moment."
        )
    if isinstance(exc, httpx.TransportError) or any(mark in text for mark in _GATEWAY):
        cause = (
            _first_line(text)
            if not text.lstrip().startswith("<")
            else "the proxy in front of it got no answer"
        )
        return StoreUnavailableError(
            f"{where} is unreachable ({cause}). Start it, or check store.host and "
            "store.port; nothing stored was changed, try again when it is back."
        )
    # chromadb.errors.NotFoundError
    if type(exc).__name__ == "NotFoundError" and "does not exist" in text:
        return StoreUnavailableError(
            f"{where} no longer has the collection this session opened (restarted "
            "without its data, or reset?); reconnecting. If it stays missing, run "
            "python -m ingest again."
        )
    if "Unauthorized" in text or "401" in text.split("\n", 1)[0]:
        return StoreUnavailableError(
            f"{where} refused the token (HTTP 401): put the server's token in the "
            "environment variable named by store.token_env (CHROMA_TOKEN by default)."
        )
    return None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    return line[:200]


SQLITE_FILE = "chroma.sqlite3"
_SQLITE_HEADER = b"SQLite format 3\x00"
# Chroma's words when the disk filled up under it (SQLite's, the OS's, or a compaction
# that could not write).
_FULL = ("No space left", "database or disk is full", "disk is full", "Failed to apply logs")
_DAMAGED = (
    "malformed",
    "not a database",
    "Failed to pull logs",
    "Utf8Error",
    # the last: Chroma's compactor thread panicked on what it read
    "Failed to receive response",
)
# under this much free space, a failed Chroma write is put down to the full disk
LOW_SPACE = 64 * 2**20


def _is_panic(exc: BaseException) -> bool:
    """Chroma's Rust core panicking surfaces as pyo3's PanicException, a BaseException."""
    return type(exc).__name__ == "PanicException"


def free_bytes(path: Path) -> int:
    """Free space for an unprivileged writer on the file system that holds ``path`` (or its
    nearest parent).
    """
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MB" if n_bytes >= 100 * 2**20 else f"{n_bytes / 2**20:.1f} MB"


def full_disk_error(
    path: Path, exc: BaseException | None = None, *, needed: int = 0, what: str = ""
) -> StoreFullError:
    """One line: the disk, the free space, what to do; the store is consistent either way."""
    free = free_bytes(path)
    if needed:
        state = (
            f"has too little free space: {mib(free)} free, about {mib(needed)} needed"
            f"{' to write ' + what if what else ''}; nothing was written"
        )
    else:
        state = f"is full ({mib(free)} free; Chroma: {_first_line(str(exc))})"
    return StoreFullError(
        f"the disk holding the Chroma store at {path} {state}. Free some space (or move store.path "
        "to a larger "
        "disk) and run the same command again: nothing stored is lost, a file left half-written "
        "is redone then, "
        f"and answers leave it out until it is."
    )


def damaged_error(path: Path, problem: str) -> StoreDamagedError:
    return StoreDamagedError(
        f"the Chroma store at {path} is damaged: {problem}. Nothing was written to it. Restore the "
        "folder from a "
        "backup, or rebuild it from your documents with `python -m ingest PATH --reset` (the "
        "damaged folder "
        f"is kept beside the new one, renamed *.damaged-DATE)."
    )


def check_embedded(path: Path) -> None:
    """Refuse a store folder whose database is missing, empty, not SQLite or fails SQLite's
    quick_check.

    Chroma opening such a folder writes a fresh, empty schema over a zero-byte database (destroying
    what a recovery could use) or panics in its Rust core. A folder that does not exist yet, or is
    empty, is a new store and passes. quick_check reads the whole database file once.
    """
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return
    db = path / SQLITE_FILE
    if not db.is_file():
        raise damaged_error(path, f"it holds files but no {SQLITE_FILE}")
    with db.open("rb") as fh:
        head = fh.read(len(_SQLITE_HEADER))
    if not head:
        raise damaged_error(path, f"{SQLITE_FILE} is empty (0 bytes)")
    if head != _SQLITE_HEADER:
        raise damaged_error(path, f"{SQLITE_FILE} is not an SQLite database")
    problem = _quick_check(db)
    if problem is not None:
        raise damaged_error(path, f"{SQLITE_FILE} fails SQLite's check ({problem})")


def _quick_check(db: Path) -> str | None:
    """SQLite's quick_check and Chroma's write log, read-only (except for SQLite rolling back a
    killed writer's journal first, see below); None when both pass, else the first finding.

    The log (``embeddings_queue``) holds writes Chroma has not folded into its segments yet; a
    record there that is not UTF-8 JSON makes Chroma's Rust core panic on the next read, so it
    is read here first.
    """
    try:
        try:
            read = _read_for_check(db, "ro")
        except sqlite3.OperationalError as exc:
            if "readonly database" not in str(exc):
                raise
            # A process killed inside a transaction leaves a hot rollback journal beside the
            # database (Chroma keeps SQLite's default journal mode), which SQLite rolls back
            # before anyone reads: a read-only connection cannot ("attempt to write a readonly
            # database"; seen after the crash tests' kills). The rollback is SQLite's own, the
            # same Chroma's connection runs on opening: let a read-write connection run it.
            read = _read_for_check(db, "rw")
    except sqlite3.Error as exc:
        return str(exc)
    if read is None:
        return "no Chroma tables in it"
    rows, log = read
    findings = [
        line
        for line in (str(r[0]) for r in rows)
        for line in line.splitlines()
        if not line.startswith("*** in database")
    ]
    if findings and findings[0] != "ok":
        more = f" and {len(findings) - 1} more" if len(findings) > 1 else ""
        return f"{findings[0][:160]}{more}"
    for seq_id, raw in log:
        try:
            json.loads(bytes(raw).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return f"record {seq_id} of its write log (embeddings_queue) is not readable text"
    return None


def _read_for_check(db: Path, mode: str) -> tuple[list, list] | None:
    """quick_check's rows and the write log's records, or None when there are no Chroma tables."""
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode={mode}", uri=True)
    try:
        rows = con.execute("PRAGMA quick_check").fetchall()
        if not con.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'embeddings_queue'"
        ).fetchone():
            return None
        log = con.execute(
            "SELECT seq_id, CAST(metadata AS BLOB) FROM embeddings_queue WHERE metadata IS NOT NULL"
        ).fetchall()
    finally:
        con.close()
    return rows, log


def set_aside(path: Path) -> Path:
    """Rename a (damaged) store folder to ``<name>.damaged-<time>`` beside it; the new name."""
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    path.rename(target)
    return target


def store_failure(
    path: Path | None, where: str, exc: BaseException, *, storage: bool = False
) -> StoreError | None:
    """A full disk or a damaged database behind a Chroma error, as one clear StoreError; None
    otherwise. ``storage``: the exception came from Chroma opening its files, whatever its type."""
    text = str(exc)
    if path is None:
        return server_failure(where, exc) if isinstance(exc, Exception) else None
    from_storage = (
        storage
        or type(exc).__module__.startswith("chromadb")
        or isinstance(exc, (OSError, sqlite3.Error))
    )
    if (
        any(mark in text for mark in _FULL)
        or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
        or from_storage
        and free_bytes(path) < LOW_SPACE
    ):
        return full_disk_error(path, exc)
    if _is_panic(exc) or any(mark in text for mark in _DAMAGED):
        return damaged_error(path, f"Chroma could not read it ({_first_line(text)})")
    return None


def _guarded(method: _Fn) -> _Fn:
    """Turn a lost server, a refused token, a full disk or a damaged database inside a store method
    into one StoreError that says what happened and what to do."""

    @functools.wraps(method)
    def wrapper(self: ChunkStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreError:
            raise
        # chromadb raises bare Exception for gateway errors, a BaseException on panics
        except BaseException as exc:
            if not isinstance(exc, Exception) and not _is_panic(exc):
                raise  # KeyboardInterrupt, SystemExit
            failure = store_failure(self.path, self.location, exc)
            if failure is None:
                raise
            raise failure from exc

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class FileRecord:
    source: str
    content_hash: str
    status: str  # COMPLETE or WRITING
    n_chunks: int
    ingest_time: float


def connect(*, mode: str, path: Path, host: str, port: int, ssl: bool, token: str | None) -> Any:
    """A Chroma client: embedded (PersistentClient at ``path``) or a server (HttpClient)."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    if mode == "embedded":
        check_embedded(path)
        try:
            return chromadb.PersistentClient(path=str(path), settings=settings)
        # chromadb raises bare Exception subclasses (and panics) from Rust bindings
        except BaseException as exc:
            if not isinstance(exc, Exception) and not _is_panic(exc):
                raise
            raise store_failure(path, str(path), exc, storage=True) or StoreError(
                f"could not open the Chroma store at {path}: {exc}"
            ) from exc
    headers = {"Authorization": f"Bearer {token}"} if token else None
    where = f"the Chroma server at {'https' if ssl else 'http'}://{host}:{port}"
    try:
        return chromadb.HttpClient(
            host=host, port=port, ssl=ssl, headers=headers, settings=settings
        )
    except Exception as exc:  # connection errors surface as ValueError or httpx errors
        failure = server_failure(where, exc)
        if failure is not None:
            raise failure from exc
        raise StoreError(f"could not connect to {where}: {_first_line(str(exc))}") from exc


class ChunkStore:
    """Chunk and ledger collections of one Chroma store, checked against the embedder."""

    def __init__(self, client: Any, chunks: Any, files: Any) -> None:
        self.client = client
        self.chunks = chunks
        self.files = files
        self.location = describe_client(client)
        self.path = embedded_path(client)  # None for a server

    @classmethod
    def open(
        cls, client: Any, name: str, *, embedder: str, dimension: int, create: bool = True
    ) -> ChunkStore:
        """Open (or create) collection ``name``; refuse one built by another embedder."""
        try:
            return cls._open(client, name, embedder=embedder, dimension=dimension, create=create)
        except StoreError:
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception) and not _is_panic(exc):
                raise
            failure = store_failure(embedded_path(client), describe_client(client), exc)
            if failure is None:
                raise
            raise failure from exc

    @classmethod
    def _open(
        cls, client: Any, name: str, *, embedder: str, dimension: int, create: bool
    ) -> ChunkStore:
        existing = {c.name if hasattr(c, "name") else str(c) for c in client.list_collections()}
        if name not in existing and not create:
            others = sorted(c for c in existing if c + FILES_SUFFIX in existing)
            held = f" (this store holds: {', '.join(others)})" if others else ""
            raise StoreError(
                f"collection '{name}' does not exist yet{held}; add documents first: "
                f"python -m ingest docs/ --collection {name}"
            )
        chunks = client.get_or_create_collection(
            name,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedder": embedder, "dimension": dimension},
            embedding_function=None,
        )
        _check_embedder(name, chunks.metadata or {}, embedder, dimension)
        files = client.get_or_create_collection(name + FILES_SUFFIX, embedding_function=None)
        return cls(client, chunks, files)

    @staticmethod
    def drop(client: Any, name: str) -> None:
        """Delete both collections of a store (``--reset``)."""
        existing = {c.name if hasattr(c, "name") else str(c) for c in client.list_collections()}
        for coll in (name, name + FILES_SUFFIX):
            if coll in existing:
                client.delete_collection(coll)

    @_guarded
    def count(self) -> int:
        return int(self.chunks.count())

    def _batches(self, n: int) -> Iterable[slice]:
        step = max(1, min(int(self.client.get_max_batch_size()), 1000))
        return (slice(i, min(i + step, n)) for i in range(0, n, step))

    @_guarded
    def upsert_chunks(
        self, chunks: Sequence[Chunk], embeddings: np.ndarray, ingest_time: float
    ) -> None:
        if len(chunks) != len(embeddings):
            raise ValueError(f"{len(chunks)} chunks but {len(embeddings)} embeddings")
        for part in self._batches(len(chunks)):
            batch = chunks[part]
            self.chunks.upsert(
                ids=[c.id for c in batch],
                embeddings=embeddings[part],
                documents=[c.text for c in batch],
                metadatas=[_chunk_metadata(c, ingest_time) for c in batch],
            )

    @_guarded
    def delete_source(self, source: str) -> None:
        self.chunks.delete(where={"source": source})

    @_guarded
    def query(
        self, embedding: np.ndarray, k: int, *, exclude_sources: Sequence[str] = ()
    ) -> list[tuple[Chunk, float]]:
        """The k nearest chunks with cosine similarity (1 - cosine distance), best first; none of
        the files in ``exclude_sources``."""
        n = min(k, self.count())
        if n == 0:
            return []
        where = {"source": {"$nin": list(exclude_sources)}} if exclude_sources else None
        res = self.chunks.query(
            query_embeddings=[embedding],
            n_results=n,
            where=where,
            include=["documents", "metadatas", "distances"],
        )
        return [
            (_chunk_from(cid, doc, meta), 1.0 - float(dist))
            for cid, doc, meta, dist in zip(
                res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0]
            )
        ]

    def all_texts(self, page: int = 5000) -> tuple[list[str], list[str]]:
        """Every chunk's id and text, read page by page (for the BM25 index)."""
        return self._read_all(["documents"], page)

    def chunk_ids(self, page: int = 50000) -> list[str]:
        """Every chunk's id (no texts or vectors: cheap even on a large collection)."""
        return self._read_all([], page)[0]

    @_guarded
    def _read_all(self, include: list[str], page: int) -> tuple[list[str], list[str]]:
        ids: list[str] = []
        texts: list[str] = []
        while True:
            res = self.chunks.get(include=include, limit=page, offset=len(ids))
            ids += res["ids"]
            texts += res["documents"] or []
            if len(res["ids"]) < page:
                return ids, texts

    def fingerprint(self) -> str:
        """Changes whenever a file is added, changed, half-written or removed (and with the
        chunk count).
        """
        records = sorted((r.source, r.content_hash, r.status) for r in self.file_records().values())
        return hashlib.sha256(repr((records, self.count())).encode()).hexdigest()

    @_guarded
    def get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids, in the order given (ids not in the store are left out)."""
        if not ids:
            return []
        res = self.chunks.get(ids=list(ids), include=["documents", "metadatas"])
        found = {
            cid: _chunk_from(cid, doc, meta)
            for cid, doc, meta in zip(res["ids"], res["documents"], res["metadatas"])
        }
        return [found[i] for i in ids if i in found]

    @_guarded
    def file_records(self) -> dict[str, FileRecord]:
        res = self.files.get(include=["metadatas"])
        return {meta["source"]: _record_from(meta) for meta in res["metadatas"]}

    def half_written(self) -> dict[str, int]:
        """Files whose ledger entry is ``writing`` (an ingest stopped inside them): source -> chunk
        count. Answers leave their chunks out until an ingest finishes them."""
        return {s: r.n_chunks for s, r in self.file_records().items() if r.status != COMPLETE}

    def check_room(self, texts: Sequence[str], dimension: int, what: str) -> None:
        """Before a write into an embedded store: StoreFullError when its disk clearly has
        too little space.
        """
        if self.path is None:
            return
        needed = estimate_bytes(texts, dimension)
        if free_bytes(self.path) < needed:
            raise full_disk_error(self.path, needed=needed, what=what)

    @_guarded
    def put_file(self, record: FileRecord) -> None:
        self.files.upsert(
            ids=[record.source],
            embeddings=[[0.0]],
            metadatas=[
                {
                    "source": record.source,
                    "content_hash": record.content_hash,
                    "status": record.status,
                    "n_chunks": record.n_chunks,
                    "ingest_time": record.ingest_time,
                }
            ],
        )

    @_guarded
    def delete_file(self, source: str) -> None:
        self.files.delete(ids=[source])

    @_guarded
    def remove_file(self, source: str) -> None:
        """Remove a file's chunks and its ledger entry, recoverably.

        The entry is marked ``writing`` first: if the removal is cut short, the next
        ingest redoes that file (or removes it, if it is gone) instead of trusting a
        ``complete`` entry whose chunks are already deleted.
        """
        record = self.file_records().get(source)
        if record is not None:
            self.put_file(dataclasses.replace(record, status=WRITING))
        self.delete_source(source)
        self.delete_file(source)


def estimate_bytes(texts: Sequence[str], dimension: int) -> int:
    """Disk space that writing these chunks takes in an embedded store, on the safe side.

    Measured here: about 12 KB a chunk of 750 bytes of text with 384-d vectors. The vector is
    stored three times (Chroma's write log, its table, the HNSW index) and the text about ten
    times its size (documents, the trigram full-text index, the log); plus 1 KB of metadata a
    chunk, a quarter more, and 8 MB for SQLite's journal and the index files' growth.
    """
    per_chunk = sum(10 * len(t.encode("utf-8")) + 12 * dimension + 1024 for t in texts)
    return int(per_chunk * 1.25) + 8 * 2**20


def _check_embedder(name: str, meta: dict[str, Any], embedder: str, dimension: int) -> None:
    stored_model, stored_dim = meta.get("embedder"), meta.get("dimension")
    if stored_model is None:
        return
    if stored_model != embedder or int(stored_dim) != dimension:
        raise EmbedderMismatchError(
            f"collection '{name}' was built with embedder '{stored_model}' ({stored_dim}-d) but "
            "the config "
            f"uses '{embedder}' ({dimension}-d); vectors of different models cannot be mixed. "
            "Rebuild it with "
            "`python -m ingest PATH --reset`, or use a new collection (--collection NAME, or "
            "store.collection)."
        )


def _chunk_metadata(chunk: Chunk, ingest_time: float) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": chunk.source,
        "chunk_index": chunk.chunk_index,
        "content_hash": chunk.content_hash,
        "ingest_time": ingest_time,
    }
    if chunk.page is not None:
        meta["page"] = chunk.page
    return meta


def _chunk_from(cid: str, text: str, meta: dict[str, Any]) -> Chunk:
    page = meta.get("page")
    return Chunk(
        id=cid,
        text=text,
        source=str(meta["source"]),
        page=int(page) if page is not None else None,
        chunk_index=int(meta["chunk_index"]),
        content_hash=str(meta["content_hash"]),
    )


def _record_from(meta: dict[str, Any]) -> FileRecord:
    return FileRecord(
        source=str(meta["source"]),
        content_hash=str(meta["content_hash"]),
        status=str(meta["status"]),
        n_chunks=int(meta["n_chunks"]),
        ingest_time=float(meta["ingest_time"]),
    )
