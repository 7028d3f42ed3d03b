"""An ingestion killed part-way (SIGKILL, Ctrl-C) leaves the store consistent; the next run completes it."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag.config import load_settings
from rag.pipeline import load_embedder, open_store
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def make_corpus(folder: Path, n_files: int = 24) -> Path:
    folder.mkdir()
    for i in range(n_files):
        sentences = [f"Document {i} sentence {j} talks about topic {i * 7 + j} in some detail." for j in range(120)]
        (folder / f"doc-{i:02d}.txt").write_text(" ".join(sentences))
    return folder


def start_ingest(config: Path, corpus: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ingest", str(corpus), "--config", str(config), "-v"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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


@pytest.mark.parametrize("sig, after_files", [(signal.SIGKILL, 3), (signal.SIGKILL, 9), (signal.SIGINT, 5)])
def test_interrupted_ingest_recovers(tmp_path, offline_config, sig, after_files):
    corpus = make_corpus(tmp_path / "corpus")
    proc = start_ingest(offline_config, corpus)
    wait_for_files(proc, after_files)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "run the same command again" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    done = subprocess.run([sys.executable, "-m", "ingest", str(corpus), "--config", str(offline_config)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    total = check_consistent(offline_config, corpus)
    # the same corpus ingested in one go gives the same number of chunks
    fresh_cfg = tmp_path / "fresh"
    fresh_cfg.mkdir()
    from tests.conftest import write_offline_config

    fresh = write_offline_config(fresh_cfg)
    subprocess.run([sys.executable, "-m", "ingest", str(corpus), "--config", str(fresh)],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    assert check_consistent(fresh, corpus) == total
