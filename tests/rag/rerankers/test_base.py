"""Pure helpers shared by all rerankers, and the Reranker base class: exact values, no models."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence

import pytest

from rag.rerankers.base import (
    CPU_BATCH_TOKENS,
    Reranker,
    RerankError,
    check_options,
    length_sorted_batches,
    normalize_scores,
    rank_candidates,
)
from rag.rerankers.cache import ScoreCache
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
    assert scores == pytest.approx(
        [math.exp(-2) / total, math.exp(-1) / total, 1.0 / total], abs=1e-15
    )
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
    ranked = rank_candidates(
        candidates, [0.1, 3.0, -1.0, 2.0], [False, True, False, False], "sigmoid"
    )
    assert [c.chunk.text for c in ranked] == ["b", "d", "a", "c"]
    assert [c.rank for c in ranked] == [1, 2, 3, 4]
    assert [c.rerank_raw for c in ranked] == [3.0, 2.0, 0.1, -1.0]
    assert [c.rerank_score for c in ranked] == pytest.approx(
        normalize_scores([3.0, 2.0, 0.1, -1.0], "sigmoid")
    )
    assert [c.truncated for c in ranked] == [True, False, False, False]
    # Retrieval fields travel unchanged.
    assert [(c.retrieval_rank, c.retrieval_score) for c in ranked] == [
        (2, candidates[1].retrieval_score),
        (4, candidates[3].retrieval_score),
        (1, candidates[0].retrieval_score),
        (3, candidates[2].retrieval_score),
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
    # 600 + 500 would pad to 1,200 > 1,024; 500 + 300 pad to 1,000; 260 x 4 = 1,040
    # does not fit, 260 x 3 does
    assert batches == [[7], [0, 2], [5, 1, 3], [4, 6, 8]]
    # batch_size caps
    assert length_sorted_batches([40] * 9, 4, max_tokens=1024) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    for batch in batches:
        assert len(batch) <= 4 and (
            len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 1024
        )
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    # 0: no cap
    assert length_sorted_batches(lengths, 4, max_tokens=0) == length_sorted_batches(lengths, 4)
    # longer than the budget: alone, not lost
    assert length_sorted_batches([2000], 4, max_tokens=1024) == [[0]]
    with pytest.raises(ValueError, match="max_tokens = -1: must be a whole number >= 0"):
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


# --- the base class: a kind writes score_pairs, the base does the rest
# ----------------------------------


class WordOverlap(Reranker):
    """A whole reranker in one method: the score is the number of query words in the passage.

    A passage of more than ``max_length`` words is cut there (and flagged), so the flags and the
    scores depend on the options the base class keeps. Every call is recorded, batches included.
    """

    kind = "word-overlap"

    def __init__(self, **options) -> None:
        super().__init__(
            **{
                "name": "overlap-v1",
                "device": "cpu",
                "dtype": "words",
                "backend": "python",
                "batch_size": 2,
                "max_length": 8,
                "normalize": "none",
                **options,
            }
        )
        self.calls: list[list[str]] = []
        self.forwards: list[list[str]] = []

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        self.calls.append(list(passages))
        words = [p.lower().split() for p in passages]
        wanted = set(query.lower().split())
        raw = [0.0] * len(passages)
        for batch in self.batches([len(w) for w in words]):
            self.forwards.append([passages[i] for i in batch])
            for i in batch:
                raw[i] = float(sum(w in wanted for w in words[i][: self.max_length]))
        return raw, [len(w) > self.max_length for w in words]


OVERLAP_QUERY = "battery warranty months"
OVERLAP_TEXTS = [
    "expense reports are due in thirty days",
    "the battery warranty lasts 24 months",
    "battery packs are swapped at the dock",
    "one two three four five six seven eight nine battery warranty months",  # 12 words: cut at 8
]


def test_a_kind_that_writes_only_score_pairs_reranks() -> None:
    reranker = WordOverlap()
    candidates = make_candidates(OVERLAP_TEXTS)
    before = copy.deepcopy(candidates)
    ranked = reranker.rerank(OVERLAP_QUERY, candidates)
    assert candidates == before
    # 3 overlapping words, then 1, then the cut passage (its words past the 8th are not seen: 0) and
    # 0, tie by retrieval order.
    assert [c.chunk.text for c in ranked] == [
        OVERLAP_TEXTS[1],
        OVERLAP_TEXTS[2],
        OVERLAP_TEXTS[0],
        OVERLAP_TEXTS[3],
    ]
    assert [c.rerank_raw for c in ranked] == [3.0, 1.0, 0.0, 0.0]
    assert [c.rerank_score for c in ranked] == [3.0, 1.0, 0.0, 0.0]  # normalize = "none"
    assert [c.truncated for c in ranked] == [False, False, False, True]
    assert [c.rank for c in ranked] == [1, 2, 3, 4]
    assert reranker.calls == [OVERLAP_TEXTS]
    # rerank_counted: the same ranking, and nothing reused without a cache.
    counted, reused = reranker.rerank_counted(OVERLAP_QUERY, candidates)
    assert counted == ranked and reused == 0
    assert len(reranker.calls) == 2
    assert reranker.rerank(OVERLAP_QUERY, []) == [] and reranker.rerank_counted(
        OVERLAP_QUERY, []
    ) == ([], 0)
    assert len(reranker.calls) == 2  # nothing to score: the kind is not asked


def test_the_base_normalises_with_the_kinds_option() -> None:
    ranked = WordOverlap(normalize="sigmoid").rerank(OVERLAP_QUERY, make_candidates(OVERLAP_TEXTS))
    assert [c.rerank_score for c in ranked] == pytest.approx(
        normalize_scores([3.0, 1.0, 0.0, 0.0], "sigmoid")
    )
    softmax = WordOverlap(normalize="softmax").rerank(OVERLAP_QUERY, make_candidates(OVERLAP_TEXTS))
    assert sum(c.rerank_score for c in softmax) == pytest.approx(1.0)


def test_the_base_batches_by_length_with_the_kinds_options() -> None:
    reranker = WordOverlap(batch_size=2)
    assert reranker.batch_tokens == CPU_BATCH_TOKENS  # 0 (automatic) on cpu
    reranker.score_pairs(OVERLAP_QUERY, OVERLAP_TEXTS)
    # Longest first, at most batch_size per forward.
    assert reranker.forwards == [
        [OVERLAP_TEXTS[3], OVERLAP_TEXTS[0]],
        [OVERLAP_TEXTS[2], OVERLAP_TEXTS[1]],
    ]
    assert reranker.batches([3, 10, 1, 7, 7]) == length_sorted_batches(
        [3, 10, 1, 7, 7], 2, CPU_BATCH_TOKENS
    )
    # A token budget narrows the batches: 12 words x 2 > 20, 7 x 2 <= 20.
    narrow = WordOverlap(batch_size=4, batch_tokens=20)
    narrow.score_pairs(OVERLAP_QUERY, OVERLAP_TEXTS)
    assert narrow.forwards == [
        [OVERLAP_TEXTS[3]],
        [OVERLAP_TEXTS[0], OVERLAP_TEXTS[2]],
        [OVERLAP_TEXTS[1]],
    ]
    assert WordOverlap(device="cuda:0").batch_tokens == 0  # no cap on a GPU
    wide = WordOverlap(batch_size=16, device="cuda:0")
    wide.score_pairs(OVERLAP_QUERY, OVERLAP_TEXTS)
    assert wide.forwards == [
        [OVERLAP_TEXTS[3], OVERLAP_TEXTS[0], OVERLAP_TEXTS[2], OVERLAP_TEXTS[1]]
    ]


def test_the_base_caches_for_any_kind() -> None:
    cache = ScoreCache(max_pairs=3)
    reranker = WordOverlap()
    assert (
        reranker.cache is None
        and reranker.with_cache(cache) is reranker
        and reranker.cache is cache
    )
    fresh = WordOverlap().rerank(OVERLAP_QUERY, make_candidates(OVERLAP_TEXTS))
    first, reused_first = reranker.rerank_counted(OVERLAP_QUERY, make_candidates(OVERLAP_TEXTS[:2]))
    assert reused_first == 0 and reranker.calls == [OVERLAP_TEXTS[:2]] and len(cache) == 2
    # Two known, two new: only the new reach score_pairs; the ranking is the
    # uncached one, flags included.
    ranked, reused = reranker.rerank_counted(OVERLAP_QUERY, make_candidates(OVERLAP_TEXTS))
    assert reused == 2 and reranker.calls[-1] == OVERLAP_TEXTS[2:]
    assert [(c.chunk.id, c.rerank_raw, c.truncated) for c in ranked] == [
        (c.chunk.id, c.rerank_raw, c.truncated) for c in fresh
    ]
    assert len(cache) == 3  # bounded: the least recently used pair went out
    # Another question is another pair.
    reranker.rerank(OVERLAP_QUERY + " battery", make_candidates(OVERLAP_TEXTS[:1]))
    assert reranker.calls[-1] == OVERLAP_TEXTS[:1]
    # with_cache(None): back to scoring every pair.
    reranker.with_cache(None)
    calls = len(reranker.calls)
    assert reranker.rerank_counted(OVERLAP_QUERY, make_candidates(OVERLAP_TEXTS))[1] == 0
    assert len(reranker.calls) == calls + 1 and reranker.calls[-1] == OVERLAP_TEXTS


def test_the_base_describes_and_checks_the_options() -> None:
    reranker = WordOverlap()
    assert (reranker.name, reranker.kind, reranker.device, reranker.dtype, reranker.backend) == (
        "overlap-v1",
        "word-overlap",
        "cpu",
        "words",
        "python",
    )
    assert reranker.describe() == "word-overlap: overlap-v1 (cpu, words, python)"
    # torch and http are not shown: they are what a kind runs on when nothing else is said.
    assert WordOverlap(backend="torch").describe() == "word-overlap: overlap-v1 (cpu, words)"
    assert (
        WordOverlap(backend="http", device="host:80").describe()
        == "word-overlap: overlap-v1 (host:80, words)"
    )
    with pytest.raises(ValueError, match="batch_size = 0: must be a whole number >= 1"):
        WordOverlap(batch_size=0)
    with pytest.raises(ValueError, match="max_length = 7: must be a whole number >= 8"):
        WordOverlap(max_length=7)
    with pytest.raises(ValueError, match="batch_tokens = -1: must be a whole number >= 0"):
        WordOverlap(batch_tokens=-1)
    with pytest.raises(ValueError, match="'l2'"):
        WordOverlap(normalize="l2")


def test_a_kind_without_score_pairs_cannot_be_made() -> None:
    class Incomplete(Reranker):
        kind = "incomplete"

    with pytest.raises(TypeError, match="score_pairs"):
        Incomplete(
            name="x",
            device="cpu",
            dtype="float32",
            backend="torch",
            batch_size=1,
            max_length=8,
            normalize="none",
        )


def test_fusion_with_the_first_stage_is_reciprocal_rank_fusion_and_changes_no_score():
    from rag.rerankers.base import fuse_with_retrieval

    texts = ["a", "b", "c", "d"]
    candidates = make_candidates(texts)  # retrieval ranks 1..4 in this order
    # the reranker put them as d, c, a, b (ranks 1..4)
    reranked = [
        dataclasses.replace(candidates[i], rank=r, rerank_score=1.0 - r / 10, rerank_raw=float(-r))
        for r, i in enumerate([3, 2, 0, 1], start=1)
    ]
    # weight 0: the reranker's order, untouched
    assert fuse_with_retrieval(reranked, 0.0) == reranked
    k = 60
    fused = fuse_with_retrieval(reranked, 1.0, k)
    expected = sorted(reranked, key=lambda c: -(1 / (k + c.rank) + 1 / (k + c.retrieval_rank)))
    assert [c.chunk.text for c in fused] == [c.chunk.text for c in expected]
    assert [c.rank for c in fused] == [1, 2, 3, 4]
    by_text = {c.chunk.text: c for c in reranked}
    assert all(c.rerank_score == by_text[c.chunk.text].rerank_score for c in fused)
    # a large weight gives the first stage's order back
    assert [c.chunk.text for c in fuse_with_retrieval(reranked, 100.0, k)] == texts
    with pytest.raises(ValueError, match="retrieval weight = .*: must be a number >= 0"):
        fuse_with_retrieval(reranked, -1.0)
