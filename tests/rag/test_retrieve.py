"""BM25 tokenisation, reciprocal rank fusion, a BM25 index that follows the Chroma store, and the
three modes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.config import load_settings
from rag.lexical import Bm25Index, tokenize
from rag.pipeline import build_pipeline
from rag.retrieve import LexicalIndex, reciprocal_rank_fusion, retrieve
from rag.store import COMPLETE, ChunkStore, FileRecord, connect
from rag.types import Chunk


def test_tokenize_english_drops_stopwords_and_case():
    assert tokenize("The Battery pack IS covered for 24 months.", stemming="none") == [
        "battery",
        "pack",
        "covered",
        "24",
        "months",
    ]


def test_tokenize_english_stems_words_in_any_text():
    # Snowball stems: a question's "founded" meets a passage's "founding"; stopwords go first
    assert tokenize("The Battery pack IS covered for 24 months.") == [
        "batteri",
        "pack",
        "cover",
        "24",
        "month",
    ]
    assert tokenize("Who founded it?")[-1] == tokenize("the founding of the city")[0] == "found"
    # Latin words inside a Korean text are stemmed too; Korean and CJK terms are not
    assert tokenize("Running 신발을 판매") == ["run", "신발", "판매"]
    assert tokenize("権利 rights") == ["権利", "right"]
    with pytest.raises(ValueError, match="stemming 'porter': valid are english, none"):
        tokenize("runs", stemming="porter")


def test_bm25_with_stems_matches_other_forms_of_a_word():
    texts = ["The university was founded in 1842.", "The city library opened in 1901."]
    stems, words = Bm25Index(["u", "l"], texts), Bm25Index(["u", "l"], texts, stemming="none")
    assert [i for i, _ in stems.search("When was the founding of the universities?", 5)] == ["u"]
    assert words.search("When was the founding of the universities?", 5) == []


def test_tokenize_korean_keeps_content_morphemes():
    # particles (는, 를, 의) and endings (습니다) go: both spellings of "leave" give the same term
    assert tokenize("휴가는 며칠인가요?")[0] == tokenize("유급 휴가를 받습니다")[1] == "휴가"
    assert "를" not in tokenize("유급 휴가를 받습니다") and "습니다" not in tokenize(
        "유급 휴가를 받습니다"
    )
    # Latin and digits split as without Hangul
    assert tokenize("Beacon 4.0 버전") == ["beacon", "4", "0", "버전"]
    # "words" keeps particles attached (the baseline the analyser is measured against)
    assert tokenize("유급 휴가를 받습니다", korean="words") == ["유급", "휴가를", "받습니다"]
    with pytest.raises(ValueError, match="korean tokens 'jamo': valid are morphemes, words"):
        tokenize("휴가", korean="jamo")


def test_tokenize_cjk_runs_become_bigrams():
    assert tokenize("权利要求书") == ["权利", "利要", "要求", "求书"]
    assert tokenize("機能 x") == ["機能", "x"]
    assert tokenize("") == [] and tokenize("the of and") == []


def test_bm25_ranks_matching_passages_first():
    index = Bm25Index(
        ["a", "b", "c"],
        [
            "The battery pack warranty lasts 24 months.",
            "직원은 연 15일의 유급 휴가를 받습니다.",
            "Parking is on level B3, next to the battery charging room.",
        ],
    )
    assert [i for i, _ in index.search("battery warranty", 5)] == ["a", "c"]
    assert [i for i, _ in index.search("휴가는 며칠?", 5)] == ["b"]
    assert index.search("zebra", 5) == [] and index.search("the", 5) == []
    assert Bm25Index([], []).search("anything", 3) == []
    with pytest.raises(ValueError, match="k = 0"):
        index.search("battery", 0)


def test_rrf_by_hand():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], [1.0, 1.0], k=60)
    expected = {"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63}
    assert [i for i, _ in fused] == ["a", "c", "b", "d"]
    assert {i: s for i, s in fused} == pytest.approx(expected)
    weighted = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], [0.0, 2.0], k=1)
    assert weighted == [("b", 1.0), ("a", pytest.approx(2 / 3))]
    tie = reciprocal_rank_fusion([["x"], ["y"]], [1.0, 1.0])
    assert [i for i, _ in tie] == ["x", "y"]  # a tie goes to the id seen first


def test_rrf_bad_inputs():
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        reciprocal_rank_fusion([["a"], ["b"]], [1.0])
    with pytest.raises(ValueError, match="rrf k = 0"):
        reciprocal_rank_fusion([["a"]], [1.0], k=0)


def put(store: ChunkStore, source: str, texts: list[str], digest: str) -> None:
    chunks = [
        Chunk(
            id=f"{source}#{digest}#{i}",
            text=t,
            source=source,
            page=None,
            chunk_index=i,
            content_hash=digest,
        )
        for i, t in enumerate(texts)
    ]
    store.delete_source(source)
    store.upsert_chunks(chunks, np.random.default_rng(0).normal(size=(len(chunks), 8)), 1.0)
    store.put_file(FileRecord(source, digest, COMPLETE, len(chunks), 1.0))


def test_bm25_follows_the_store_through_add_update_and_remove(tmp_path):
    client = connect(
        mode="embedded", path=tmp_path / "chroma", host="", port=1, ssl=False, token=None
    )
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    lexical = LexicalIndex(store)
    assert lexical.current().search("battery", 3) == []
    put(store, "/a.md", ["The battery warranty lasts 24 months."], "h1")
    put(store, "/b.md", ["Visitor parking is on level B3."], "h1")
    assert [i for i, _ in lexical.current().search("battery warranty", 3)] == ["/a.md#h1#0"]
    same = lexical.current()
    assert lexical.current() is same  # nothing changed: no rebuild
    put(store, "/a.md", ["The warranty of the charger lasts 12 months."], "h2")  # the file changed
    assert [i for i, _ in lexical.current().search("battery", 3)] == []
    assert [i for i, _ in lexical.current().search("charger", 3)] == ["/a.md#h2#0"]
    store.remove_file("/b.md")
    assert lexical.current().search("parking", 3) == []
    # writes through another client on the same folder are seen too
    other = ChunkStore.open(
        connect(mode="embedded", path=tmp_path / "chroma", host="", port=1, ssl=False, token=None),
        "docs",
        embedder="m",
        dimension=8,
    )
    put(other, "/c.md", ["Lunch is served at noon."], "h1")
    assert [i for i, _ in lexical.current().search("lunch", 3)] == ["/c.md#h1#0"]


def test_unknown_mode_and_missing_index(tmp_path):
    client = connect(
        mode="embedded", path=tmp_path / "chroma", host="", port=1, ssl=False, token=None
    )
    store = ChunkStore.open(client, "docs", embedder="m", dimension=8)
    with pytest.raises(
        ValueError, match="unknown retrieval mode 'sparse'; valid: dense, bm25, hybrid"
    ):
        retrieve("q", mode="sparse", k=3, store=store, embed=lambda t: np.zeros(8), lexical=None)
    with pytest.raises(ValueError, match="needs a BM25 index"):
        retrieve("q", mode="bm25", k=3, store=store, embed=lambda t: np.zeros(8), lexical=None)


@pytest.fixture(scope="module")
def pipeline(readonly_sample_config):
    settings = load_settings(readonly_sample_config, env={"RAG_RETRIEVAL__MODE": "hybrid"})
    return build_pipeline(settings, reranker=False, generator=False)


KOREAN = "해외 출장 일비는 얼마인가요?"  # the per diem for trips abroad: travel-expense-rules-ko.md


def test_bm25_finds_korean_text_that_an_english_bi_encoder_misses(pipeline):
    bm25 = pipeline.search(KOREAN, rerank=False, mode="bm25")
    assert bm25.retrieval == "bm25" and "embed_query" not in bm25.timings
    assert Path(bm25.retrieved[0].chunk.source).name == "travel-expense-rules-ko.md"
    assert "일비" in bm25.retrieved[0].chunk.text


def test_hybrid_fuses_both_rankings(pipeline):
    dense = pipeline.search(KOREAN, rerank=False, mode="dense", top_k=10)
    bm25 = pipeline.search(KOREAN, rerank=False, mode="bm25", top_k=10)
    hybrid = pipeline.search(KOREAN, rerank=False, mode="hybrid", top_k=10)
    assert hybrid.retrieval == "hybrid" and len(hybrid.retrieved) == 10
    expected = reciprocal_rank_fusion(
        [[c.chunk.id for c in dense.retrieved], [c.chunk.id for c in bm25.retrieved]], [1.0, 1.0]
    )[:10]
    assert [(c.chunk.id, c.retrieval_score) for c in hybrid.retrieved] == [
        (i, pytest.approx(s)) for i, s in expected
    ]
    assert [c.retrieval_rank for c in hybrid.retrieved] == list(range(1, 11))
    assert set(hybrid.timings) >= {"embed_query", "retrieve"}
