"""An ingestion killed part-way (SIGKILL, Ctrl-C) leaves the store consistent; the next run
completes it.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import load_settings
from rag.pipeline import load_embedder, open_store
from tests.conftest import REPO, write_offline_config

pytestmark = pytest.mark.slow


def make_corpus(folder: Path, n_files: int = 12) -> Path:
    folder.mkdir()
    for i in range(n_files):
        sentences = [
            f"Document {i} sentence {j} talks about topic {i * 7 + j} in some detail."
            for j in range(120)
        ]
        (folder / f"doc-{i:02d}.txt").write_text(" ".join(sentences))
    return folder


def start_ingest(config: Path, corpus: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(corpus), "--config", str(config), "-v"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_files(proc: subprocess.Popen, n: int) -> None:
    """Read the verbose log until n files were written, so the kill lands mid-run."""
    seen = 0
    for line in proc.stderr:
        if "ingest.runner" in line and " chunks" in line and "writing" not in line:
            seen += 1
            if seen >= n:
                return
    pytest.fail(f"ingestion ended before {n} files were written (exit {proc.wait()})")


def check_consistent(config: Path, corpus: Path) -> int:
    settings = load_settings(config)
    store = open_store(settings, load_embedder(settings), create=False)
    ledger = store.file_records()
    metas = store.chunks.get(include=["metadatas"])["metadatas"]
    per_source: dict[str, int] = {}
    for m in metas:
        per_source[m["source"]] = per_source.get(m["source"], 0) + 1
    on_disk = {str(p.resolve()) for p in corpus.iterdir()}
    assert set(ledger) == on_disk
    assert all(r.status == "complete" for r in ledger.values())
    assert per_source == {s: r.n_chunks for s, r in ledger.items()}  # no duplicates, no orphans
    return len(metas)


@pytest.fixture(scope="module")
def fresh_total(tmp_path_factory) -> int:
    """The chunks of the corpus ingested in one go, uninterrupted."""
    site = tmp_path_factory.mktemp("fresh")
    corpus = make_corpus(site / "corpus")
    fresh = write_offline_config(site)
    subprocess.run(
        [sys.executable, "-m", "ingest", str(corpus), "--config", str(fresh)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return check_consistent(fresh, corpus)


# SIGTERM (docker stop, systemd, Kubernetes) stops like Ctrl-C; test_crash.py also sends
# it at random kill points
@pytest.mark.parametrize(
    "sig, after_files", [(signal.SIGKILL, 3), (signal.SIGINT, 5), (signal.SIGTERM, 9)]
)
def test_interrupted_ingest_recovers(tmp_path, offline_config, fresh_total, sig, after_files):
    corpus = make_corpus(tmp_path / "corpus")
    proc = start_ingest(offline_config, corpus)
    wait_for_files(proc, after_files)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], err
        said = "interrupted." if sig == signal.SIGINT else "stopped by SIGTERM."
        assert f"{said} The store is consistent; run the same command again to finish." in err
        assert "Traceback" not in err
    done = subprocess.run(
        [sys.executable, "-m", "ingest", str(corpus), "--config", str(offline_config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert check_consistent(offline_config, corpus) == fresh_total


def test_sigterm_outside_the_run_stops_with_143_and_the_same_line(tmp_path, offline_config):
    """Before the first file (models loading) and after the last one, ``Interrupts`` is not in
    charge: SIGTERM still ends the command with 143 and the line that says the store is consistent,
    not with the bare -15 of the default action (which the crash tests once met after the last
    file)."""
    corpus = make_corpus(tmp_path / "corpus", n_files=2)
    proc = start_ingest(offline_config, corpus)
    assert proc.stderr.readline().startswith("embedder: ")  # the first line, before any model
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM. The store is consistent; run the same command again" in err
    assert "Traceback" not in err
