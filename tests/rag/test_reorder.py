"""Exact tests for the reorder strategies (pure functions)."""

from __future__ import annotations

import random
import typing

import pytest

from rag.config import ReorderSettings
from rag.reorder import (
    STRATEGIES,
    best_last,
    descending,
    keep_order,
    lost_in_the_middle,
    reorder,
)
from rag.types import Candidate, Chunk


def make(
    rank: int, score: float | None = None, rerank: float | None = None, reranked: int | None = None
) -> Candidate:
    """A candidate whose retrieval rank is also its chunk id; by default a higher rank scores lower.
    ``reranked``: its rank after a later ranking stage (default: the retrieval rank)."""
    chunk = Chunk(
        id=str(rank),
        text=f"text {rank}",
        source=f"doc{rank}.md",
        page=None,
        chunk_index=0,
        content_hash=f"h{rank}",
    )
    retrieval = score if score is not None else 1.0 - rank / 100
    return Candidate(
        chunk=chunk,
        retrieval_score=retrieval,
        retrieval_rank=rank,
        rank=reranked if reranked is not None else rank,
        rerank_score=rerank,
    )


def ranked(n: int) -> list[Candidate]:
    return [make(i) for i in range(1, n + 1)]


def ids(candidates: list[Candidate]) -> list[int]:
    return [int(c.chunk.id) for c in candidates]


LOST_IN_THE_MIDDLE = {
    0: [],
    1: [1],
    2: [1, 2],
    3: [1, 3, 2],
    4: [1, 3, 4, 2],
    5: [1, 3, 5, 4, 2],
    6: [1, 3, 5, 6, 4, 2],
    7: [1, 3, 5, 7, 6, 4, 2],
    8: [1, 3, 5, 7, 8, 6, 4, 2],
    9: [1, 3, 5, 7, 9, 8, 6, 4, 2],
    10: [1, 3, 5, 7, 9, 10, 8, 6, 4, 2],
}


@pytest.mark.parametrize("n", sorted(LOST_IN_THE_MIDDLE))
def test_lost_in_the_middle_places_best_first_and_second_best_last(n):
    assert ids(reorder(ranked(n), "lost_in_the_middle")) == LOST_IN_THE_MIDDLE[n]


@pytest.mark.parametrize("n", range(11))
def test_none_and_descending_keep_ranked_input(n):
    assert ids(reorder(ranked(n), "none")) == list(range(1, n + 1))
    assert ids(reorder(ranked(n), "descending")) == list(range(1, n + 1))


@pytest.mark.parametrize("n", range(11))
def test_best_last_puts_the_best_chunk_right_before_the_question(n):
    assert ids(reorder(ranked(n), "best_last")) == list(range(n, 0, -1))
    shuffled = ranked(n)
    random.Random(n).shuffle(shuffled)
    assert ids(reorder(shuffled, "best_last")) == list(range(n, 0, -1))


@pytest.mark.parametrize("n", range(11))
def test_shuffled_input_is_sorted_by_score_except_for_none(n):
    shuffled = ranked(n)
    random.Random(n).shuffle(shuffled)
    assert ids(reorder(shuffled, "none")) == ids(shuffled)
    assert ids(reorder(shuffled, "descending")) == list(range(1, n + 1))
    assert ids(reorder(shuffled, "lost_in_the_middle")) == LOST_IN_THE_MIDDLE[n]


def test_the_latest_ranking_wins_over_retrieval():
    # Retrieval prefers 1 > 2 > 3; the reranker says 3 > 1 > 2.
    cands = [
        make(1, rerank=0.5, reranked=2),
        make(2, rerank=0.1, reranked=3),
        make(3, rerank=0.9, reranked=1),
    ]
    assert ids(descending(cands)) == [3, 1, 2]
    assert ids(lost_in_the_middle(cands)) == [3, 2, 1]
    assert ids(best_last(cands)) == [2, 1, 3]


def test_a_fused_rank_wins_over_the_rerank_score():
    # Fused with the first stage, 1 is ranked first although the reranker scored 3 higher:
    # the context follows the pipeline's final order, not the raw score.
    cands = [
        make(1, rerank=0.5, reranked=1),
        make(2, rerank=0.1, reranked=3),
        make(3, rerank=0.9, reranked=2),
    ]
    assert ids(descending(cands)) == [1, 3, 2]
    assert ids(lost_in_the_middle(cands)) == [1, 2, 3]


def test_descending_is_stable_for_ties():
    cands = [make(1, reranked=2), make(2, reranked=1), make(3, reranked=2), make(4, reranked=1)]
    assert ids(descending(cands)) == [2, 4, 1, 3]


def test_inputs_are_never_mutated_and_candidates_unchanged():
    original = ranked(7)
    given = list(original)
    as_tuple = tuple(original)
    for name in STRATEGIES:
        out = reorder(given, name)
        assert out is not given
        assert given == original
        assert reorder(as_tuple, name) == out
        # same objects, rank fields untouched
        assert all(any(c is o for o in original) for c in out)
        assert [c.rank for c in sorted(out, key=lambda c: c.rank)] == list(range(1, 8))


def test_functions_are_reachable_by_name():
    assert STRATEGIES == {
        "none": keep_order,
        "descending": descending,
        "lost_in_the_middle": lost_in_the_middle,
        "best_last": best_last,
    }


def test_strategy_names_match_the_config_choices():
    allowed = typing.get_args(ReorderSettings.model_fields["strategy"].annotation)
    assert set(allowed) == set(STRATEGIES)


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError) as err:
        reorder(ranked(3), "middle_out")
    message = str(err.value)
    assert "'middle_out'" in message
    assert "best_last, descending, lost_in_the_middle, none" in message
