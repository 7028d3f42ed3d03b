"""Ask English questions about docs/ with and without reranking, and check each answer.

For each question: where the chunk that answers it ranks on each side, and whether the local
LLM's answer holds the expected words. The offline profile over a store of docs/
(`python -m ingest docs/`); the reorder strategy can be set to compare two. What the README
says of the hero question and of the context order on the sample corpus comes from:

    python scripts/sample_answers.py --strategy best_last
    python scripts/sample_answers.py --strategy lost_in_the_middle

A question was right when its answer holds every expected string whole, after SQuAD's
normalisation (``lab.metrics.holds_answer``: "5 minutes" is not in "15 minutes").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.metrics import holds_answer  # noqa: E402
from rag.citations import without_citations  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.pipeline import build_pipeline  # noqa: E402

# (question, a phrase only the answering chunk holds, what a right answer must say)
QUESTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "What hardware does the on-premises edition need per 200 robots?",
        "16 CPU cores",
        ("16", "64"),
    ),
    ("How long is the battery pack warranty?", "covered for 24 months or 2,000", ("24 months",)),
    (
        "How many days of paid sick leave do full-time staff get?",
        "10 days of paid sick leave",
        ("10 days",),
    ),
    (
        "How many days a week may interns work remotely?",
        "Interns may work remotely 1 day per week",
        ("1 day",),
    ),
    (
        "When do carried-over leave days expire?",
        "carried-over days expire on 31 March",
        ("31 March",),
    ),
    (
        "How fast must a SEV1 page be acknowledged?",
        "A SEV1 page not acknowledged within 5 minutes",
        ("5 minutes",),
    ),
    (
        "When does the weekly on-call handover happen?",
        "Handover happens every Monday at 10:00 KST",
        ("Monday",),
    ),
    ("What is the rated payload of the NR-400?", "400 kg for the NR-400", ("400 kg",)),
    (
        "How long does the NR-400 take to charge from 20% to 80%?",
        "70 minutes for the NR-400",
        ("70 minutes",),
    ),
    (
        "What is the default low-battery threshold since Beacon 4.2.0?",
        "changed from 25% to 20%",
        ("20%",),
    ),
    ("How long are Beacon audit logs kept?", "3 years instead of 1 year", ("3 years",)),
    (
        "How long do robots keep working after losing the network connection?",
        "up to 90 seconds",
        ("90 seconds",),
    ),
    ("How many robots can an Enterprise site manage?", "400 robots per site", ("400",)),
    ("What is the maximum floor slope for the NR-400?", "3% for the NR-400", ("3%",)),
    ("How long does installation take for a site with 20 robots?", "about 2 weeks", ("2 weeks",)),
    (
        "When does Beacon 3.x reach end of support?",
        "Beacon 3.x reaches end of support on 30 June 2025",
        ("30 June 2025",),
    ),
    ("How many map versions does Beacon keep?", "the last 20 versions of each map", ("20",)),
    (
        "Which role is needed to run a remote emergency stop?",
        "Requires the new fleet:estop role",
        ("fleet:estop",),
    ),
    (
        "Who must be told by phone when a customer reports an injury?",
        "Head of Safety",
        ("Head of Safety",),
    ),
    ("What is the battery capacity of the NR-400?", "3.2 kWh in the NR-400", ("3.2 kWh",)),
    (
        "How many charge cycles is the battery pack rated for?",
        "3,000 full charge cycles",
        ("3,000",),
    ),
    ("When is a localization problem a SEV2?", "3 or more", ("3 or more",)),
    (
        "What does an engineer get after being paged at 3 a.m.?",
        "next morning off",
        ("morning off",),
    ),
]


def flat(text: str) -> str:
    return " ".join(text.split())


def says(answer: str, expected: tuple[str, ...]) -> bool:
    """Every expected string is in the answer whole (``lab.metrics.holds_answer``)."""
    return all(holds_answer(without_citations(answer), [e]) for e in expected)


def rank_of(candidates, phrase: str) -> int | None:
    return next(
        (i for i, c in enumerate(candidates, start=1) if phrase in flat(c.chunk.text)), None
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("RAG_CONFIG", "config.offline.toml"))
    parser.add_argument("--strategy", help="reorder strategy (default: the config's)")
    args = parser.parse_args()
    pipeline = build_pipeline(load_settings(args.config))
    print("| question | first stage: rank, right | reranked: rank, right |")
    print("|---|---|---|")
    tally = {(a, b): 0 for a in (True, False) for b in (True, False)}
    for question, phrase, expected in QUESTIONS:
        cells = []
        for rerank in (False, True):
            answer = pipeline.ask(question, rerank=rerank, strategy=args.strategy)
            trace = answer.trace
            ranked = trace.reranked if trace.rerank else trace.retrieved
            right = says(answer.text, expected)
            cells.append((rank_of(ranked, phrase), right, answer.text))
        tally[cells[0][1], cells[1][1]] += 1
        print(
            f"| {question} | "
            + " | ".join(f"#{r}, {'right' if ok else 'wrong'}: {text}" for r, ok, text in cells)
            + " |",
            flush=True,
        )
    print(
        f"\nboth right {tally[True, True]}, only reranked right {tally[False, True]}, "
        f"only first stage right {tally[True, False]}, both wrong {tally[False, False]} "
        f"(strategy {args.strategy or pipeline.reorder_strategy})"
    )


if __name__ == "__main__":
    main()
