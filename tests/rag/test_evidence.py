from rag.embedder import LocalEmbedder
from rag.evidence import bigram_scorer, claims, embedder_scorer, find_evidence, scorer_for
from rag.types import Candidate, Chunk

HANDBOOK = (
    "Full-time staff get 10 days of paid sick leave a year. Part-time staff get 5 days. "
    "Unused days do not carry over. Interns get 3 days of paid sick leave."
)
RULES = (
    "해외 출장 일비는 하루 70달러이다. 국내 출장 일비는 하루 3만 원이다. 숙박비는 실비로 정산한다."
)


def context(*texts: str) -> list[Candidate]:
    return [
        Candidate(
            chunk=Chunk(
                id=f"c{i}", text=t, source=f"doc{i}.md", page=None, chunk_index=0, content_hash="h"
            ),
            retrieval_score=0.5,
            retrieval_rank=i,
            rank=i,
        )
        for i, t in enumerate(texts, start=1)
    ]


def test_claims_are_the_answer_sentences_that_cite_each_source():
    answer = "Full-time staff get 10 days [1]. Interns get 3 days [1][2]. Nothing else."
    assert claims(answer) == {
        1: ["Full-time staff get 10 days.", "Interns get 3 days."],
        2: ["Interns get 3 days."],
    }


def test_bigrams_find_the_supporting_sentence_in_english_and_korean():
    sources = context(HANDBOOK, RULES)
    answer = (
        "Interns get 3 days of paid sick leave [1]. 국내 출장 일비는 3만 원입니다 [2]. Made up [7]."
    )
    found = find_evidence(answer, sources, bigram_scorer())
    assert [(e.number, e.sentences) for e in found] == [
        (1, ("Interns get 3 days of paid sick leave.",)),
        (2, ("국내 출장 일비는 하루 3만 원이다.",)),
    ]
    assert all(len(e.scores) == len(e.sentences) for e in found)


def test_two_claims_citing_one_source_give_at_most_two_sentences_best_first():
    answer = (
        "Full-time staff get 10 days [1]. Unused days do not carry over [1]. Part-time staff get 5 "
        "days [1]."
    )
    (evidence,) = find_evidence(answer, context(HANDBOOK), bigram_scorer())
    assert len(evidence.sentences) == 2 and list(evidence.scores) == sorted(
        evidence.scores, reverse=True
    )
    assert set(evidence.sentences) <= set(HANDBOOK.replace(". ", ".\n").splitlines())


def test_the_bi_encoder_scorer_with_the_packaged_minilm(minilm_path):
    embedder = LocalEmbedder.load(minilm_path, device="cpu", batch_size=8)
    (evidence,) = find_evidence(
        "Unused sick days are lost at the end of the year [1].",
        context(HANDBOOK),
        embedder_scorer(embedder),
    )
    assert evidence.sentences[0] == "Unused days do not carry over."
    assert scorer_for("off", embedder=embedder, reranker=None) is None
