"""Shared by the ingestion tests: the file types they ingest, a store in a folder, what it holds."""

from pathlib import Path

from rag.embedder import Embedder
from rag.store import ChunkStore, connect

EXTS = (".pdf", ".md", ".txt", ".html")


def open_store(path: Path, embedder: Embedder) -> ChunkStore:
    client = connect(mode="embedded", path=path, host="", port=1, ssl=False, token=None)
    return ChunkStore.open(client, "docs", embedder=embedder.name, dimension=embedder.dimension)


def stored_sources(store: ChunkStore) -> dict[str, int]:
    metas = store.chunks.get(include=["metadatas"])["metadatas"]
    counts: dict[str, int] = {}
    for m in metas:
        counts[m["source"]] = counts.get(m["source"], 0) + 1
    return counts
