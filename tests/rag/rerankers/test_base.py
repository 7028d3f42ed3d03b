"""Pure helpers shared by all rerankers: exact values, no models."""
from __future__ import annotations

import copy
import math

import pytest

from rag.rerankers.base import (
    RerankError,
    check_options,
    length_sorted_batches,
    normalize_scores,
    rank_candidates,
)
from tests.rag.rerankers.helpers import make_candidates


def test_sigmoid_exact_values() -> None:
    assert normalize_scores([0.0, 2.0, -2.0], "sigmoid") == pytest.approx(
        [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))], abs=1e-15
    )


def test_sigmoid_does_not_overflow_for_large_logits() -> None:
    assert normalize_scores([1000.0, -1000.0], "sigmoid") == [1.0, 0.0]


def test_softmax_is_exp_normalize_over_the_candidates() -> None:
    scores = normalize_scores([1.0, 2.0, 3.0], "softmax")
    total = math.exp(-2) + math.exp(-1) + 1.0
    assert scores == pytest.approx([math.exp(-2) / total, math.exp(-1) / total, 1.0 / total], abs=1e-15)
    assert sum(scores) == pytest.approx(1.0)
    # Shift-invariant and safe for logits whose exp() overflows.
    assert normalize_scores([1001.0, 1002.0, 1003.0], "softmax") == pytest.approx(scores)


def test_none_returns_python_floats() -> None:
    import numpy as np

    scores = normalize_scores([np.float32(1.5), -2], "none")
    assert scores == [1.5, -2.0]
    assert all(type(s) is float for s in scores)


def test_empty_input_normalizes_to_empty() -> None:
    for method in ("sigmoid", "softmax", "none"):
        assert normalize_scores([], method) == []


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"'minmax'.*sigmoid, softmax, none"):
        normalize_scores([1.0], "minmax")


def test_rank_sorts_by_score_and_numbers_from_one() -> None:
    candidates = make_candidates(["a", "b", "c", "d"])
    ranked = rank_candidates(candidates, [0.1, 3.0, -1.0, 2.0], [False, True, False, False], "sigmoid")
    assert [c.chunk.text for c in ranked] == ["b", "d", "a", "c"]
    assert [c.rank for c in ranked] == [1, 2, 3, 4]
    assert [c.rerank_raw for c in ranked] == [3.0, 2.0, 0.1, -1.0]
    assert [c.rerank_score for c in ranked] == pytest.approx(normalize_scores([3.0, 2.0, 0.1, -1.0], "sigmoid"))
    assert [c.truncated for c in ranked] == [True, False, False, False]
    # Retrieval fields travel unchanged.
    assert [(c.retrieval_rank, c.retrieval_score) for c in ranked] == [
        (2, candidates[1].retrieval_score), (4, candidates[3].retrieval_score),
        (1, candidates[0].retrieval_score), (3, candidates[2].retrieval_score),
    ]


def test_ties_keep_retrieval_order() -> None:
    candidates = make_candidates(["a", "b", "c"])
    shuffled = [candidates[2], candidates[0], candidates[1]]
    ranked = rank_candidates(shuffled, [1.0, 1.0, 1.0], [False] * 3, "none")
    assert [c.retrieval_rank for c in ranked] == [1, 2, 3]


def test_saturated_sigmoid_still_sorts_by_raw_score() -> None:
    candidates = make_candidates(["a", "b"])
    ranked = rank_candidates(candidates, [40.0, 50.0], [False, False], "sigmoid")
    assert [c.chunk.text for c in ranked] == ["b", "a"]
    assert ranked[0].rerank_score == ranked[1].rerank_score == 1.0


def test_rank_does_not_mutate_inputs() -> None:
    candidates = make_candidates(["a", "b"])
    before = copy.deepcopy(candidates)
    ranked = rank_candidates(candidates, [0.0, 1.0], [False, False], "none")
    assert candidates == before
    assert all(r is not c for r in ranked for c in candidates)


def test_rank_empty_and_mismatched_lengths() -> None:
    assert rank_candidates([], [], [], "sigmoid") == []
    with pytest.raises(ValueError, match="2 candidates but 1 scores"):
        rank_candidates(make_candidates(["a", "b"]), [1.0], [False, False], "none")


def test_nan_score_is_a_rerank_error_naming_the_chunk() -> None:
    with pytest.raises(RerankError, match="doc.md#1"):
        rank_candidates(make_candidates(["a", "b"]), [1.0, float("nan")], [False, False], "none")


def test_length_sorted_batches_longest_first_and_complete() -> None:
    batches = length_sorted_batches([3, 10, 1, 7, 7], 2)
    assert batches == [[1, 3], [4, 0], [2]]
    assert length_sorted_batches([], 4) == []
    with pytest.raises(ValueError, match="0"):
        length_sorted_batches([1], 0)


def test_a_token_budget_makes_short_inputs_travel_wide_and_long_ones_narrow() -> None:
    lengths = [500, 40, 300, 40, 40, 260, 40, 600, 40]
    batches = length_sorted_batches(lengths, 4, max_tokens=1024)
    # 600 + 500 would pad to 1,200 > 1,024; 500 + 300 pad to 1,000; 260 x 4 = 1,040 does not fit, 260 x 3 does
    assert batches == [[7], [0, 2], [5, 1, 3], [4, 6, 8]]
    assert length_sorted_batches([40] * 9, 4, max_tokens=1024) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]  # batch_size caps
    for batch in batches:
        assert len(batch) <= 4 and (len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 1024)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert length_sorted_batches(lengths, 4, max_tokens=0) == length_sorted_batches(lengths, 4)  # 0: no cap
    assert length_sorted_batches([2000], 4, max_tokens=1024) == [[0]]  # longer than the budget: alone, not lost
    with pytest.raises(ValueError, match="max_tokens must be a whole number >= 0"):
        length_sorted_batches(lengths, 4, max_tokens=-1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0, "max_length": 512, "normalize": "none"}, "batch_size.*0"),
        ({"batch_size": 4, "max_length": 4, "normalize": "none"}, "max_length.*4"),
        ({"batch_size": 4, "max_length": 512, "normalize": "l2"}, "'l2'"),
    ],
)
def test_check_options_names_the_bad_value(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_options(**options)
