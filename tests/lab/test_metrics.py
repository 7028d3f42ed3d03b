"""Metric functions against cases computed by hand."""

import math

import numpy as np
import pytest

from lab.metrics import (
    first_hit,
    hit_at,
    holds_answer,
    mean,
    ndcg_at,
    percentile,
    recall_at,
    reciprocal_rank,
    summarize,
)
from rag.citations import without_citations

RANKED = ["d", "a", "x", "b", "y"]


def test_first_hit():
    assert first_hit(RANKED, {"b"}) == 4
    assert first_hit(RANKED, {"b", "a"}) == 2
    assert first_hit(RANKED, {"zz"}) is None
    assert first_hit([], {"a"}) is None


def test_hit_at_k():
    assert [hit_at(RANKED, {"b"}, k) for k in (1, 3, 4, 10)] == [0.0, 0.0, 1.0, 1.0]
    assert hit_at(RANKED, {"d"}, 1) == 1.0


def test_reciprocal_rank_is_cut_at_k():
    assert reciprocal_rank(RANKED, {"b"}, 10) == 0.25
    assert reciprocal_rank(RANKED, {"b"}, 3) == 0.0  # found at 4, outside the first 3
    assert reciprocal_rank(RANKED, {"x", "b"}, 10) == pytest.approx(1 / 3)


def test_recall_at_k():
    assert recall_at(RANKED, {"a", "b"}, 2) == 0.5
    assert recall_at(RANKED, {"a", "b"}, 4) == 1.0
    assert recall_at(RANKED, {"q"}, 5) == 0.0


def test_ndcg_by_hand():
    # one gold at rank 2: DCG = 1/log2(3); ideal = 1/log2(2) = 1
    assert ndcg_at(RANKED, {"a"}, 10) == pytest.approx(1 / math.log2(3))
    # golds at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    assert ndcg_at(RANKED, {"a", "b"}, 10) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    )
    # cut at k = 3: only rank 2 counts, and the ideal keeps two golds within 3
    assert ndcg_at(RANKED, {"a", "b"}, 3) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    )
    assert ndcg_at(RANKED, {"d"}, 1) == 1.0 and ndcg_at(RANKED, {"q"}, 5) == 0.0


def test_summarize_averages_over_all_queries():
    runs = [(RANKED, {"d"}), (RANKED, {"b"}), (RANKED, {"missing"})]
    got = summarize(runs, hits=(1, 5), mrr_k=10, ndcg_k=10)
    assert got["hit@1"] == pytest.approx(1 / 3) and got["hit@5"] == pytest.approx(2 / 3)
    assert got["mrr@10"] == pytest.approx((1 + 0.25 + 0) / 3)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 0) / 3)


def test_percentile_matches_numpy():
    values = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([4.0], 95) == 4.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hit_at(RANKED, {"a"}, 0), "k = 0"),
        (lambda: reciprocal_rank(RANKED, {"a"}, True), "k = True"),
        (lambda: recall_at(RANKED, set(), 3), "at least one gold id"),
        (lambda: ndcg_at(RANKED, set(), 3), "at least one gold id"),
        (lambda: percentile([], 50), "no values"),
        (lambda: percentile([1.0], 101), "q = 101"),
        (lambda: mean([]), "no values"),
        (lambda: summarize([]), "no queries"),
    ],
)
def test_bad_inputs_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_citation_markers_are_taken_out_before_an_answer_is_scored():
    answer = "The documents give no slope limit [3]."
    assert holds_answer(answer, ["3%"]) == 1.0  # the marker's 3 reads as a word of the answer
    assert holds_answer(without_citations(answer), ["3%"]) == 0.0
    assert without_citations("16 cores [5], 64 GB [1, 2]") == "16 cores , 64 GB"
