"""N sessions ask questions while an ingestion runs: no errors, no mixed-up answers, bounded memory.

Each session is a thread doing what a browser session of the app does: it builds a
Pipeline per question over the models and store shared by the process (as
ui/services.py does) and asks its own questions, switching reranking on and off and
the retrieval mode between dense, BM25 and hybrid. The stand-in LLM server answers
every question with the question itself, so a session can tell whether the answer,
the trace and the citations it got are its own. Meanwhile an ingestion adds files:
in the same process (an upload in the app, embedded store) or as a separate
`python -m ingest` process against a Chroma server (the compose deployment).
The test prints N, the duration, the questions answered and the memory growth.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from ingest.runner import IngestOptions, ingest
from rag.config import Settings, load_settings
from rag.pipeline import (
    Pipeline,
    load_configured_reranker,
    load_embedder,
    load_generator,
    open_store,
)
from rag.retrieve import LexicalIndex, Retriever
from tests.cli import run_module
from tests.conftest import REPO, server_env, write_offline_config
from tests.fake_llm import llm_env, reranker_env

pytestmark = pytest.mark.slow
N_SESSIONS = 8
MIN_QUESTIONS = 4  # per session; sessions keep asking until the ingestion is over
MAX_GROWTH_MB = 1024  # resident memory growth allowed over the warmed-up process


@dataclass
class Run:
    answered: int = 0
    during_ingest: int = 0
    errors: list[str] = field(default_factory=list)
    peak_mb: float = 0.0


def make_corpus(folder: Path, n_files: int = 14) -> Path:
    folder.mkdir()
    for i in range(n_files):
        text = " ".join(
            f"Team {i} rule {j}: requests for item {i * 31 + j} go through the portal within {j} "
            "days."
            for j in range(160)
        )
        (folder / f"extra-{i:02d}.txt").write_text(text, encoding="utf-8")
    return folder


def session(
    number: int,
    make_pipeline: Callable[[bool], Pipeline],
    ingesting: threading.Event,
    run: Run,
    lock: threading.Lock,
) -> None:
    modes = ("dense", "bm25", "hybrid")
    asked = 0
    while asked < MIN_QUESTIONS or ingesting.is_set():
        question = (
            f"Session {number} question {asked}: how many days of paid sick leave do staff get?"
        )
        rerank = (number + asked) % 2 == 0
        try:
            during = ingesting.is_set()
            answer = make_pipeline(rerank).ask(
                question, rerank=rerank, mode=modes[(number + asked) % 3]
            )
            problems = []
            if answer.text != f"Answer to: {question} [1]":
                problems.append(f"answer {answer.text!r}")
            if answer.trace.question != question or answer.trace.rerank is not rerank:
                problems.append("trace of another question")
            if [c.chunk_id for c in answer.citations] != [answer.trace.context[0].chunk.id]:
                problems.append(f"citations {answer.citations}")
            with lock:
                run.answered += 1
                run.during_ingest += during
                run.errors += [f"session {number}: {p}" for p in problems]
        except Exception as exc:  # every failure is counted and reported, none may happen
            with lock:
                run.errors.append(f"session {number}: {type(exc).__name__}: {exc}")
        asked += 1


def watch_memory(stop: threading.Event, run: Run) -> None:
    process = psutil.Process()
    while not stop.is_set():
        run.peak_mb = max(run.peak_mb, process.memory_info().rss / 2**20)
        time.sleep(0.1)


def run_sessions(
    make_pipeline: Callable[[bool], Pipeline],
    start_ingest: Callable[[], None],
    ingest_done: Callable[[], bool],
    label: str,
) -> Run:
    """Warm up, start the ingestion, run N sessions until it is over, and report."""
    for rerank in (True, False):
        make_pipeline(rerank).ask("warm-up question about leave", rerank=rerank, mode="hybrid")
    baseline = psutil.Process().memory_info().rss / 2**20
    run, lock, ingesting, stop = (
        Run(peak_mb=baseline),
        threading.Lock(),
        threading.Event(),
        threading.Event(),
    )
    ingesting.set()
    started = time.perf_counter()
    start_ingest()
    watcher = threading.Thread(target=watch_memory, args=(stop, run), daemon=True)
    watcher.start()
    threads = [
        threading.Thread(target=session, args=(i, make_pipeline, ingesting, run, lock))
        for i in range(N_SESSIONS)
    ]
    for t in threads:
        t.start()
    while not ingest_done():
        time.sleep(0.2)
    ingesting.clear()
    for t in threads:
        t.join(timeout=600)
    stop.set()
    watcher.join()
    duration = time.perf_counter() - started
    print(
        f"[{label}] {N_SESSIONS} sessions, {run.answered} questions ({run.during_ingest} while "
        "ingesting) in "
        f"{duration:.1f}s, {len(run.errors)} errors, memory {baseline:.0f} MB -> peak "
        f"{run.peak_mb:.0f} MB"
    )
    assert not any(t.is_alive() for t in threads)
    assert run.errors == []
    assert run.answered >= N_SESSIONS * MIN_QUESTIONS and run.during_ingest >= N_SESSIONS
    assert run.peak_mb - baseline < MAX_GROWTH_MB
    return run


def shared_models(settings: Settings):
    return (
        load_embedder(settings),
        load_configured_reranker(settings),
        load_generator(settings, environ={}),
    )


def pipeline_factory(settings: Settings, embedder, store, reranker, generator, lexical):
    def make(rerank: bool) -> Pipeline:  # what ui/services.pipeline builds per question
        retriever = Retriever(
            embedder=embedder,
            store=store,
            lexical=lexical,
            mode="hybrid",
            rrf_k=60,
            weights=(1.0, 1.0),
        )
        return Pipeline(
            retriever=retriever,
            reranker=reranker if rerank else None,
            generator=generator,
            top_k=20,
            top_n=5,
            reorder_strategy="lost_in_the_middle",
        )

    return make


def test_sessions_while_an_upload_is_ingested_embedded(
    sample_config, tmp_path, tiny_cross_encoder, llm_server
):
    llm_server.echo = True
    settings = load_settings(
        sample_config, env={**llm_env(llm_server.url), **reranker_env(tiny_cross_encoder)}
    )
    embedder, reranker, generator = shared_models(settings)
    store = open_store(settings, embedder, create=False)
    before = store.count()
    corpus = make_corpus(tmp_path / "extra")
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["report"] = ingest(
                [corpus],
                embedder=embedder,
                store=store,
                options=IngestOptions.from_settings(settings, max_file_bytes=10**8),
            )
        except Exception as exc:
            result["error"] = exc

    worker = threading.Thread(target=work)
    make = pipeline_factory(settings, embedder, store, reranker, generator, LexicalIndex(store))
    run_sessions(make, worker.start, lambda: not worker.is_alive(), "embedded, ingest in-process")
    assert "error" not in result
    assert store.count() == before + result["report"].chunks_written
    assert len(store.chunk_ids()) == len(set(store.chunk_ids()))


def test_sessions_while_the_cli_ingests_into_the_server(
    chroma_stack, tmp_path, tiny_cross_encoder, llm_server
):
    _, proxy = chroma_stack
    llm_server.echo = True
    config = write_offline_config(tmp_path)
    env = {
        **server_env(proxy.port, proxy.token, f"conc-{uuid.uuid4().hex[:8]}"),
        **llm_env(llm_server.url),
        **reranker_env(tiny_cross_encoder),
    }
    first = run_module("ingest", REPO / "docs", "--config", config, env=env)
    assert first.returncode == 0, first.stderr
    settings = load_settings(config, env=env)
    embedder, reranker, generator = shared_models(settings)
    store = open_store(settings, embedder, create=False, environ=env)
    corpus = make_corpus(tmp_path / "extra")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    procs: list[subprocess.Popen] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ingest", str(corpus), "--config", str(config)],
                cwd=REPO,
                env={**base, **env, "HF_HUB_OFFLINE": "1"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )

    make = pipeline_factory(settings, embedder, store, reranker, generator, LexicalIndex(store))
    run_sessions(
        make, start, lambda: bool(procs) and procs[0].poll() is not None, "server, ingest CLI"
    )
    _, err = procs[0].communicate()
    assert procs[0].returncode == 0, err
    assert {str(p.resolve()) for p in corpus.iterdir()} <= set(store.file_records())
