"""Place the chosen chunks where an LLM reads them best.

LLMs use what sits at the start and the end of a long context better than what
sits in the middle (Liu et al. 2023, "Lost in the Middle": with 20 documents,
GPT-3.5 answered 75.8% right with the answer first, 53.8% in the middle and
63.2% last). After reranking, ``lost_in_the_middle`` puts the best chunk first,
the second best last, and lets the weakest ones sink to the middle. A small
model reads the other way: the offline profile's Gemma 3 270M copies its answer
from the sources nearest the question, so ``best_last`` puts the best chunk
last, right before the question (measured in guides/answers.md).

Every strategy is a pure function from a sequence of candidates to a new list;
the input is never changed. Candidates are expected in ranked order, best first
(what a retriever or reranker returns), but the strategies that depend on
quality sort by ``Candidate.rank`` themselves so a caller that passes another
order still gets the documented placement. ``rank`` is the position the latest
ranking stage gave (the reranker's, or its order fused with the first stage's
when ``reranker.retrieval_weight`` > 0), so "best" here means what the pipeline
ranked best, not the highest raw score. The positions the LLM sees are the
list positions: the ``rank`` fields are left as the ranking stage set them,
so the trace can still show how each candidate ranked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rag.types import Candidate

Strategy = Callable[[Sequence[Candidate]], list[Candidate]]


def keep_order(candidates: Sequence[Candidate]) -> list[Candidate]:
    """``none``: the order the ranking stage produced, unchanged."""
    return list(candidates)


def descending(candidates: Sequence[Candidate]) -> list[Candidate]:
    """``descending``: best rank first; ties keep their given order (stable sort)."""
    return sorted(candidates, key=lambda c: c.rank)


def lost_in_the_middle(candidates: Sequence[Candidate]) -> list[Candidate]:
    """``lost_in_the_middle``: best first, second best last, the weakest in the middle.

    Ranked 1..9 becomes 1,3,5,7,9,8,6,4,2 and 1..8 becomes 1,3,5,7,8,6,4,2: the
    odd ranks fill the front in order, the even ranks fill the back in reverse,
    so the best chunk is always first whether the count is odd or even.
    """
    ranked = descending(candidates)
    front = ranked[0::2]
    back = ranked[1::2]
    return front + back[::-1]


def best_last(candidates: Sequence[Candidate]) -> list[Candidate]:
    """``best_last``: worst first, best last, right before the question (ranked 1..5 becomes
    5,4,3,2,1); ties keep their given order among themselves, reversed."""
    return descending(candidates)[::-1]


STRATEGIES: dict[str, Strategy] = {
    "none": keep_order,
    "descending": descending,
    "lost_in_the_middle": lost_in_the_middle,
    "best_last": best_last,
}


def check_strategy(strategy: str) -> None:
    """An unknown name raises ValueError listing the valid ones."""
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown reorder strategy {strategy!r}; valid: {', '.join(sorted(STRATEGIES))}"
        )


def reorder(candidates: Sequence[Candidate], strategy: str) -> list[Candidate]:
    """Apply the named strategy (see check_strategy for unknown names)."""
    check_strategy(strategy)
    return STRATEGIES[strategy](candidates)
