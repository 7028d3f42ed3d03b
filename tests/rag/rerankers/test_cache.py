"""The score cache on a real reranker (the tiny cross-encoder loaded from disk): reused scores equal
fresh ones, only unknown pairs reach the model, changed text is scored again, the cache stays
bounded and is safe to share between threads; and one reranker shared by many threads tokenises each
call with its own settings."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from rag.rerankers import CrossEncoderReranker, RerankerOptions, ScoreCache, load_reranker
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


class Spy(CrossEncoderReranker):
    """The real cross-encoder, with a record of the passages each score_pairs call was given."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[list[str]] = []

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        self.calls.append(list(passages))
        return super().score_pairs(query, passages)


@pytest.fixture(scope="module")
def model(tiny_cross_encoder) -> CrossEncoderReranker:
    """Loaded once; never given a cache (each test builds its own reranker around the loaded
    engine).
    """
    return load_reranker(
        "cross-encoder",
        RerankerOptions(
            model=tiny_cross_encoder,
            device="cpu",
            dtype="float32",
            batch_size=2,
            max_length=32,
            normalize="sigmoid",
        ),
    )


def like(
    model: CrossEncoderReranker,
    kind: type[CrossEncoderReranker] = CrossEncoderReranker,
    **overrides,
) -> CrossEncoderReranker:
    """Another reranker on the loaded tokenizer and engine (no second copy of the model),
    options overridden.
    """
    options = {
        "name": model.name,
        "batch_size": model.batch_size,
        "max_length": model.max_length,
        "normalize": model.normalize,
        "batch_tokens": model.batch_tokens,
        **overrides,
    }
    return kind(model.tokenizer, model.engine, **options)


def spy(model: CrossEncoderReranker, max_pairs: int = 50_000) -> Spy:
    cached = like(model, Spy).with_cache(ScoreCache(max_pairs=max_pairs))
    assert isinstance(cached, Spy)
    return cached


def test_a_repeated_question_is_not_scored_again_and_ranks_the_same(model):
    cached = spy(model)
    candidates = make_candidates(TEXTS)
    first, reused_first = cached.rerank_counted(QUERY, candidates)
    second, reused_second = cached.rerank_counted(QUERY, candidates)
    assert (reused_first, reused_second) == (0, len(TEXTS))
    assert len(cached.calls) == 1 and sorted(cached.calls[0]) == sorted(TEXTS)
    fresh = model.rerank(QUERY, candidates)
    for ranking in (first, second):
        assert [c.chunk.id for c in ranking] == [c.chunk.id for c in fresh]
        assert [c.rerank_raw for c in ranking] == pytest.approx(
            [c.rerank_raw for c in fresh], abs=1e-5
        )
        assert [c.truncated for c in ranking] == [c.truncated for c in fresh]
    # the long passage is cut at max_length 32, and the flag is kept
    assert any(c.truncated for c in second)


def test_only_unknown_pairs_reach_the_model(model):
    cached = spy(model)
    cached.rerank(QUERY, make_candidates(TEXTS[:3]))
    ranking, reused = cached.rerank_counted(QUERY, make_candidates(TEXTS))  # top-k grew from 3 to 5
    assert reused == 3 and cached.calls[-1] == TEXTS[3:]
    assert len(ranking) == len(TEXTS)
    # another question is another pair: scored afresh
    cached.rerank(QUERY + " In months?", make_candidates(TEXTS[:2]))
    assert cached.calls[-1] == TEXTS[:2]


def test_changed_text_is_scored_again_and_the_same_text_is_reused_under_any_id(model):
    cached = spy(model)
    cached.rerank(QUERY, make_candidates(TEXTS[:2]))
    edited = TEXTS[0].replace("24 months", "36 months")  # the file changed and was re-ingested
    cached.rerank(QUERY, make_candidates([edited, TEXTS[1]]))
    assert cached.calls[-1] == [edited]
    moved = make_candidates([TEXTS[1]])  # same text, another chunk id (doc.md#0) and rank
    _, reused = cached.rerank_counted(QUERY, moved)
    assert reused == 1 and len(cached.calls) == 2


def test_repeated_passages_in_one_call_are_scored_once(model):
    cached = spy(model)
    ranking = cached.rerank(QUERY, make_candidates([TEXTS[0], TEXTS[1], TEXTS[0]]))
    assert cached.calls == [[TEXTS[0], TEXTS[1]]]
    by_id = {c.chunk.id: c.rerank_raw for c in ranking}
    assert by_id["doc.md#0"] == by_id["doc.md#2"]


def test_the_cache_is_bounded_least_recently_used_first(model):
    cached = spy(model, max_pairs=3)
    cached.rerank(QUERY, make_candidates(TEXTS[:3]))
    cached.rerank(QUERY, make_candidates(TEXTS[:1]))  # TEXTS[0] is now the most recently used
    cached.rerank(QUERY, make_candidates(TEXTS[3:5]))  # evicts TEXTS[1] and TEXTS[2]
    assert cached.cache is not None and len(cached.cache) == 3
    _, reused = cached.rerank_counted(QUERY, make_candidates([TEXTS[0], TEXTS[4], TEXTS[1]]))
    assert reused == 2 and cached.calls[-1] == [TEXTS[1]]
    with pytest.raises(ValueError, match="max_pairs = 0: must be a whole number >= 1"):
        ScoreCache(max_pairs=0)


def test_the_cache_on_its_own_keeps_scores_and_flags_per_question_and_text(model):
    cache = ScoreCache(max_pairs=10)
    asked: list[list[str]] = []

    def compute(query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        asked.append(list(passages))
        return model.score_pairs(query, passages)

    raw, flags, reused = cache.scores(QUERY, TEXTS[:2], compute)
    assert (raw, flags, reused) == (*model.score_pairs(QUERY, TEXTS[:2]), 0) and len(cache) == 2
    again = cache.scores(QUERY, [TEXTS[1], TEXTS[0], TEXTS[2]], compute)
    assert again[2] == 2 and asked == [TEXTS[:2], [TEXTS[2]]] and len(cache) == 3
    assert again[:2] == (
        [raw[1], raw[0], model.score_pairs(QUERY, [TEXTS[2]])[0][0]],
        [flags[1], flags[0], True],
    )
    assert cache.scores(QUERY, [], compute) == ([], [], 0) and len(asked) == 2


def test_empty_candidates_and_shown_names(model):
    cached = like(model).with_cache(ScoreCache())
    assert cached.rerank(QUERY, []) == [] and cached.rerank_counted(QUERY, []) == ([], 0)
    assert cached.cache is not None and len(cached.cache) == 0
    # The trace and the UI show the reranker, cache or not.
    assert (
        cached.name,
        cached.kind,
        cached.device,
        cached.dtype,
        cached.backend,
        cached.normalize,
    ) == (model.name, model.kind, model.device, model.dtype, model.backend, model.normalize)
    assert cached.describe() == model.describe()
    assert model.cache is None  # the shared reranker was not given the cache


# --- threads
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 0.1 ms (not 5 ms), so concurrent calls interleave inside each
    other's tokenisation.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def nearest_is_own(got: float, own: float, others: Sequence[float]) -> bool:
    """Whether ``got`` is nearer to its own expected score than to any other candidate score."""
    return all(abs(got - own) < abs(got - other) for other in others)


def noise_and_gap(
    model: CrossEncoderReranker,
    questions: Sequence[str],
    passages: Sequence[str],
    expected: dict[str, tuple[list[float], list[bool]]],
    others: Callable[[str, int], list[float]],
) -> tuple[float, float]:
    """How far the same pair's score moves with the batching (noise), and how close a wrong score
    can come (gap).

    The checks below can only tell a wrong score from noise if the gap is well above the noise: the
    tiny random model's scores for different questions lie within ~1e-6 of each other.
    """
    single = like(model, batch_size=1, batch_tokens=0)
    noise = 0.0
    for q in questions:
        for raw in (
            single.score_pairs(q, passages)[0],
            model.score_pairs(q, list(reversed(passages)))[0][::-1],
        ):
            noise = max(noise, max(abs(a - b) for a, b in zip(raw, expected[q][0])))
    gap = min(
        abs(expected[q][0][i] - other)
        for q in questions
        for i in range(len(passages))
        for other in others(q, i)
    )
    return noise, gap


def test_sessions_sharing_one_cache_get_the_same_scores(model):
    # small, so threads evict each other's entries
    cached = like(model).with_cache(ScoreCache(max_pairs=4))
    questions = [f"{QUERY} ({i})" for i in range(6)]
    candidates = make_candidates(TEXTS)
    ids = [c.chunk.id for c in candidates]
    expected = {q: model.score_pairs(q, TEXTS) for q in questions}
    uncut = like(model, max_length=512)  # the pairs as they are when not cut at max_length
    whole = {q: uncut.score_pairs(q, TEXTS)[0] for q in questions}
    assert all(not any(uncut.score_pairs(q, TEXTS)[1]) for q in questions)
    assert {tuple(flags) for _, flags in expected.values()} == {(True, False, True, False, True)}

    def others(q: str, i: int) -> list[float]:
        """Scores a session could wrongly get for pair i of q: another question's, or the
        pair's uncut one.
        """
        wrong = [expected[o][0][i] for o in questions if o != q]
        return wrong + ([whole[q][i]] if expected[q][1][i] else [])

    noise, gap = noise_and_gap(model, questions, TEXTS, expected, others)
    # else the check below could not tell another question's score
    assert noise * 20 < gap, (noise, gap)
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def session(offset: int) -> None:
        try:
            start.wait()
            for round_ in range(5):
                q = questions[(offset + round_) % len(questions)]
                ranking = cached.rerank(q, make_candidates(TEXTS))
                got = {c.chunk.id: (c.rerank_raw, c.truncated) for c in ranking}
                assert sorted(got) == sorted(ids)
                for i, chunk_id in enumerate(ids):
                    raw, flag = got[chunk_id]
                    assert flag is expected[q][1][i], (q, chunk_id, flag)
                    assert abs(raw - expected[q][0][i]) <= gap / 4, (
                        q,
                        chunk_id,
                        raw,
                        expected[q][0][i],
                    )
                    assert nearest_is_own(raw, expected[q][0][i], others(q, i)), (q, chunk_id, raw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(6)]
    with frequent_thread_switches():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert cached.cache is not None and len(cached.cache) <= 4


# Questions whose pairs are cut in different ways at max_length 24: the first has 3 of 5 pairs cut,
# the second and fourth 1 (only the passage), the third fills max_length by itself so every pair is
# cut, query included (truncation="longest_first"): the threads set different truncation on the one
# shared fast tokenizer.
THREAD_QUESTIONS = [
    QUERY,
    "Warranty?",
    "Who do I call when a robot stops in an aisle during the nightly maintenance window of the "
    "fleet?",
    "Expense reports due?",
]
THREAD_MAX_LENGTH = 24


def test_threads_sharing_one_reranker_tokenise_with_their_own_truncation(model):
    shared = like(model, max_length=THREAD_MAX_LENGTH)
    expected = {q: shared.score_pairs(q, TEXTS) for q in THREAD_QUESTIONS}
    flags = {q: f for q, (_, f) in expected.items()}
    tokenizer = shared.tokenizer
    assert flags == {
        q: [len(tokenizer(q, p)["input_ids"]) > THREAD_MAX_LENGTH for p in TEXTS]
        for q in THREAD_QUESTIONS
    }
    # pairs cut and pairs whole, in every round
    assert [sum(f) for f in flags.values()] == [3, 1, 5, 1]
    uncut = like(model, max_length=512)
    whole = {q: uncut.score_pairs(q, TEXTS)[0] for q in THREAD_QUESTIONS}

    def others(q: str, i: int) -> list[float]:
        wrong = [expected[o][0][i] for o in THREAD_QUESTIONS if o != q]
        return wrong + ([whole[q][i]] if expected[q][1][i] else [])

    noise, gap = noise_and_gap(shared, THREAD_QUESTIONS, TEXTS, expected, others)
    assert noise * 20 < gap, (noise, gap)

    threads_count, calls_each = 8, 3

    def one_round() -> tuple[
        dict[tuple[int, int], tuple[str, list[float], list[bool]]], list[BaseException]
    ]:
        """Every thread scores calls_each questions at once on the shared reranker: what
        each got, and errors.
        """
        got: dict[tuple[int, int], tuple[str, list[float], list[bool]]] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(threads_count)

        def worker(t: int) -> None:
            try:
                start.wait()
                for c in range(calls_each):
                    q = THREAD_QUESTIONS[(t + c) % len(THREAD_QUESTIONS)]
                    raw, cut = shared.score_pairs(q, TEXTS)
                    got[(t, c)] = (q, raw, cut)
            except BaseException as exc:  # noqa: BLE001 - reported by the caller
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return got, errors

    with frequent_thread_switches():
        # a race shows in some rounds only (without the tokenizer lock: round 0 or 1)
        for round_ in range(20):
            got, errors = one_round()
            assert errors == [], (round_, errors)
            assert len(got) == threads_count * calls_each
            for (t, c), (q, raw, cut) in got.items():
                assert cut == flags[q], (round_, t, c, q, cut)
                for i, value in enumerate(raw):
                    assert abs(value - expected[q][0][i]) <= gap / 4, (
                        round_,
                        t,
                        c,
                        q,
                        i,
                        value,
                        expected[q][0][i],
                    )
                    assert nearest_is_own(value, expected[q][0][i], others(q, i)), (
                        round_,
                        t,
                        c,
                        q,
                        i,
                        value,
                    )
