"""python -m rag ask "question" [--no-rerank] [--json] [--config PATH] [--collection NAME]"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rag.cli import run_cli, setup_logging
from rag.config import load_settings, with_collection
from rag.generate import GenerationError
from rag.languages import question_language, question_warning
from rag.retrieve import MODES
from rag.types import Trace


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rag", description="Ask questions over your documents."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer a question with citations")
    ask.add_argument("question")
    ask.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    ask.add_argument("--collection", help="the collection to search (default: store.collection)")
    ask.add_argument(
        "--no-rerank", action="store_true", help="skip the reranker (the A side of A/B)"
    )
    ask.add_argument(
        "--json", action="store_true", help="print the answer and its full trace as JSON"
    )
    ask.add_argument("--top-k", type=int, help="candidates retrieved (default: retrieval.top_k)")
    ask.add_argument("--top-n", type=int, help="chunks given to the LLM (default: reranker.top_n)")
    ask.add_argument(
        "--retrieval",
        choices=MODES,
        help="first stage: dense, bm25 or hybrid (default: retrieval.mode)",
    )
    ask.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    settings = with_collection(load_settings(args.config), args.collection)
    # imported here, not at the top: a bad config is named in a fraction of a second, before torch
    from rag.pipeline import build_pipeline, check_question

    check_question(args.question)  # before any model loads
    routed = settings.retrieval.modes_by_language.get(
        question_language(args.question) or "", settings.retrieval.mode
    )
    mode = args.retrieval if args.retrieval is not None else routed
    warning = question_warning(settings.embedder.model, args.question, settings.embedder.languages)
    # BM25 reads any language; only the bi-encoder cannot
    if warning is not None and mode != "bm25":
        Console(stderr=True).print(f"[yellow]warning:[/] {escape(warning)}")
    rerank = settings.reranker.enabled and not args.no_rerank
    pipeline = build_pipeline(settings, reranker=rerank)
    if pipeline.retriever.store.count() == 0:
        raise ValueError("the collection is empty; add documents first: python -m ingest docs/")
    trace = pipeline.search(
        args.question, rerank=rerank, top_k=args.top_k, top_n=args.top_n, mode=args.retrieval
    )
    console = Console()
    try:
        if args.json:
            answer = pipeline.answer(trace)
            print(json.dumps(dataclasses.asdict(answer), ensure_ascii=False, indent=2))
            return 0
        console.print(f"[bold]Answer[/] ({pipeline.generator.name}):")
        answer = pipeline.answer(
            trace, on_token=lambda t: (sys.stdout.write(t), sys.stdout.flush())
        )
        print()
    except GenerationError as exc:
        console.print(f"[red]error:[/] {exc}")
        print_sources(console, trace, cited=())
        return 2
    print_sources(console, answer.trace, cited=[c.number for c in answer.citations])
    for evidence in answer.evidence:
        for sentence in evidence.sentences:
            console.print(
                f"[{evidence.number}] supports the answer: “{escape(' '.join(sentence.split()))}”",
                highlight=False,
            )
    return 0


def print_sources(console: Console, trace: Trace, cited) -> None:
    """The chunks the LLM saw, numbered as in the prompt, with ranks and scores."""
    table = Table(title="sources (in the order the LLM read them)")
    for col in ("#", "file", "page", "rank", "retrieval", "rerank", "raw", "cited"):
        table.add_column(col, overflow="fold", no_wrap=col != "file")
    for number, cand in enumerate(trace.context, start=1):
        moved = (
            f"#{cand.retrieval_rank} → #{cand.rank}" if trace.rerank else f"#{cand.retrieval_rank}"
        )
        table.add_row(
            f"[{number}]",
            Path(cand.chunk.source).name,
            str(cand.chunk.page or "-"),
            moved,
            f"{cand.retrieval_score:.3f}",
            _score(cand.rerank_score),
            _score(cand.rerank_raw),
            "yes" if number in cited else "",
        )
    console.print(table)
    if trace.searched is not None:
        console.print(f"searched for: {escape(trace.searched)}")
    for note in trace.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(
        f"first stage: {trace.retrieval} · models: "
        + " · ".join(f"{k}: {v}" for k, v in trace.models.items())
    )
    console.print(
        "timings: " + " · ".join(f"{k} {v * 1000:.0f} ms" for k, v in trace.timings.items())
    )


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    run_cli(main)
