"""A disk that fills up under the embedded store (issue 13.4), on a small tmpfs this test mounts as
root.

Before each file's write, ingest compares the disk's free space with what the write takes and
stops with one line when it does not fit; with that check off (``ingest.check_free_space``), the
disk fills inside Chroma's write, and the line says so instead of a Chroma traceback. Either way
nothing stored is lost, answers leave the half-written file out, and once space is freed the same
command finishes the job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import run_module
from tests.conftest import write_offline_config
from tests.fake_llm import llm_env

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 9 MB tmpfs at tmp_path/disk (root only; skipped with the reason where it cannot be
    mounted).
    """
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def resize(disk: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def write_text(path: Path, n_sentences: int, topic: str) -> None:
    path.write_text(
        " ".join(
            f"{topic} note {i}: the {topic} rule number {i} applies to every team on call."
            for i in range(n_sentences)
        ),
        encoding="utf-8",
    )


def site(tmp_path: Path, disk: Path, big: int, extra: str = "") -> tuple[Path, Path]:
    docs = tmp_path / "docs"
    docs.mkdir()
    write_text(docs / "a-small.txt", 40, "leave")  # 4 chunks
    write_text(docs / "b-big.txt", big, "battery")  # 800 sentences: about 80 chunks, 1 MB in Chroma
    config = write_offline_config(tmp_path, extra)
    config.write_text(config.read_text().replace(str(tmp_path / "chroma"), str(disk / "chroma")))
    return docs, config


def error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


def test_too_little_space_is_said_before_the_write(tmp_path, small_disk):
    # the check wants 8 MB to spare (journal, index growth)
    docs, config = site(tmp_path, small_disk, big=800)
    result = run_module("ingest", docs, "--config", config)
    line = error_line(result)
    print(line)
    assert line.startswith(
        f"error: the disk holding the Chroma store at {small_disk / 'chroma'} has too little "
        "free space: "
    )
    assert (
        "needed to write b-big.txt (" in line and "; nothing was written. Free some space" in line
    )
    check = run_module("ingest", "--check", "--config", config)
    assert check.returncode == 0 and "store OK: 1 files" in check.stdout  # the small file, complete
    resize(small_disk, "96m")
    assert run_module("ingest", docs, "--config", config).returncode == 0
    check = run_module("ingest", "--check", "--config", config)
    assert check.returncode == 0 and "store OK: 2 files" in check.stdout, check.stdout


def test_a_disk_that_fills_inside_the_write(tmp_path, small_disk, llm_server):
    resize(small_disk, "1m")
    docs, config = site(
        tmp_path, small_disk, big=1200, extra="[ingest]\ncheck_free_space = false\n"
    )
    result = run_module("ingest", docs, "--config", config)
    line = error_line(result)
    print(line)
    assert line.startswith(
        f"error: the disk holding the Chroma store at {small_disk / 'chroma'} is full ("
    )
    assert "run the same command again: nothing stored is lost" in line
    question = (
        "ask",
        "Which rule applies to every team on call?",
        "--json",
        "--retrieval",
        "bm25",
        "--config",
        config,
    )
    env = {**llm_env(llm_server.url), "RAG_RERANKER__ENABLED": "false"}

    resize(small_disk, "96m")  # space freed, not yet re-ingested: the half-written file is left out
    answered = run_module("rag", *question, env=env)
    assert answered.returncode == 0, answered.stderr
    trace = json.loads(answered.stdout)["trace"]
    assert any(
        note.startswith("1 file is half-written in the store (b-big.txt)")
        for note in trace["notes"]
    )
    assert trace["context"] and all(
        not c["chunk"]["source"].endswith("b-big.txt") for c in trace["context"]
    )

    # the same command finishes the job
    assert run_module("ingest", docs, "--config", config).returncode == 0
    check = run_module("ingest", "--check", "--config", config)
    assert check.returncode == 0 and "store OK: 2 files" in check.stdout, check.stdout


def test_app_upload_onto_a_full_disk_is_one_message(tmp_path, small_disk, monkeypatch, llm_server):
    from tests.test_bad_input import start_app, upload
    from tests.ui.test_app import texts

    # the store on another disk: only the upload folder is full
    config = write_offline_config(tmp_path)
    filler = small_disk / "filler"
    with filler.open("wb") as out:  # take the rest of the disk
        try:
            while True:
                out.write(bytes(65536))
                out.flush()
        except OSError:
            pass
    app = start_app(
        monkeypatch, config, llm_server.url, RAG_UI__UPLOAD_DIR=str(small_disk / "uploads")
    )
    assert app.sidebar.file_uploader, (
        texts(app.error),
        texts(app.sidebar.error),
        texts(app.warning),
    )
    upload(app, {"leave.md": b"# Leave\n\nInterns get 12 days of paid leave a year.\n" * 200})
    (error,) = texts(app.sidebar.error)
    assert error.startswith(
        f"The upload could not be ingested: the disk holding {small_disk / 'uploads'} is full "
        "(0.0 MB free): leave.md was not saved; free some space and upload it again"
    ), error
    assert not [p for p in (small_disk / "uploads").iterdir()]  # no half-written upload left behind
