"""bench/run.py and bench/scaleout.py still run and print their tables (a quick subset; the
figures themselves are not asserted: timings belong in the benchmark's own ratios, not in tests
on a shared machine)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def smoke_run(script: str, tmp_path, *args: str) -> tuple:
    """``script --smoke --out FILE [ARGS]``: (the file, its table rows below the header)."""
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, script, "--smoke", "--out", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, [line for line in out.read_text().splitlines() if line.startswith("| ")][1:]


def test_the_quick_benchmark_prints_every_row_with_a_ratio(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--quick",
            "--smoke",
            "--only",
            "shipped,cross-encoder,scale",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [
        line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line
    ][1:]
    names = [r.split(" | ")[0].lstrip("| ").strip() for r in rows]
    for expected in (
        "en: ensemble: shipped:minilm-lexical-en (cpu: 1 x cross-encoder shipped:minilm-en + 1 x "
        "lexical shipped:lexical-en), rerank 20 BM25 candidates",
        "ko: lexical: shipped:lexical-ko (cpu, python), rerank 20 BM25 candidates",
        "rerank 8 cands",  # --smoke: 8 and 16 candidates
        "rerank 16 cands",
        "backend onnx, rerank 16 cands",
        "backend onnx-int8 vs PyTorch",
        "retrieve (dense) @ 2k chunks",
        "retrieve (hybrid) @ 2k chunks",
        "first token (Gemma 270M) @ 1k chunks",
        "question asked again @ 2k",
    ):
        assert any(expected in name for name in names), (expected, names)
    # every comparison row carries a number in its ratio column
    ratios = [
        r.rstrip(" |").rsplit(" | ", 1)[1]
        for r in rows
        if not r.startswith("| store write") and "not reranked" not in r
    ]
    assert ratios and all(re.search(r"\d", ratio) for ratio in ratios), ratios
    # fp32 ONNX = torch
    assert "onnx vs PyTorch" in out.read_text() and "Kendall tau 1.000" in out.read_text()
    assert "machine: " in out.read_text()


def test_bad_options_are_named(tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--only", "ingest,speed"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        proc.returncode == 2
        and "unknown section(s) speed; valid: shipped, ingest, cross-encoder, llm, scale, app"
        in proc.stderr
    )
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--cross-encoder", str(tmp_path / "nope")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "nope: not a directory" in proc.stderr


@pytest.mark.engines("infinity")
def test_the_scale_out_benchmark_prints_every_row_with_a_ratio(tmp_path):
    """bench/scaleout.py against a real Infinity server: every row, and the remote ingest writes
    as many chunks as the local one (the script asserts it). Not its Ray section (a minute here
    for a cluster's start): tests/ingest/test_ray.py checks the same --ray ingest against one
    process."""
    out, rows = smoke_run("bench/scaleout.py", tmp_path, "--only", "ingest,remote")
    names = [r.split(" | ")[0].lstrip("| ").strip() for r in rows]
    for expected in (
        "local embedder, 1 process (reference)",
        "worker processes",  # the local embedder, one per core
        "remote embedder, 1 worker(s)",
        "remote embedder, 2 worker(s)",
        "remote embedder, 4 worker(s)",
    ):
        assert any(expected in name for name in names), (expected, names)
    assert any(re.search(r"remote embedder, \d+ chunks, 32 a request, 4 at once", n) for n in names)
    assert all(re.search(r"\d", r.rstrip(" |").rsplit(" | ", 1)[1]) for r in rows), rows
    assert re.search(r"overhead [+-]\d+\.\d%", out.read_text())


@pytest.mark.engines("llama")
def test_the_serving_benchmark_prints_every_row_with_a_ratio(tmp_path):
    """bench/serving.py: concurrent sessions under each way of sharing the cores, and llama.cpp's
    server against the in-process transformers path (the script checks that llama.cpp generated
    exactly the tokens asked)."""
    out, rows = smoke_run("bench/serving.py", tmp_path)
    names = [r.split(" | ")[0].lstrip("| ").strip() for r in rows]
    for policy in ("as is", "1 thread", "queue"):
        for level in (1, 2, 4, 8):
            assert any(n.startswith(f"{policy}, {level} session(s) at once") for n in names), names
    for expected in ("tokens + 1 token: llama.cpp server", "per generated token", "an answer of"):
        assert any(expected in name for name in names), (expected, names)
    assert all(re.search(r"\d", r.rstrip(" |").rsplit(" | ", 1)[1]) for r in rows), rows
    assert re.search(r"p95 \d+", out.read_text())
