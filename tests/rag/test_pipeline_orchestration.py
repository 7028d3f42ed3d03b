"""The pipeline's orchestration with small fakes behind its protocols: no model, no Chroma.

A fake first stage (``FirstStage``) returns chunks written here and records what it was asked;
a fake reranker (the real ``Reranker`` base class, one ``score_pairs``) scores by a table; a
fake generator (``Generator``) records the messages and streams a fixed answer. The end-to-end
tests with real models and a real store stay in test_pipeline.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from rag.generate import NO_ANSWER
from rag.pipeline import Pipeline
from rag.rerankers.base import Reranker
from rag.retrieve import Retrieval
from rag.types import Chunk

TEXTS = {
    "a": "The bakery opens at 7:00 every morning.",
    "b": "Parking is free for the first hour.",
    "c": "The museum ticket costs 12 euros for adults.",
    "d": "The library closes at 20:00 on weekdays.",
}
MUSEUM = "How much is a ticket to the museum?"


def chunk(key: str, source: str = "town.md") -> Chunk:
    text = TEXTS[key]
    return Chunk(
        id=f"{source}#{key}",
        text=text,
        source=source,
        page=None,
        chunk_index=ord(key),
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )


@dataclass
class FakeFirstStage:
    """Returns ``order`` for every question; records (question, k, mode, also)."""

    order: Sequence[str] = ("a", "b", "c", "d")
    mode: str = "hybrid"
    modes_by_language: Mapping[str, str] = field(default_factory=dict)
    hidden: dict[str, int] = field(default_factory=dict)
    embedder: object = None
    asked: list[tuple[str, int, str, str | None]] = field(default_factory=list)

    def search(self, question: str, *, k: int, mode: str, also: str | None = None) -> Retrieval:
        self.asked.append((question, k, mode, also))
        hits = [(chunk(key), 1.0 - i / 10) for i, key in enumerate(self.order[:k])]
        return Retrieval(
            hits=hits, hidden=dict(self.hidden), timings={"embed_query": 0.25, "retrieve": 0.5}
        )

    def models(self, mode: str) -> dict[str, str]:
        return {} if mode == "bm25" else {"embedder": "fake-embedder (cpu)"}


class TableReranker(Reranker):
    """Scores a passage by the table; records the query each call read."""

    kind = "table"

    def __init__(self, scores: Mapping[str, float], name: str = "table-v1") -> None:
        super().__init__(
            name=name,
            device="cpu",
            dtype="-",
            backend="python",
            batch_size=8,
            max_length=64,
            normalize="none",
        )
        self.scores = {TEXTS[key]: value for key, value in scores.items()}
        self.queries: list[str] = []

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        self.queries.append(query)
        return [self.scores.get(p, 0.0) for p in passages], [False] * len(passages)


@dataclass
class FakeGenerator:
    reply: str = "A ticket costs 12 euros [1]."
    name: str = "fake-llm"
    messages: list[list[Mapping[str, str]]] = field(default_factory=list)

    def stream(self, messages):
        self.messages.append(list(messages))
        yield from self.reply.split(" ")[:1]
        for word in self.reply.split(" ")[1:]:
            yield " " + word
        return None


def pipeline(**overrides) -> Pipeline:
    fields = {
        "retriever": FakeFirstStage(),
        "reranker": TableReranker({"c": 9.0, "d": 5.0, "a": 1.0}),
        "generator": FakeGenerator(),
        "top_k": 4,
        "top_n": 2,
        "reorder_strategy": "descending",
        **overrides,
    }
    return Pipeline(**fields)


def ids(candidates) -> list[str]:
    return [c.chunk.id.rpartition("#")[2] for c in candidates]


def test_the_reranker_reorders_what_the_first_stage_found_and_top_n_is_kept():
    trace = pipeline().search(MUSEUM)
    assert ids(trace.retrieved) == ["a", "b", "c", "d"]
    assert ids(trace.reranked) == ["c", "d", "a", "b"]
    assert ids(trace.context) == ["c", "d"]


def test_without_reranking_the_first_stage_order_is_the_context():
    trace = pipeline().search(MUSEUM, rerank=False)
    assert trace.reranked == () and ids(trace.context) == ["a", "b"]
    assert "reranker" not in trace.models


def test_the_trace_takes_the_first_stage_times_as_reported_and_adds_its_own():
    trace = pipeline().search(MUSEUM)
    assert trace.timings["embed_query"] == 0.25 and trace.timings["retrieve"] == 0.5
    assert {"rerank", "reorder"} <= set(trace.timings)


def test_per_call_options_reach_the_first_stage():
    first = FakeFirstStage()
    pipeline(retriever=first).search(MUSEUM, top_k=3, mode="bm25")
    assert first.asked == [(MUSEUM, 3, "bm25", None)]


def test_a_question_in_a_routed_language_takes_its_mode_and_is_left_unranked():
    first = FakeFirstStage(modes_by_language={"ko": "bm25"})
    reranker = TableReranker({"c": 9.0})
    trace = pipeline(retriever=first, reranker=reranker, rerankers_by_language={"ko": None}).search(
        "박물관 입장권은 얼마인가요?"
    )
    assert first.asked[0][2] == "bm25" and trace.retrieval == "bm25"
    assert trace.rerank is False and reranker.queries == []
    assert trace.language == "ko" and "not reranked" in trace.notes[0]


def test_an_english_question_keeps_the_configured_mode_and_reranker():
    first = FakeFirstStage(modes_by_language={"ko": "bm25"})
    trace = pipeline(retriever=first, rerankers_by_language={"ko": None}).search(MUSEUM)
    assert first.asked[0][2] == "hybrid" and trace.rerank is True and trace.language is None


def test_a_concat_follow_up_widens_the_first_stage_but_the_reranker_reads_it_as_typed():
    first = FakeFirstStage()
    reranker = TableReranker({"c": 9.0})
    history = [("When does the bakery open?", "At 7:00 [1].")]
    trace = pipeline(retriever=first, reranker=reranker, follow_ups="concat").search(
        "and the museum?", history=history
    )
    question, _, _, also = first.asked[0]
    assert also == "and the museum?" and question != also and "bakery" in question
    assert reranker.queries == ["and the museum?"]
    assert trace.searched == question


def test_asking_to_rerank_without_a_reranker_is_refused_before_the_first_stage_runs():
    first = FakeFirstStage()
    with pytest.raises(ValueError, match="no reranker is loaded"):
        pipeline(retriever=first, reranker=None).search(MUSEUM)
    assert first.asked == []


def test_half_written_files_are_named_in_the_notes():
    trace = pipeline(retriever=FakeFirstStage(hidden={"/docs/big.pdf": 40})).search(MUSEUM)
    assert "1 file is half-written in the store (big.pdf)" in trace.notes[0]


def test_the_answer_is_generated_from_the_context_and_cites_it():
    generator = FakeGenerator()
    p = pipeline(generator=generator)
    answer = p.answer(p.search(MUSEUM))
    assert answer.text == "A ticket costs 12 euros [1]." and answer.model == "fake-llm"
    sent = generator.messages[0][-1]["content"]
    assert TEXTS["c"] in sent and TEXTS["d"] in sent and TEXTS["a"] not in sent
    assert [c.chunk_id for c in answer.citations] == ["town.md#c"]


def test_below_min_support_the_llm_is_not_asked():
    generator = FakeGenerator()
    p = pipeline(generator=generator, min_support=0.9)
    answer = p.answer(p.search("Who painted the ceiling of the chapel?"))
    assert answer.text == NO_ANSWER and generator.messages == []
    assert answer.trace.notes[-1].startswith("not in the documents")


def test_from_settings_reads_the_stages_options_from_the_config(tmp_path):
    from rag.config import load_settings

    path = tmp_path / "config.toml"
    path.write_text(
        "[retrieval]\ntop_k = 7\nrrf_k = 30\nfollow_ups = 'off'\n"
        "[reranker]\ntop_n = 3\nretrieval_weight = 0.5\n"
        "[reorder]\nstrategy = 'none'\n[llm]\nmin_support = 0.2\nmax_sentences = 2\n",
        encoding="utf-8",
    )
    settings = load_settings(path, env={})
    built = Pipeline.from_settings(
        settings, retriever=FakeFirstStage(), reranker=None, generator=None, top_n=4
    )
    assert (built.top_k, built.top_n, built.reorder_strategy) == (7, 4, "none")
    assert (built.rrf_k, built.retrieval_weight, built.follow_ups) == (30, 0.5, "off")
    assert (built.min_support, built.max_sentences) == (0.2, 2)
