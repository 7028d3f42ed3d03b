"""Ingestion end to end: real files, the packaged MiniLM embedder, a real embedded Chroma store."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.runner import (
    ADDED,
    FAILED,
    REMOVED,
    UNCHANGED,
    UPDATED,
    IngestInputError,
    IngestOptions,
    ingest,
)
from rag.store import COMPLETE
from tests.ingest.helpers import EXTS, open_store, stored_sources


def run(paths, embedder, store, size=120, overlap=16, max_bytes=50_000_000):
    return ingest(
        paths,
        embedder=embedder,
        store=store,
        options=IngestOptions(
            chunk_size=size, chunk_overlap=overlap, extensions=EXTS, max_file_bytes=max_bytes
        ),
    )


@pytest.fixture
def corpus(tmp_path, shared_data):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("# Leave\n\nEmployees get 20 days of paid leave per year.\n\n" * 3)
    (docs / "b.txt").write_text("The on-call engineer answers a SEV1 page within 5 minutes. " * 20)
    (docs / "sub" / "c.html").write_text(
        "<html><title>FAQ</title><script>var x=1;</script><p>Robots charge in 2 hours.</p></html>"
    )
    shutil.copy(shared_data / "pdfs" / "cpp-auto-proposal.pdf", docs / "sub" / "paper.pdf")
    (docs / "notes.docx").write_bytes(b"PK\x03\x04 not supported")
    return docs


def test_ingest_is_incremental_and_idempotent(tmp_path, corpus, embedder):
    store = open_store(tmp_path / "chroma", embedder)
    first = run([corpus], embedder, store)
    assert first.count(ADDED) == 4 and first.count(FAILED) == 0
    assert first.skipped == 1  # the .docx
    assert first.chunks_written == store.count() > 4
    ledger = store.file_records()
    assert {Path(s).name for s in ledger} == {"a.md", "b.txt", "c.html", "paper.pdf"}
    assert all(r.status == COMPLETE for r in ledger.values())
    assert stored_sources(store) == {s: r.n_chunks for s, r in ledger.items()}

    second = run([corpus], embedder, store)
    assert second.chunks_written == 0 and second.count(UNCHANGED) == 4
    assert store.count() == first.chunks_written

    # change one file, delete another
    (corpus / "a.md").write_text("# Leave\n\nInterns get 10 days of paid leave per year.\n")
    (corpus / "b.txt").unlink()
    third = run([corpus], embedder, store)
    status = {Path(o.source).name: o.status for o in third.outcomes}
    assert status == {
        "a.md": UPDATED,
        "b.txt": REMOVED,
        "c.html": UNCHANGED,
        "paper.pdf": UNCHANGED,
    }
    counts = stored_sources(store)
    assert str(corpus / "b.txt") not in counts
    a_chunks = store.chunks.get(where={"source": str(corpus / "a.md")}, include=["documents"])[
        "documents"
    ]
    assert a_chunks == ["Leave\n\nInterns get 10 days of paid leave per year."] or all(
        "Interns" in t for t in a_chunks
    )


def test_single_file_does_not_remove_others(tmp_path, corpus, embedder):
    store = open_store(tmp_path / "chroma", embedder)
    run([corpus], embedder, store)
    before = store.count()
    report = run([corpus / "a.md"], embedder, store)
    assert [o.status for o in report.outcomes] == [UNCHANGED]
    assert store.count() == before


def test_bad_inputs_reported_and_store_intact(tmp_path, corpus, embedder, shared_data):
    store = open_store(tmp_path / "chroma", embedder)
    run([corpus], embedder, store)
    before = stored_sources(store)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (bad / "korean-cp949.txt").write_bytes(
        "한국어 문서입니다. 휴가는 연 15일입니다.".encode("cp949")
    )
    for name in ("broken-invalid-object.pdf", "broken-null-object.pdf", "no-text-layer.pdf"):
        shutil.copy(shared_data / "pdfs" / name, bad / name)
    report = run([bad], embedder, store, max_bytes=5_000_000)
    reasons = {Path(o.source).name: (o.status, o.reason) for o in report.outcomes}
    for name in (
        "empty.txt",
        "binary.txt",
        "broken-invalid-object.pdf",
        "broken-null-object.pdf",
        "no-text-layer.pdf",
    ):
        assert reasons[name][0] == FAILED and reasons[name][1], name
    assert reasons["korean-cp949.txt"][0] == ADDED
    after = stored_sources(store)
    assert {s: n for s, n in after.items() if s in before} == before


def test_oversized_file_is_refused(tmp_path, corpus, embedder):
    store = open_store(tmp_path / "chroma", embedder)
    report = run([corpus / "a.md"], embedder, store, max_bytes=10)
    assert report.outcomes[0].status == FAILED
    assert "max_file_mb" in report.outcomes[0].reason


def test_bad_paths_and_chunk_size(tmp_path, embedder):
    store = open_store(tmp_path / "chroma", embedder)
    with pytest.raises(IngestInputError, match="path not found: .*missing"):
        run([tmp_path / "missing"], embedder, store)
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(IngestInputError, match="no supported files"):
        run([empty], embedder, store)
    with pytest.raises(IngestInputError, match="chunking.size = 1000"):
        run([empty], embedder, store, size=1000)


def test_chunk_progress_and_sliced_embedding(tmp_path, embedder, monkeypatch):
    import numpy as np

    import ingest.runner as runner

    monkeypatch.setattr(runner, "EMBED_SLICE", 4)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.txt").write_text(
        " ".join(f"Sentence {i} is about item {i * 3}." for i in range(300))
    )
    store = open_store(tmp_path / "chroma", embedder)
    calls: list[int] = []
    report = ingest(
        [docs],
        embedder=embedder,
        store=store,
        options=IngestOptions(
            chunk_size=40, chunk_overlap=0, extensions=EXTS, max_file_bytes=10**6
        ),
        on_chunks=lambda source, k: calls.append((Path(source).name, k)),
    )
    n = report.chunks_written
    assert (
        n > 8
        and sum(k for _, k in calls) == n
        and calls[:-1] == [("long.txt", 4)] * (len(calls) - 1)
    )
    # slicing the work changes nothing in the stored vectors
    got = store.chunks.get(include=["documents", "embeddings", "metadatas"])
    order = np.argsort([m["chunk_index"] for m in got["metadatas"]])
    texts = [got["documents"][i] for i in order]
    stored = np.asarray(got["embeddings"])[order]
    assert np.allclose(stored, embedder.embed_passages(texts), atol=1e-5)


def test_report_gives_the_languages_of_the_chunks_written(tmp_path, corpus, embedder):
    store = open_store(tmp_path / "chroma", embedder)
    (corpus / "휴가.txt").write_text(
        "직원은 연 15일의 유급 휴가를 받습니다. 병가는 10일이며 진단서가 필요합니다.\n" * 40,
        encoding="utf-8",
    )
    files = [corpus / "b.txt", corpus / "휴가.txt"]
    first = run(files, embedder, store)
    by_file = {Path(o.source).name: dict(o.languages) for o in first.outcomes}
    chars = {f.name: len("".join(f.read_text(encoding="utf-8").split())) for f in files}
    assert list(by_file["휴가.txt"]) == ["ko"] and list(by_file["b.txt"]) == ["en"]
    # the chunks' characters
    assert by_file["휴가.txt"]["ko"] == pytest.approx(chars["휴가.txt"], rel=0.05)
    found = first.languages()
    assert list(found) == ["ko", "en"]
    assert found["ko"] == pytest.approx(chars["휴가.txt"] / sum(chars.values()), abs=0.05)
    assert run(files, embedder, store).languages() == {}  # nothing written, nothing detected


def test_an_interrupt_whose_exception_was_lost_stops_at_the_next_file(tmp_path, corpus, embedder):
    """stop_requested (the CLI's remembered Ctrl-C) is honoured between files: what is written
    is complete.
    """
    store = open_store(tmp_path / "chroma", embedder)
    asked: list[int] = []

    def stop_after_two() -> bool:
        asked.append(len(store.file_records()))
        return len(asked) > 2

    with pytest.raises(KeyboardInterrupt):
        ingest(
            [corpus],
            embedder=embedder,
            store=store,
            options=IngestOptions(
                chunk_size=120, chunk_overlap=16, extensions=EXTS, max_file_bytes=50_000_000
            ),
            stop_requested=stop_after_two,
        )
    ledger = store.file_records()
    assert asked == [0, 1, 2] and len(ledger) == 2
    assert all(r.status == COMPLETE for r in ledger.values())
    assert stored_sources(store) == {s: r.n_chunks for s, r in ledger.items()}
    assert run([corpus], embedder, store).count(ADDED) == 2  # the next run finishes the other two


@pytest.mark.slow
def test_worker_processes_write_what_one_process_writes(tmp_path, shared_data, embedder):
    """Loading and chunking in 3 worker processes (ingest.workers) changes nothing stored: the same
    ids, texts, pages and vectors, the same ledger, the same report, on real PDFs (broken and
    encrypted ones among them) and text files, written in the order given."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in (
        "the-time-machine.pdf",
        "broken-invalid-object.pdf",
        "usenix-paper-encrypted.pdf",
        "no-text-layer.pdf",
        "cpp-auto-proposal.pdf",
        "dutch-tax-form.pdf",
    ):
        shutil.copy(shared_data / "pdfs" / name, folder / name)
    for i in range(5):
        (folder / f"note-{i}.txt").write_text(f"Note {i}. " + "The ledger keeps order. " * 40 * i)
    results = {}
    for workers in (1, 3):
        store = open_store(tmp_path / f"chroma-{workers}", embedder)
        written: list[str] = []
        report = ingest(
            [folder],
            embedder=embedder,
            store=store,
            options=IngestOptions(
                chunk_size=120,
                chunk_overlap=16,
                extensions=EXTS,
                max_file_bytes=50_000_000,
                workers=workers,
            ),
            on_file=lambda source, status, written=written: written.append(Path(source).name),
        )
        got = store.chunks.get(include=["documents", "metadatas", "embeddings"])
        rows = sorted(zip(got["ids"], got["documents"], [m.get("page") for m in got["metadatas"]]))
        vectors = dict(zip(got["ids"], got["embeddings"]))
        results[workers] = (
            rows,
            vectors,
            {(Path(o.source).name, o.status, o.chunks, o.reason) for o in report.outcomes},
            {Path(s).name: (r.status, r.n_chunks) for s, r in store.file_records().items()},
            written,
        )
    (rows1, vec1, out1, ledger1, order1), (rows3, vec3, out3, ledger3, order3) = (
        results[1],
        results[3],
    )
    assert rows1 == rows3 and len(rows1) > 100
    assert all(np.allclose(vec1[i], vec3[i], atol=1e-5) for i in vec1)
    assert out1 == out3 and ledger1 == ledger3
    assert order1 == order3 == sorted(order1)  # files are written in the order given
    assert {o[1] for o in out3} == {ADDED, FAILED}  # the broken and encrypted ones fail alike


def test_no_worker_process_when_the_main_module_is_a_script(tmp_path, embedder, monkeypatch):
    """Under Streamlit (or a test driving the app) the main module is a script that a spawned
    worker would run again; files are then prepared in this process, and nothing hangs."""
    import multiprocessing
    import types

    from ingest.prepare import Chunking, Prepared, prepare_files

    script = types.ModuleType("__main__")
    script.__file__ = str(tmp_path / "app.py")
    monkeypatch.setitem(sys.modules, "__main__", script)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"n{i}.txt")
        paths[-1].write_text(f"Note {i}. " + "Scripts are run again by spawned workers. " * 20)
    how = Chunking(embedder.tokenizer, size=60, overlap=8, max_bytes=10**6, min_chars=5)
    items = list(prepare_files(paths, how, workers=3))
    assert [i.source for i in items] == [str(p) for p in paths]
    assert all(isinstance(i, Prepared) and i.pieces for i in items)
    assert multiprocessing.active_children() == []


def test_workers_zero_starts_workers_only_for_a_remote_embedder_and_a_megabyte(
    tmp_path, monkeypatch
):
    """ingest.workers = 0: this process alone with the local embedder (it takes every core);
    with a remote one, one worker per usable core once the files to load add up to 1 MB."""
    from ingest import runner
    from rag.config import load_settings
    from tests.conftest import write_offline_config

    config = write_offline_config(tmp_path)
    local = load_settings(config, env={})
    assert local.ingest.workers == 0 and IngestOptions.from_settings(local).workers == 1
    remote = load_settings(
        config,
        env={"RAG_EMBEDDER__KIND": "remote", "RAG_EMBEDDER__URL": "http://127.0.0.1:9/embed"},
    )
    assert IngestOptions.from_settings(remote).workers == 0  # decided per run, by auto_workers
    three = load_settings(config, env={"RAG_INGEST__WORKERS": "3"})
    assert IngestOptions.from_settings(three).workers == 3
    monkeypatch.setattr(runner, "usable_cores", lambda: 4)
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_bytes(b"x" * 600_000)
    big.write_bytes(b"x" * 400_000)
    assert runner.auto_workers([small]) == 1
    assert runner.auto_workers([small, big]) == 4
    assert runner.auto_workers([small, tmp_path / "gone.pdf"]) == 1  # a missing file counts 0
