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
import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np

from rag.types import Chunk

logger = logging.getLogger(__name__)

FILES_SUFFIX = "-files"
COMPLETE, WRITING = "complete", "writing"


class StoreError(RuntimeError):
    """The vector store is unreachable, missing or inconsistent with the config."""


class EmbedderMismatchError(StoreError):
    """The collection was built with a different embedding model or dimension."""


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


def server_failure(where: str, exc: BaseException) -> StoreUnavailableError | None:
    """A clear error for an unreachable server or a refused token; None for any other exception."""
    import httpx

    text = str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return StoreUnavailableError(f"{where} did not answer in time ({type(exc).__name__}); is it overloaded "
                                     "or restarting? Try again in a moment.")
    if isinstance(exc, httpx.TransportError) or any(mark in text for mark in _GATEWAY):
        cause = _first_line(text) if not text.lstrip().startswith("<") else "the proxy in front of it got no answer"
        return StoreUnavailableError(f"{where} is unreachable ({cause}). Start it, or check store.host and "
                                     "store.port; nothing stored was changed, try again when it is back.")
    if type(exc).__name__ == "NotFoundError" and "does not exist" in text:  # chromadb.errors.NotFoundError
        return StoreUnavailableError(f"{where} no longer has the collection this session opened (restarted "
                                     "without its data, or reset?); reconnecting. If it stays missing, run "
                                     "python -m ingest again.")
    if "Unauthorized" in text or "401" in text.split("\n", 1)[0]:
        return StoreUnavailableError(f"{where} refused the token (HTTP 401): put the server's token in the "
                                     "environment variable named by store.token_env (CHROMA_TOKEN by default).")
    return None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no details"
    return line[:200]


def _guarded(method: _Fn) -> _Fn:
    """Turn a lost server or a refused token inside a store method into StoreUnavailableError."""

    @functools.wraps(method)
    def wrapper(self: "ChunkStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreError:
            raise
        except Exception as exc:  # chromadb raises bare Exception for gateway errors
            failure = server_failure(self.location, exc)
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
        try:
            return chromadb.PersistentClient(path=str(path), settings=settings)
        except Exception as exc:  # chromadb raises bare Exception subclasses from Rust bindings
            raise StoreError(f"could not open the Chroma store at {path}: {exc}") from exc
    headers = {"Authorization": f"Bearer {token}"} if token else None
    where = f"the Chroma server at {'https' if ssl else 'http'}://{host}:{port}"
    try:
        return chromadb.HttpClient(host=host, port=port, ssl=ssl, headers=headers, settings=settings)
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

    @classmethod
    def open(cls, client: Any, name: str, *, embedder: str, dimension: int, create: bool = True) -> "ChunkStore":
        """Open (or create) collection ``name``; refuse one built by another embedder."""
        try:
            return cls._open(client, name, embedder=embedder, dimension=dimension, create=create)
        except StoreError:
            raise
        except Exception as exc:
            failure = server_failure(describe_client(client), exc)
            if failure is None:
                raise
            raise failure from exc

    @classmethod
    def _open(cls, client: Any, name: str, *, embedder: str, dimension: int, create: bool) -> "ChunkStore":
        existing = {c.name if hasattr(c, "name") else str(c) for c in client.list_collections()}
        if name not in existing and not create:
            raise StoreError(
                f"collection '{name}' does not exist yet; add documents first: python -m ingest docs/"
            )
        chunks = client.get_or_create_collection(
            name, configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedder": embedder, "dimension": dimension}, embedding_function=None,
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
    def upsert_chunks(self, chunks: Sequence[Chunk], embeddings: np.ndarray, ingest_time: float) -> None:
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
    def query(self, embedding: np.ndarray, k: int) -> list[tuple[Chunk, float]]:
        """The k nearest chunks with cosine similarity (1 - cosine distance), best first."""
        n = min(k, self.count())
        if n == 0:
            return []
        res = self.chunks.query(query_embeddings=[embedding], n_results=n,
                                include=["documents", "metadatas", "distances"])
        return [
            (_chunk_from(cid, doc, meta), 1.0 - float(dist))
            for cid, doc, meta, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0])
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
        """Changes whenever a file is added, changed, half-written or removed (and with the chunk count)."""
        records = sorted((r.source, r.content_hash, r.status) for r in self.file_records().values())
        return hashlib.sha256(repr((records, self.count())).encode()).hexdigest()

    @_guarded
    def get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids, in the order given (ids not in the store are left out)."""
        if not ids:
            return []
        res = self.chunks.get(ids=list(ids), include=["documents", "metadatas"])
        found = {cid: _chunk_from(cid, doc, meta) for cid, doc, meta in zip(res["ids"], res["documents"], res["metadatas"])}
        return [found[i] for i in ids if i in found]

    @_guarded
    def file_records(self) -> dict[str, FileRecord]:
        res = self.files.get(include=["metadatas"])
        return {meta["source"]: _record_from(meta) for meta in res["metadatas"]}

    @_guarded
    def put_file(self, record: FileRecord) -> None:
        self.files.upsert(ids=[record.source], embeddings=[[0.0]], metadatas=[{
            "source": record.source, "content_hash": record.content_hash, "status": record.status,
            "n_chunks": record.n_chunks, "ingest_time": record.ingest_time,
        }])

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


def _check_embedder(name: str, meta: dict[str, Any], embedder: str, dimension: int) -> None:
    stored_model, stored_dim = meta.get("embedder"), meta.get("dimension")
    if stored_model is None:
        return
    if stored_model != embedder or int(stored_dim) != dimension:
        raise EmbedderMismatchError(
            f"collection '{name}' was built with embedder '{stored_model}' ({stored_dim}-d) but the config "
            f"uses '{embedder}' ({dimension}-d); vectors of different models cannot be mixed. Rebuild it with "
            f"`python -m ingest PATH --reset`, or set store.collection to a new name."
        )


def _chunk_metadata(chunk: Chunk, ingest_time: float) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "source": chunk.source, "chunk_index": chunk.chunk_index,
        "content_hash": chunk.content_hash, "ingest_time": ingest_time,
    }
    if chunk.page is not None:
        meta["page"] = chunk.page
    return meta


def _chunk_from(cid: str, text: str, meta: dict[str, Any]) -> Chunk:
    page = meta.get("page")
    return Chunk(id=cid, text=text, source=str(meta["source"]), page=int(page) if page is not None else None,
                 chunk_index=int(meta["chunk_index"]), content_hash=str(meta["content_hash"]))


def _record_from(meta: dict[str, Any]) -> FileRecord:
    return FileRecord(source=str(meta["source"]), content_hash=str(meta["content_hash"]), status=str(meta["status"]),
                      n_chunks=int(meta["n_chunks"]), ingest_time=float(meta["ingest_time"]))
