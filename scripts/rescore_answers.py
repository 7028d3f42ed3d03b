"""Score the answers stored in lab.evaluate reports again, with today's metrics.

    python scripts/rescore_answers.py reports/answers/*.json
    python scripts/rescore_answers.py --pair A.json B.json   # per question: who holds the gold

A report written with --answers keeps every question's answer (and, with --decline, the answer
given without the gold passage), so a metric that changed since (KorQuAD's character F1 for
Korean) or one added since (answered in the question's language) applies to old runs too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab.metrics import exact_match, holds_answer, mean, token_f1
from rag.citations import without_citations
from rag.generate import is_decline
from rag.languages import question_language


def main(paths: list[str]) -> None:
    print(
        "| report | run | questions | EM | F1 | holds gold | declined (gold in context) | "
        "declined (gold removed) | question's language |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        for name, run in json.loads(Path(path).read_text(encoding="utf-8"))["runs"].items():
            rows = run.get("answers", [])
            if not rows:
                continue
            replies = [without_citations(r["answer"]) for r in rows]
            with_gold = [is_decline(r["answer"]) for r in rows if r["gold_in_context"]]
            without = [
                is_decline(r["answer_without_gold"]) for r in rows if "answer_without_gold" in r
            ]
            same = [
                question_language(r["answer"]) == question_language(r["question"])
                for r in rows
                if question_language(r["question"]) is not None
            ]
            print(
                f"| {Path(path).stem} | {name} | {len(rows)} | "
                f"{mean(exact_match(a, r['gold']) for a, r in zip(replies, rows)):.3f} "
                f"| {mean(token_f1(a, r['gold']) for a, r in zip(replies, rows)):.3f} | "
                f"{mean(holds_answer(a, r['gold']) for a, r in zip(replies, rows)):.3f} | "
                f"{mean(map(float, with_gold)):.3f} "
                f"| {mean(map(float, without)) if without else float('nan'):.3f} | "
                f"{mean(map(float, same)):.3f} |"
            )


def pair(first: str, second: str) -> None:
    """For each run both reports hold (by first stage or reranked), how many questions' answers hold
    the gold in one report and not in the other."""
    runs = [
        {
            bool(run.get("reranker")): {r["question"]: r for r in run.get("answers", [])}
            for run in json.loads(Path(path).read_text(encoding="utf-8"))["runs"].values()
        }
        for path in (first, second)
    ]
    for reranked in sorted(set(runs[0]) & set(runs[1])):
        a, b = runs[0][reranked], runs[1][reranked]
        held = [(holds(a[q]), holds(b[q])) for q in a if q in b]
        print(
            f"{'reranked' if reranked else 'first stage'}: {len(held)} questions; only "
            f"{Path(first).stem} holds the gold: {sum(x and not y for x, y in held)}; only "
            f"{Path(second).stem}: {sum(y and not x for x, y in held)}"
        )


def holds(row: dict) -> bool:
    return holds_answer(without_citations(row["answer"]), row["gold"]) == 1.0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "reports", nargs="+", help="lab.evaluate JSON reports written with --answers"
    )
    parser.add_argument(
        "--pair",
        action="store_true",
        help="two reports of the same questions: count the questions each gets right alone",
    )
    args = parser.parse_args()
    if args.pair:
        if len(args.reports) != 2:
            parser.error(f"--pair takes two reports, not {len(args.reports)}")
        pair(*args.reports)
    else:
        main(args.reports)
