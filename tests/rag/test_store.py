"""ChunkStore against real Chroma: an embedded PersistentClient and a real `chroma run` server."""

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.store import (
    COMPLETE,
    ChunkStore,
    EmbedderMismatchError,
    FileRecord,
    StoreError,
    StoreUnavailableError,
    check_embedded,
    connect,
)
from rag.types import Chunk
from tests.servers import ChromaServer, TokenProxy, free_port


def chunks_of(source: str, n: int, page: int | None = 1) -> list[Chunk]:
    return [
        Chunk(
            id=f"{source}-{i}",
            text=f"text {i} of {source}",
            source=source,
            page=page,
            chunk_index=i,
            content_hash="h",
        )
        for i in range(n)
    ]


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def client(tmp_path):
    return connect(
        mode="embedded", path=tmp_path / "chroma", host="", port=1, ssl=False, token=None
    )


def test_upsert_query_delete(client):
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    a, b = chunks_of("/a.md", 3), chunks_of("/b.md", 2, page=None)
    va, vb = vectors(3), vectors(2, seed=1)
    store.upsert_chunks(a, va, 1.0)
    store.upsert_chunks(b, vb, 1.0)
    assert store.count() == 5
    hits = store.query(va[1], 2)
    assert hits[0][0] == a[1]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert hits[0][1] >= hits[1][1]
    assert store.query(vb[0], 1)[0][0].page is None
    store.delete_source("/a.md")
    assert store.count() == 2
    assert store.query(va[1], 10)[0][0].source == "/b.md"


def test_writes_more_than_one_batch(client):
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    many = chunks_of("/big.pdf", 2500)
    store.upsert_chunks(many, vectors(2500), 1.0)
    assert store.count() == 2500


def test_ledger_roundtrip(client):
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    store.put_file(FileRecord("/a.md", "h1", COMPLETE, 3, 2.5))
    assert store.file_records() == {"/a.md": FileRecord("/a.md", "h1", COMPLETE, 3, 2.5)}
    store.delete_file("/a.md")
    assert store.file_records() == {}


def test_remove_file_takes_chunks_and_ledger_entry(client):
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    for source in ("/a.md", "/b.md"):
        store.upsert_chunks(chunks_of(source, 3), vectors(3), 1.0)
        store.put_file(FileRecord(source, "h", COMPLETE, 3, 1.0))
    store.remove_file("/a.md")
    assert list(store.file_records()) == ["/b.md"] and store.count() == 3
    assert {m["source"] for m in store.chunks.get(include=["metadatas"])["metadatas"]} == {"/b.md"}
    store.remove_file("/not-there.md")  # nothing to do, no error
    assert store.count() == 3


def test_embedder_mismatch_is_refused_and_data_kept(client):
    store = ChunkStore.open(client, "docs", embedder="model-a", dimension=8)
    store.upsert_chunks(chunks_of("/a.md", 2), vectors(2), 1.0)
    with pytest.raises(EmbedderMismatchError) as err:
        ChunkStore.open(client, "docs", embedder="model-b", dimension=16)
    assert (
        "model-a" in str(err.value) and "model-b" in str(err.value) and "--reset" in str(err.value)
    )
    assert ChunkStore.open(client, "docs", embedder="model-a", dimension=8).count() == 2


def test_missing_collection_when_not_creating(client):
    with pytest.raises(StoreError, match="python -m ingest"):
        ChunkStore.open(client, "docs", embedder="m", dimension=8, create=False)


def test_drop(client):
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    store.upsert_chunks(chunks_of("/a.md", 2), vectors(2), 1.0)
    ChunkStore.drop(client, "docs")
    assert ChunkStore.open(client, "docs", embedder="other", dimension=4).count() == 0


# A writer killed inside a transaction: it has changed pages of chroma.sqlite3 and saved their
# old contents in the rollback journal beside it (Chroma keeps SQLite's default journal mode).
KILLED_MID_WRITE = """
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size = 1")  # spill changed pages into the file before the commit
con.execute("BEGIN")
con.execute("CREATE TABLE half_written (x TEXT)")
con.executemany("INSERT INTO half_written VALUES (?)", [("x" * 400,)] * 3000)
os._exit(0)
"""


def test_a_write_killed_mid_transaction_is_rolled_back_not_called_damaged(client, tmp_path):
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    va = vectors(3)
    store.upsert_chunks(chunks_of("/a.md", 3), va, 1.0)
    db = tmp_path / "chroma" / "chroma.sqlite3"
    subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(db)], check=True)
    journal = db.with_name(db.name + "-journal")
    assert journal.stat().st_size > 0  # a hot journal: a read-only connection cannot roll it back
    with pytest.raises(sqlite3.OperationalError, match="readonly database"):
        sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True).execute("PRAGMA quick_check")

    check_embedded(tmp_path / "chroma")  # not "damaged": SQLite rolls the journal back

    assert not journal.exists()
    tables = sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    assert "half_written" not in {name for (name,) in tables}
    assert store.count() == 3 and store.query(va[1], 1)[0][0].id == "/a.md-1"


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A real Chroma server (`chroma run`) on a free localhost port."""
    server = ChromaServer(tmp_path_factory.mktemp("srv") / "data").start()
    yield server.port
    server.stop()


def test_server_mode(chroma_server):
    client = connect(
        mode="server", path=Path("."), host="127.0.0.1", port=chroma_server, ssl=False, token=None
    )
    store = ChunkStore.open(client, "srv-docs", embedder="m", dimension=8)
    store.upsert_chunks(chunks_of("/a.md", 3), vectors(3), 1.0)
    store.put_file(FileRecord("/a.md", "h", COMPLETE, 3, 1.0))
    assert store.count() == 3
    assert store.query(vectors(3)[2], 1)[0][0].chunk_index == 2
    assert set(store.file_records()) == {"/a.md"}


def test_unreachable_server_names_it():
    with pytest.raises(StoreError, match=r"http://127.0.0.1:\d+"):
        client = connect(
            mode="server", path=Path("."), host="127.0.0.1", port=free_port(), ssl=False, token=None
        )
        ChunkStore.open(client, "docs", embedder="m", dimension=8)


def test_server_restart_mid_session_is_named_then_recovers(tmp_path):
    """The same store object reports a stopped server clearly, then works again once it is back."""
    server = ChromaServer(tmp_path / "data").start()
    try:
        client = connect(
            mode="server", path=Path("."), host="127.0.0.1", port=server.port, ssl=False, token=None
        )
        store = ChunkStore.open(client, "restart", embedder="m", dimension=8)
        store.upsert_chunks(chunks_of("/a.md", 4), vectors(4), 1.0)
        server.stop(signal.SIGKILL)
        for call in (store.count, lambda: store.query(vectors(1)[0], 2), store.file_records):
            with pytest.raises(
                StoreUnavailableError, match=rf"http://127.0.0.1:{server.port} is unreachable"
            ):
                call()
        server.start()
        assert store.count() == 4
        assert store.query(vectors(4)[1], 1)[0][0].chunk_index == 1
    finally:
        server.stop()


def test_token_proxy_refuses_a_wrong_token_and_reports_a_stopped_server(tmp_path):
    server = ChromaServer(tmp_path / "data").start()
    proxy = TokenProxy(tmp_path / "proxy", server.port, "right-token").start()
    try:

        def client(token):
            return connect(
                mode="server",
                path=Path("."),
                host="127.0.0.1",
                port=proxy.port,
                ssl=False,
                token=token,
            )

        for token in (None, "wrong-token"):
            with pytest.raises(
                StoreUnavailableError, match=r"refused the token \(HTTP 401\).*store.token_env"
            ):
                ChunkStore.open(client(token), "docs", embedder="m", dimension=8)
        store = ChunkStore.open(client("right-token"), "docs", embedder="m", dimension=8)
        store.upsert_chunks(chunks_of("/a.md", 2), vectors(2), 1.0)
        server.stop()  # the proxy answers 502 Bad Gateway
        with pytest.raises(
            StoreUnavailableError, match=rf"http://127.0.0.1:{proxy.port} is unreachable"
        ):
            store.count()
        server.start()
        assert store.count() == 2
    finally:
        proxy.stop()
        server.stop()


def test_chroma_errors_on_a_full_disk_or_a_damaged_file_become_one_clear_error(tmp_path):
    from chromadb.errors import InternalError

    from rag.store import StoreDamagedError, StoreFullError, estimate_bytes, store_failure

    compaction = InternalError("Error in compaction: Failed to apply logs to the metadata segment")
    full = store_failure(tmp_path, str(tmp_path), compaction)
    assert isinstance(full, StoreFullError) and str(full).startswith(
        f"the disk holding the Chroma store at {tmp_path} is full ("
    )
    damaged = store_failure(
        tmp_path, str(tmp_path), InternalError("Failed to pull logs from the log store")
    )
    assert (
        isinstance(damaged, StoreDamagedError)
        and "restore the folder from a backup" in str(damaged).lower()
    )
    # ours: as is
    assert store_failure(tmp_path, str(tmp_path), ValueError("3 chunks but 2 embeddings")) is None
    # a server's disk is not ours to judge
    assert store_failure(None, "the Chroma server", compaction) is None
    # the space a write needs: grows with text and vectors, and keeps 8 MB for
    # the journal and the index
    small, large = estimate_bytes(["a" * 700] * 10, 384), estimate_bytes(["a" * 700] * 1000, 384)
    assert 8 * 2**20 < small < large and large - small > 990 * 700 * 10
