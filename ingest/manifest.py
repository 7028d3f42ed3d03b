"""What ingestion must do, decided from the files on disk and the store's ledger.

Pure functions: given the files found (source -> content hash), the ledger of
the store and the folders that were given whole, say which files are new,
changed, unchanged, and which stored files are gone. A file whose ledger entry
is still ``writing`` (an interrupted run) counts as changed, so the next run
completes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.loaders import open_regular
from rag.store import COMPLETE, FileRecord


@dataclass(frozen=True)
class Plan:
    add: tuple[str, ...]
    update: tuple[str, ...]
    unchanged: tuple[str, ...]
    remove: tuple[str, ...]


def file_hash(path: Path) -> str:
    """SHA-256 of a regular file's bytes, read in blocks (a FIFO or device is refused, never
    waited on).
    """
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_id(source: str, content_hash: str, index: int) -> str:
    """Deterministic: the same file content gives the same ids; blank or repeated pages never
    collide.
    """
    return hashlib.sha256(f"{source}\n{content_hash}\n{index}".encode()).hexdigest()[:32]


def make_plan(
    found: Mapping[str, str],
    records: Mapping[str, FileRecord],
    whole_dirs: Sequence[Path],
    keep: Collection[str] = (),
) -> Plan:
    """Sort files into add/update/unchanged, and list stored files gone from the given folders.

    Removal only looks inside folders given whole: ingesting one file never
    deletes others, and a file outside the given folders is never touched.
    ``keep``: files that are there but could not be read (no hash); their stored
    chunks stay, as for any file that now fails.
    """
    add, update, unchanged = [], [], []
    for source, digest in found.items():
        record = records.get(source)
        if record is None:
            add.append(source)
        elif record.status != COMPLETE or record.content_hash != digest:
            update.append(source)
        else:
            unchanged.append(source)
    remove = [
        source
        for source in records
        if source not in found
        and source not in keep
        and any(_is_under(source, d) for d in whole_dirs)
    ]
    return Plan(tuple(add), tuple(update), tuple(unchanged), tuple(sorted(remove)))


def _is_under(source: str, folder: Path) -> bool:
    try:
        Path(source).relative_to(folder)
    except ValueError:
        return False
    return True
