"""python -m rag.evaluate: what reranking buys on a labelled set, as numbers.

    python -m rag.evaluate squad ../shared/data/squad/squad-v1.1-dev-part-a.json --limit 200 --seed 0

The passages of the data set go into their own collection (``<collection>-eval-squad``),
one chunk per passage, so the gold passage of each question is one chunk id. Each
configuration (first-stage mode x reranker on/off) runs every question through the
real pipeline; the report gives hit@1/3/5/10, MRR@10, nDCG@10, the first stage's
recall@k (the ceiling reranking can reach), has-right-in-contexts at top_n, where the
gold passage sat in the context the LLM would read, and latency per stage (p50, p95).
Output: a Markdown table on stdout and every number, with the configuration, as JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.progress import Progress

from rag.cli import run_cli, setup_logging
from rag.config import Settings, load_settings
from rag.metrics import mean, percentile, recall_at, summarize
from rag.pipeline import Pipeline, build_pipeline
from rag.retrieve import MODES
from rag.store import ChunkStore
from rag.types import Chunk


class DatasetError(ValueError):
    """An evaluation file is missing or not in the expected format."""


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    gold: frozenset[str]


def passage_id(title: str, index: int, text: str) -> str:
    return hashlib.sha256(f"{title}\n{index}\n{text}".encode()).hexdigest()[:32]


def load_squad(path: Path, *, articles: int | None = None) -> tuple[list[Passage], list[Query]]:
    """Passages (one per paragraph) and questions (gold = the paragraph each was written on)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not SQuAD v1.1 JSON ({type(exc).__name__}: {exc})") from None
    passages: list[Passage] = []
    queries: list[Query] = []
    for article in data[:articles] if articles is not None else data:
        for index, paragraph in enumerate(article["paragraphs"]):
            pid = passage_id(article["title"], index, paragraph["context"])
            passages.append(Passage(pid, article["title"], paragraph["context"]))
            queries += [Query(qa["id"], qa["question"], frozenset({pid})) for qa in paragraph["qas"]]
    if not queries:
        raise DatasetError(f"{path}: no questions found")
    return passages, queries


def sample(queries: Sequence[Query], limit: int | None, seed: int) -> list[Query]:
    """A seeded random sample of ``limit`` queries (all of them when limit is None), in a stable order."""
    if limit is None or limit >= len(queries):
        return list(queries)
    return random.Random(seed).sample(list(queries), limit)


def index_passages(store: ChunkStore, passages: Sequence[Passage], embedder, on_batch=None) -> int:
    """Write the passages that are not in the store yet; returns how many were written."""
    present = set(store.chunks.get(include=[])["ids"])
    todo = [p for p in passages if p.id not in present]
    for start in range(0, len(todo), 256):
        part = todo[start:start + 256]
        chunks = [Chunk(id=p.id, text=p.text, source=p.title, page=None, chunk_index=0,
                        content_hash=p.id) for p in part]
        store.upsert_chunks(chunks, embedder.embed_passages([p.text for p in part]), 0.0)
        if on_batch is not None:
            on_batch(len(part))
    return len(todo)


@dataclass(frozen=True)
class Run:
    name: str
    mode: str
    rerank: bool


def evaluate(pipeline: Pipeline, queries: Sequence[Query], runs: Sequence[Run], *, top_k: int, top_n: int,
             on_query=None) -> dict[str, dict[str, object]]:
    """Every metric for every run, keyed by run name."""
    report: dict[str, dict[str, object]] = {}
    for run in runs:
        ranked, first, positions, stages = [], [], [], {}
        for query in queries:
            trace = pipeline.search(query.text, rerank=run.rerank, mode=run.mode, top_k=top_k, top_n=top_n)
            order = trace.reranked if run.rerank else trace.retrieved
            ranked.append(([c.chunk.id for c in order], query.gold))
            first.append(recall_at([c.chunk.id for c in trace.retrieved], query.gold, top_k))
            context = [c.chunk.id for c in trace.context]
            positions.append(next((i for i, cid in enumerate(context, start=1) if cid in query.gold), None))
            for stage, seconds in trace.timings.items():
                stages.setdefault(stage, []).append(seconds)
            if on_query is not None:
                on_query()
        metrics = dict(summarize(ranked))
        metrics[f"recall@{top_k} (first stage)"] = mean(first)
        metrics[f"in context (top {top_n})"] = mean(1.0 if p is not None else 0.0 for p in positions)
        report[run.name] = {
            "mode": run.mode, "rerank": run.rerank, "metrics": metrics,
            "gold_position_in_context": {str(p): positions.count(p) for p in sorted({p for p in positions if p})},
            "latency_ms": {s: {"p50": percentile(v, 50) * 1000, "p95": percentile(v, 95) * 1000}
                           for s, v in stages.items()},
        }
    return report


def markdown(report: dict[str, dict[str, object]]) -> str:
    names = list(report)
    metric_names = list(report[names[0]]["metrics"])
    lines = ["| run | " + " | ".join(metric_names) + " | latency p50 / p95 |",
             "|---" * (len(metric_names) + 2) + "|"]
    for name in names:
        entry = report[name]
        values = " | ".join(f"{entry['metrics'][m]:.3f}" for m in metric_names)
        total50 = sum(v["p50"] for v in entry["latency_ms"].values())
        total95 = sum(v["p95"] for v in entry["latency_ms"].values())
        lines.append(f"| {name} | {values} | {total50:.0f} / {total95:.0f} ms |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rag.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=["squad"], help="the data set's format")
    parser.add_argument("path", type=Path)
    parser.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    parser.add_argument("--limit", type=int, help="evaluate a seeded sample of this many questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--articles", type=int, help="SQuAD: only the first N articles (a smaller corpus)")
    parser.add_argument("--modes", default="dense", help=f"first-stage modes, comma-separated ({', '.join(MODES)})")
    parser.add_argument("--no-rerank", action="store_true", help="only the runs without a reranker")
    parser.add_argument("--out", type=Path, default=Path("eval-report.json"), help="where the JSON report goes")
    args = parser.parse_args(argv)
    for value, name in ((args.limit, "--limit"), (args.articles, "--articles")):
        if value is not None and value < 1:
            parser.error(f"{name} = {value}: must be at least 1")
    return args


def for_dataset(settings: Settings, name: str) -> Settings:
    """The same settings over the data set's own collection, ``<collection>-eval-<name>``."""
    store = settings.store.model_copy(update={"collection": f"{settings.store.collection}-eval-{name}"})
    return settings.model_copy(update={"store": store})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    settings = load_settings(args.config)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"--modes {args.modes!r}: valid modes are {', '.join(MODES)}")
    passages, queries = load_squad(args.path, articles=args.articles)
    queries = sample(queries, args.limit, args.seed)
    settings = for_dataset(settings, "squad")
    rerank = settings.reranker.enabled and not args.no_rerank
    runs = [Run(m, m, False) for m in modes] + ([Run(f"{m} + rerank", m, True) for m in modes] if rerank else [])
    pipeline = build_pipeline(settings, reranker=rerank, generator=False, create_store=True)
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("indexing passages", total=len(passages))
        index_passages(pipeline.store, passages, pipeline.embedder, on_batch=lambda n: bar.advance(task, n))
        task = bar.add_task("evaluating", total=len(queries) * len(runs))
        report = evaluate(pipeline, queries, runs, top_k=settings.retrieval.top_k, top_n=settings.reranker.top_n,
                          on_query=lambda: bar.advance(task))
    print(markdown(report))
    config = {"dataset": str(args.path), "questions": len(queries), "passages": len(passages), "seed": args.seed,
              "top_k": settings.retrieval.top_k, "top_n": settings.reranker.top_n,
              "embedder": settings.embedder.model,
              "reranker": f"{settings.reranker.kind}: {settings.reranker.model}" if rerank else None}
    args.out.write_text(json.dumps({"config": config, "runs": report}, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"\nreport written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
