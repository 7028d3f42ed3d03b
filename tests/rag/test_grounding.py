"""The grounding check's score (rag.grounding): how much of a question one place of the context
holds.
"""

from __future__ import annotations

import dataclasses

from rag.grounding import question_grams, support
from rag.types import Candidate, Chunk


def context(*texts: str) -> list[Candidate]:
    return [
        Candidate(
            Chunk(id=f"c{i}", text=t, source=f"s{i}.md", page=None, chunk_index=0, content_hash=""),
            0.0,
            i,
            i,
        )
        for i, t in enumerate(texts, start=1)
    ]


def test_question_words_do_not_count_and_words_match_by_their_stems():
    assert question_grams("When did Kant die in 1804?") == {"kant", "die", "1804"}
    assert support("When did Kant die?", context("Kant died in 1804.")).score == 1.0
    assert question_grams("Who commanded the expeditions?") == question_grams("command expedition")
    assert question_grams("세종은 언제 태어났나요?") == question_grams("세종은 태어났나요?")
    # a Korean question word with its ending ("얼마인가요") is asked with: the
    # sample corpus's own question
    assert question_grams("해외 출장 일비는 얼마인가요?") == {"해외", "출장", "일비"}
    assert question_grams("세종대왕이 훈민정음을 반포한 해는?") >= {
        "세종",
        "대왕",
        "훈민",
        "정음",
        "반포",
    }


def test_a_long_sentence_is_read_in_windows():
    """A table or list the sentence splitter leaves whole does not cover every question by its
    size.
    """
    table = " | ".join(f"row {i} code {1000 + i}" for i in range(60))
    found = support("Which code came with 1000 and 1059?", context(table))
    # code, 1000 of code, came, 1000, 1059
    assert found.score == 0.5 and len(found.sentence.split()) <= 80


def test_the_sentence_that_answers_scores_above_one_on_the_same_topic():
    answering = context(
        "Kant was born in 1724. He died in Königsberg in 1804.",
        "Kant wrote the Critique of Pure Reason.",
    )
    topical = context("Kant wrote the Critique of Pure Reason.", "Hume was a Scottish philosopher.")
    question = "In which city did Kant die in 1804?"
    found = support(question, answering)
    assert found.source == 1 and "1804" in found.sentence
    assert found.score > support(question, topical).score + 0.3


def test_two_neighbouring_sentences_count_together():
    split = context("The bridge opened in 1932. It was designed by John Bradfield.")
    found = support("Who designed the bridge that opened in 1932?", split)
    assert found.score == 1.0 and found.sentence.count(".") == 2


def test_korean_particles_leave_the_stems():
    found = support(
        "세종대왕이 훈민정음을 반포한 해는?",
        context(
            "한글은 1446년 세종대왕에 의해 훈민정음이라는 이름으로 반포되었다.",
            "조선은 1392년에 세워졌다.",
        ),
    )
    assert found.source == 1 and found.score >= 0.8


def test_no_context_has_no_support_and_a_question_of_question_words_is_never_declined():
    assert support("Who painted the Mona Lisa?", []).score == 0.0
    assert support("What is it?", context("Anything at all.")).score == 1.0


def test_the_reason_names_the_signal_and_the_best_place():
    from rag.grounding import grounding

    sources = context("Kant wrote the Critique of Pure Reason.")
    found = grounding("Who won the 2019 Cricket World Cup final?", sources)
    assert found.support.score == 0.0 and found.rerank is None
    assert (
        "none of them holds any" in found.reason(0.4, 0.0, 1) and found.reason(0.0, 0.0, 1) is None
    )
    partly = grounding("When did Kant write the Critique of Judgement?", sources)
    assert (
        "the best, source [1], holds 50%: 'Kant wrote the Critique of Pure Reason.'"
        in partly.reason(0.8, 0.0, 1)
    )
    assert (
        grounding("anything?", [])
        .reason(0.4, 0.0, 0)
        .startswith("not in the documents: no source was retrieved")
    )
    scored = [dataclasses.replace(c, rerank_score=0.05) for c in sources]
    assert "the reranker scored every source below 0.15" in grounding("Kant?", scored).reason(
        0.0, 0.15, 1
    )


def test_scripts_without_spaces_are_read_by_character_bigrams():
    """Chinese, Japanese and Thai write a phrase as one run of letters: matched by bigrams, not
    as one word.
    """
    assert support("电池保修多久？", context("电池保修两年。", "退货需要发票。")).score == 0.6
    assert (
        support("バッテリーの保証期間は？", context("バッテリーの保証期間は2年です。")).score == 1.0
    )
    # accented Latin words match by their first letters ("où", a French question
    # word, is not known: 4 of 5)
    assert (
        support("Où est née Marie Curie ?", context("Marie Curie est née à Varsovie.")).score == 0.8
    )
