"""``python -m ingest --check``: does the store hold what its ledger says?

Read-only. The embedded store's database has already passed SQLite's quick_check when it
opened (``rag.store.check_embedded``). Then, per file in the ledger: the entry is complete,
the chunks stored for it are as many as the entry says and carry its content hash; no chunk
belongs to a file the ledger does not know; every vector is there, of the collection's
dimension, finite and not zero; and the vector index finds a sample of chunks by their own
vectors. Each finding names the file and what to run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from rag.store import COMPLETE, ChunkStore

PAGE = 2000  # chunks read per call
INDEX_SAMPLE = 24  # chunks looked up by their own vector (spread over the collection)


@dataclass(frozen=True)
class Finding:
    source: str  # a file, or "" for the collection as a whole
    problem: str


@dataclass
class StoreCheck:
    files: int = 0
    chunks: int = 0
    vectors: int = 0
    looked_up: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def check_store(store: ChunkStore, dimension: int) -> StoreCheck:
    result = StoreCheck()
    records = store.file_records()
    result.files = len(records)
    per_source: Counter[str] = Counter()
    hashes: dict[str, set[str]] = defaultdict(set)
    bad_vectors: Counter[str] = Counter()
    sample: list[tuple[str, str, np.ndarray]] = []
    total = store.count()
    stride = max(1, total // INDEX_SAMPLE)
    offset = 0
    while True:
        res = store.chunks.get(include=["metadatas", "embeddings"], limit=PAGE, offset=offset)
        ids, metas, vectors = res["ids"], res["metadatas"], res["embeddings"]
        for i, (cid, meta) in enumerate(zip(ids, metas)):
            source = str(meta.get("source", ""))
            per_source[source] += 1
            hashes[source].add(str(meta.get("content_hash", "")))
            vector = (
                None
                if vectors is None or i >= len(vectors)
                else np.asarray(vectors[i], dtype=np.float32)
            )
            if (
                vector is None
                or vector.shape != (dimension,)
                or not np.isfinite(vector).all()
                or not np.any(vector)
            ):
                bad_vectors[source] += 1
            elif (offset + i) % stride == 0 and len(sample) < INDEX_SAMPLE:
                sample.append((cid, source, vector))
        result.vectors += len(ids)
        offset += len(ids)
        if len(ids) < PAGE:
            break
    result.chunks = offset
    for source, record in sorted(records.items()):
        stored = per_source.get(source, 0)
        if record.status != COMPLETE:
            result.findings.append(
                Finding(
                    source,
                    f"half-written (ledger: {record.status}): an ingest stopped "
                    "inside it; ingest it again to finish it",
                )
            )
        elif stored != record.n_chunks:
            result.findings.append(
                Finding(
                    source,
                    f"{stored} chunks stored, the ledger says {record.n_chunks}; "
                    "ingest it again to rewrite it",
                )
            )
        elif stored and hashes[source] != {record.content_hash}:
            result.findings.append(
                Finding(
                    source,
                    "chunks of another version of the file are stored; "
                    "ingest it again to rewrite it",
                )
            )
    for source in sorted(set(per_source) - set(records)):
        result.findings.append(
            Finding(
                source,
                f"{per_source[source]} chunks of a file the ledger does not know; "
                "rebuild with python -m ingest PATH --reset",
            )
        )
    for source, n in sorted(bad_vectors.items()):
        result.findings.append(
            Finding(
                source,
                f"{n} chunks without a usable vector (missing, of another "
                f"dimension than {dimension}, zero or not finite); ingest it again",
            )
        )
    for cid, source, vector in sample:
        hits = store.chunks.query(query_embeddings=[vector], n_results=min(10, total), include=[])
        result.looked_up += 1
        if cid not in hits["ids"][0]:
            result.findings.append(
                Finding(
                    source,
                    "the vector index does not find one of its chunks by its own "
                    "vector; rebuild with python -m ingest PATH --reset",
                )
            )
    return result
