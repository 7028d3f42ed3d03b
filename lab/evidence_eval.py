"""Which scorer finds the sentence that supports an answer: measured on SQuAD-format data.

    python -m lab.evidence_eval ../shared/data/squad/squad-v1.1-dev-part-a.json --articles 12:24 \\
        --limit 400 --config config.offline.toml --out reports/evidence-en-test.json

For each sampled question, the claim is the question followed by its gold answer
(what an answer sentence states), the candidates are the sentences of its gold
paragraph, and a pick is right when the chosen sentence contains the gold answer.
Scorers: the configured bi-encoder, the configured reranker (and the ones routed
per language), character-bigram overlap (no model), and the first sentence as a floor.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from lab.datasets import parse_span
from lab.metrics import mean
from rag.cli import run_cli, setup_logging
from rag.config import load_settings
from rag.evidence import bigram_scorer, embedder_scorer, reranker_scorer
from rag.pipeline import load_configured_reranker, load_embedder
from rag.sentences import split_sentences


def items(path: Path, articles: slice | None) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    out = []
    for article in data[articles] if articles is not None else data:
        for paragraph in article["paragraphs"]:
            sentences = split_sentences(paragraph["context"])
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]["text"] if qa.get("answers") else ""
                right = [i for i, s in enumerate(sentences) if answer and answer in s]
                if len(sentences) > 1 and right:
                    out.append(
                        {
                            "question": qa["question"],
                            "answer": answer,
                            "sentences": sentences,
                            "right": right,
                        }
                    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.evidence_eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--articles", help="N or A:B (a test split)")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config")
    parser.add_argument("--out", type=Path, default=Path("evidence-report.json"))
    args = parser.parse_args(argv)
    setup_logging(False)
    settings = load_settings(args.config)
    found = items(args.path, parse_span(args.articles) if args.articles else None)
    sample = random.Random(args.seed).sample(found, min(args.limit, len(found)))
    scorers = {
        "bi-encoder": embedder_scorer(load_embedder(settings)),
        "character bigrams": bigram_scorer(),
    }
    if settings.reranker.enabled:
        scorers["reranker"] = reranker_scorer(load_configured_reranker(settings))
    report = {"first sentence": mean(1.0 if 0 in it["right"] else 0.0 for it in sample)}
    for name, score in scorers.items():
        picks = []
        for it in sample:
            scores = list(score(f"{it['question']} {it['answer']}", it["sentences"]))
            picks.append(
                1.0 if max(range(len(scores)), key=scores.__getitem__) in it["right"] else 0.0
            )
        report[name] = mean(picks)
    sentences = mean(len(it["sentences"]) for it in sample)
    print(f"{len(sample)} questions, {sentences:.1f} sentences a paragraph; right sentence picked:")
    for name, value in report.items():
        print(f"  {name}: {value:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "dataset": str(args.path),
                "articles": args.articles,
                "questions": len(sample),
                "seed": args.seed,
                "embedder": settings.embedder.model,
                "reranker": settings.reranker.model if settings.reranker.enabled else None,
                "accuracy": report,
            },
            ensure_ascii=False,
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
