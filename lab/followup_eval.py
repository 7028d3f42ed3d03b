"""How much making follow-ups standalone helps retrieval, on follow-ups made from SQuAD/KorQuAD.

    python -m lab.followup_eval ../shared/data/squad/squad-v1.1-dev-part-a.json --articles 12:24 \\
        --config config.offline.toml --out reports/follow-ups-en-test.json

Follow-ups are made the same way for every article: two questions of one article
that both name its topic (the title: "Genghis Khan", "삼성 갤럭시 S8") become a
conversation, the second with its topic replaced by a pronoun ("When did he
die?" -> "When did it die?"; "명성황후의 아버지는?" -> "그의 아버지는?"). Each
follow-up is searched as typed (``off``), with the previous question put before it
(``concat``), rewritten by the LLM (``llm``, only with an endpoint), and, as the
ceiling, as originally written. Topic changes (the second question from another
article, unchanged) measure what each method costs when a question is not a
follow-up. Retrieval and reranking are the configured ones (``--modes auto`` of
lab.evaluate); the gold is the paragraph the second question was written on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from lab.datasets import load_squad, parse_span
from lab.evaluation import eval_settings, index_passages
from lab.metrics import hit_at, mean, summarize
from rag.cli import run_cli, setup_logging
from rag.config import load_settings
from rag.followup import resolve_method
from rag.languages import question_language
from rag.pipeline import build_pipeline, load_generator

_KO_PARTICLES = {
    "의": "그의",
    "은": "그는",
    "는": "그는",
    "이": "그가",
    "가": "그가",
    "을": "그것을",
    "를": "그것을",
    "에서": "거기에서",
    "에": "거기에",
    "와": "그와",
    "과": "그와",
    "도": "그도",
    "": "그것",
}


def topic(title: str) -> str:
    """The words an article's questions name it by: "Jacksonville,_Florida" -> "Jacksonville",
    "김영하_(소설가)" -> "김영하"."""
    return re.sub(r"\s*\(.*?\)\s*$", "", title.split(",")[0].replace("_", " ")).strip()


def pronoun_for(question: str, phrase: str) -> str | None:
    """``question`` with ``phrase`` replaced by a pronoun, or None when it does not name it."""
    if re.search(r"[\uac00-\ud7a3]", phrase):
        pattern = re.compile(re.escape(phrase) + r"(에서|의|은|는|이|가|을|를|에|와|과|도)?")
        if not pattern.search(question):
            return None
        return pattern.sub(lambda m: _KO_PARTICLES[m[1] or ""], question, count=1)
    pattern = re.compile(
        r"\b(?:the\s+)?" + re.escape(phrase) + r"(?:s)?('s|s')?(?!\w)", re.IGNORECASE
    )
    if not pattern.search(question):
        return None
    return pattern.sub(lambda m: "its" if m[1] else "it", question, count=1)


def make_pairs(corpus, seed: int) -> tuple[list[dict], list[dict]]:
    """(follow-ups, topic changes): each a dict of previous, question, original, gold."""
    title_of = {p.id: p.title for p in corpus.passages}
    by_article: dict[str, list] = {}
    for query in corpus.queries:
        by_article.setdefault(title_of[next(iter(query.gold))], []).append(query)
    follow_ups, changes = [], []
    rng = random.Random(seed)
    titles = sorted(by_article)
    for title in titles:
        phrase = topic(title)
        naming = [q for q in by_article[title] if pronoun_for(q.text, phrase) is not None]
        for first, second in zip(naming[0::2], naming[1::2]):
            follow_ups.append(
                {
                    "previous": first.text,
                    "question": pronoun_for(second.text, phrase),
                    "original": second.text,
                    "gold": sorted(second.gold),
                }
            )
            other = rng.choice([t for t in titles if t != title])
            switched = rng.choice(by_article[other])
            changes.append(
                {
                    "previous": first.text,
                    "question": switched.text,
                    "original": switched.text,
                    "gold": sorted(switched.gold),
                }
            )
    return follow_ups, changes


def measure(
    pipeline, items: list[dict], methods: list[str], on_item
) -> dict[str, dict[str, float]]:
    report = {}
    for method in methods:
        runner = dataclasses.replace(
            pipeline, follow_ups="off" if method in ("off", "original") else method
        )
        ranked, in_context, searched = [], [], []
        for item in items:
            question = item["original"] if method == "original" else item["question"]
            history = [] if method == "original" else [(item["previous"], "")]
            trace = runner.search(question, rerank=runner.reranker is not None, history=history)
            order = trace.reranked if trace.rerank else trace.retrieved
            gold = set(item["gold"])
            ranked.append(([c.chunk.id for c in order], gold))
            in_context.append(hit_at([c.chunk.id for c in trace.context], gold, len(trace.context)))
            searched.append(trace.searched is not None)
            on_item()
        metrics = dict(summarize(ranked, hits=(1, 5)))
        metrics[f"in context (top {pipeline.top_n})"] = mean(in_context)
        metrics["rewritten"] = mean(1.0 if s else 0.0 for s in searched)
        report[method] = metrics
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.followup_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="a SQuAD v1.1-format file (SQuAD, KorQuAD 1.0)")
    parser.add_argument("--articles", help="N or A:B: the articles to use (a test split)")
    parser.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit",
        type=int,
        help="a seeded sample of this many follow-ups (and as many topic changes)",
    )
    parser.add_argument("--out", type=Path, default=Path("follow-ups-report.json"))
    args = parser.parse_args(argv)
    setup_logging(False)
    settings = load_settings(args.config)
    corpus = load_squad(args.path, articles=parse_span(args.articles) if args.articles else None)
    follow_ups, changes = make_pairs(corpus, args.seed)
    if args.limit is not None:
        picked = sorted(
            random.Random(args.seed).sample(
                range(len(follow_ups)), min(args.limit, len(follow_ups))
            )
        )
        follow_ups, changes = [follow_ups[i] for i in picked], [changes[i] for i in picked]
    if not follow_ups:
        raise ValueError(
            f"{args.path}: no two questions of one article name its title; nothing to measure"
        )
    settings = eval_settings(settings, corpus)
    pipeline = build_pipeline(settings, generator=False, create_store=True)
    endpoint = settings.llm.base_url.strip() != ""
    methods = ["original", "off", "concat"] + (["llm"] if endpoint else [])
    if endpoint:
        pipeline = dataclasses.replace(pipeline, generator=load_generator(settings))
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("indexing passages", total=len(corpus.passages))
        index_passages(
            pipeline.retriever.store,
            corpus.passages,
            pipeline.retriever.embedder,
            on_batch=lambda n: bar.advance(task, n),
        )
        task = bar.add_task(
            "searching", total=len(follow_ups) * len(methods) + len(changes) * (len(methods) - 1)
        )
        report = {
            "follow-ups": measure(pipeline, follow_ups, methods, lambda: bar.advance(task)),
            "topic changes": measure(pipeline, changes, methods[1:], lambda: bar.advance(task)),
        }
    languages = sorted({question_language(f["question"]) or "?" for f in follow_ups})
    print(
        f"{len(follow_ups)} follow-ups and {len(changes)} topic changes ({', '.join(languages)}), "
        f"configured method: {resolve_method(settings.retrieval.follow_ups, endpoint)}"
    )
    print(
        "| questions | searched | hit@1 | hit@5 | MRR@10 | in context | rewritten "
        "|\n|---|---|---|---|---|---|---|"
    )
    for kind, runs in report.items():
        for method, m in runs.items():
            context = next(v for k, v in m.items() if k.startswith("in context"))
            print(
                f"| {kind} | {method} | {m['hit@1']:.3f} | {m['hit@5']:.3f} | {m['mrr@10']:.3f} | "
                f"{context:.3f} | "
                f"{m['rewritten']:.2f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "config": {
                    "dataset": str(args.path),
                    "articles": args.articles,
                    "seed": args.seed,
                    "limit": args.limit,
                    "top_k": pipeline.top_k,
                    "top_n": pipeline.top_n,
                },
                "runs": report,
                "follow_ups": follow_ups,
                "topic_changes": changes,
            },
            ensure_ascii=False,
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"\nreport written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
