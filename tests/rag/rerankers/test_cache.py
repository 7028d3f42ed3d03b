"""The score cache around a real reranker (the tiny cross-encoder loaded from disk): reused
scores equal fresh ones, only unknown pairs reach the model, changed text is scored again,
the cache stays bounded and is safe to share between threads."""
from __future__ import annotations

import threading

import pytest

from rag.rerankers import load_reranker
from rag.rerankers.cache import CachedReranker
from tests.rag.rerankers.helpers import make_candidates

QUERY = "How long is the warranty on the battery pack?"
TEXTS = [
    "The battery pack is covered for 24 months or 2,000 full charge cycles.",
    "Expense reports are due within 30 days of travel.",
    "Firmware updates are installed during the nightly maintenance window, which starts at 02:00 "
    "and ends at 04:00; robots that miss it update at the next dock.",
    "Warranty.",
    "Contact the fleet on-call engineer for any robot that stops in an aisle.",
]


class Spy:
    """The real reranker, with a record of the passages each score_pairs call was given."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[list[str]] = []
        for name in ("name", "kind", "device", "dtype", "normalize"):
            setattr(self, name, getattr(inner, name))

    def score_pairs(self, query, passages):
        self.calls.append(list(passages))
        return self.inner.score_pairs(query, passages)


@pytest.fixture(scope="module")
def model(tiny_cross_encoder):
    return load_reranker("cross-encoder", model=tiny_cross_encoder, device="cpu", dtype="float32", batch_size=2,
                         max_length=32, normalize="sigmoid")


def test_a_repeated_question_is_not_scored_again_and_ranks_the_same(model):
    spy = Spy(model)
    cached = CachedReranker(spy)
    candidates = make_candidates(TEXTS)
    first, reused_first = cached.rerank_counted(QUERY, candidates)
    second, reused_second = cached.rerank_counted(QUERY, candidates)
    assert (reused_first, reused_second) == (0, len(TEXTS))
    assert len(spy.calls) == 1 and sorted(spy.calls[0]) == sorted(TEXTS)
    fresh = model.rerank(QUERY, candidates)
    for ranking in (first, second):
        assert [c.chunk.id for c in ranking] == [c.chunk.id for c in fresh]
        assert [c.rerank_raw for c in ranking] == pytest.approx([c.rerank_raw for c in fresh], abs=1e-5)
        assert [c.truncated for c in ranking] == [c.truncated for c in fresh]
    assert any(c.truncated for c in second)  # the long passage is cut at max_length 32, and the flag is kept


def test_only_unknown_pairs_reach_the_model(model):
    spy = Spy(model)
    cached = CachedReranker(spy)
    cached.rerank(QUERY, make_candidates(TEXTS[:3]))
    ranking, reused = cached.rerank_counted(QUERY, make_candidates(TEXTS))  # top-k grew from 3 to 5
    assert reused == 3 and spy.calls[-1] == TEXTS[3:]
    assert len(ranking) == len(TEXTS)
    # another question is another pair: scored afresh
    cached.rerank(QUERY + " In months?", make_candidates(TEXTS[:2]))
    assert spy.calls[-1] == TEXTS[:2]


def test_changed_text_is_scored_again_and_the_same_text_is_reused_under_any_id(model):
    spy = Spy(model)
    cached = CachedReranker(spy)
    cached.rerank(QUERY, make_candidates(TEXTS[:2]))
    edited = TEXTS[0].replace("24 months", "36 months")  # the file changed and was re-ingested
    cached.rerank(QUERY, make_candidates([edited, TEXTS[1]]))
    assert spy.calls[-1] == [edited]
    moved = make_candidates([TEXTS[1]])  # same text, another chunk id (doc.md#0) and rank
    _, reused = cached.rerank_counted(QUERY, moved)
    assert reused == 1 and len(spy.calls) == 2


def test_repeated_passages_in_one_call_are_scored_once(model):
    spy = Spy(model)
    cached = CachedReranker(spy)
    ranking = cached.rerank(QUERY, make_candidates([TEXTS[0], TEXTS[1], TEXTS[0]]))
    assert spy.calls == [[TEXTS[0], TEXTS[1]]]
    by_id = {c.chunk.id: c.rerank_raw for c in ranking}
    assert by_id["doc.md#0"] == by_id["doc.md#2"]


def test_the_cache_is_bounded_least_recently_used_first(model):
    spy = Spy(model)
    cached = CachedReranker(spy, max_pairs=3)
    cached.rerank(QUERY, make_candidates(TEXTS[:3]))
    cached.rerank(QUERY, make_candidates(TEXTS[:1]))  # TEXTS[0] is now the most recently used
    cached.rerank(QUERY, make_candidates(TEXTS[3:5]))  # evicts TEXTS[1] and TEXTS[2]
    assert len(cached) == 3
    _, reused = cached.rerank_counted(QUERY, make_candidates([TEXTS[0], TEXTS[4], TEXTS[1]]))
    assert reused == 2 and spy.calls[-1] == [TEXTS[1]]
    with pytest.raises(ValueError, match="max_pairs must be a positive integer, got 0"):
        CachedReranker(model, max_pairs=0)


def test_empty_candidates_and_shown_names(model):
    cached = CachedReranker(model)
    assert cached.rerank(QUERY, []) == []
    assert (cached.name, cached.kind, cached.device, cached.dtype, cached.normalize) == \
        (model.name, model.kind, model.device, model.dtype, model.normalize)


def test_sessions_sharing_one_cache_get_the_same_scores(model):
    cached = CachedReranker(model, max_pairs=4)  # small, so threads evict each other's entries
    questions = [f"{QUERY} ({i})" for i in range(6)]
    # Scores, not orders: the tiny random model's scores lie within ~1e-4 of each other, so padding noise
    # (another batch composition) may swap two of them.
    expected = {q: {c.chunk.id: c.rerank_raw for c in model.rerank(q, make_candidates(TEXTS))} for q in questions}
    errors: list[BaseException] = []

    def session(offset: int) -> None:
        try:
            for round_ in range(5):
                q = questions[(offset + round_) % len(questions)]
                got = {c.chunk.id: c.rerank_raw for c in cached.rerank(q, make_candidates(TEXTS))}
                assert got.keys() == expected[q].keys()
                assert all(abs(got[i] - expected[q][i]) < 1e-5 for i in got), (got, expected[q])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cached) <= 4
