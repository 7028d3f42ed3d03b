"""What a reranker reads of a passage too long for max_length: the head, or the best window.

Real tokenizers (the packaged MiniLM's WordPiece, which reads Korean as jamo pieces,
and Gemma's), real Korean and English text; the window is checked by what it holds.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rag.rerankers import RerankerOptions
from rag.rerankers.window import best_span, bigrams, fit_passage

FILLER_EN = (
    "The committee met again on Tuesday to discuss the budget for the coming year, and several "
    "members "
    "asked for more time to read the reports. "
)
ANSWER_EN = (
    "The bridge over the Kessel river was finished in 1887 by the engineer Marta Lindqvist. "
)
QUERY_EN = "Who finished the bridge over the Kessel river?"

FILLER_KO = (
    "위원회는 화요일에 다시 모여 내년 예산을 논의했고, 여러 위원은 보고서를 읽을 시간을 더 달라고 "
    "요청했다. "
)
ANSWER_KO = "케셀 강의 다리는 1887년 기술자 마르타 린드크비스트가 완공했다. "
QUERY_KO = "케셀 강의 다리를 완공한 사람은 누구인가?"


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)


def test_bigrams_stay_inside_words_and_keep_one_letter_words() -> None:
    assert bigrams("New York!") == ["ne", "ew", "yo", "or", "rk"]
    assert bigrams("서울 시, a") == ["서울", "시", "a"]
    assert bigrams("  ") == []


@pytest.mark.parametrize(
    "filler, answer, query",
    [(FILLER_EN, ANSWER_EN, QUERY_EN), (FILLER_KO, ANSWER_KO, QUERY_KO)],
    ids=["english", "korean"],
)
def test_the_window_holds_the_answer_the_head_cuts_off(
    minilm_tokenizer, filler, answer, query
) -> None:
    passage = filler * 12 + answer + filler * 3
    pair_len = len(minilm_tokenizer(query, passage)["input_ids"])
    assert pair_len > 256  # too long: something has to go

    head = fit_passage(minilm_tokenizer, query, passage, max_length=256, mode="head")
    window = fit_passage(minilm_tokenizer, query, passage, max_length=256, mode="best-window")
    assert head == passage
    cut_head = minilm_tokenizer.decode(
        minilm_tokenizer(query, passage, truncation="only_second", max_length=256)["input_ids"]
    )
    assert "1887" not in cut_head
    assert answer.strip() in window and window in passage
    # The window fills the room the question leaves (give or take a token where it was cut).
    assert abs(len(minilm_tokenizer(query, window)["input_ids"]) - 256) <= 2


def test_a_pair_that_fits_is_read_whole(minilm_tokenizer) -> None:
    short = FILLER_EN + ANSWER_EN
    assert (
        fit_passage(minilm_tokenizer, QUERY_EN, short, max_length=256, mode="best-window") == short
    )


def test_a_question_sharing_nothing_keeps_the_head() -> None:
    offsets = [(i, i + 1) for i in range(100)]
    assert best_span("xyz", offsets, "a" * 100, 10) == (0, 10)
    assert best_span("", offsets, "a" * 100, 10) == (0, 10)


def test_tied_windows_centre_the_matched_words() -> None:
    text = "." * 40 + "kessel" + "." * 54
    offsets = [(i, i + 1) for i in range(len(text))]
    start, end = best_span("kessel", offsets, text, 20)
    assert end - start == 20
    assert start < 40 and 46 <= end  # the word is inside
    assert abs((40 - start) - (end - 46)) <= 1  # and in the middle


def test_the_cross_encoder_reads_the_window_and_flags_the_cut(
    tiny_cross_encoder, minilm_tokenizer
) -> None:
    from rag.rerankers import load_reranker

    passage = FILLER_EN * 12 + ANSWER_EN + FILLER_EN * 3
    options = {
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 4,
        "max_length": 128,
        "normalize": "sigmoid",
    }
    windowed = load_reranker(
        "cross-encoder",
        RerankerOptions(model=tiny_cross_encoder, long_passages="best-window", **options),
    )
    plain = load_reranker("cross-encoder", RerankerOptions(model=tiny_cross_encoder, **options))
    answer_ids = minilm_tokenizer("Lindqvist", add_special_tokens=False)["input_ids"]

    def reads_answer(reranker) -> bool:
        features, truncated = reranker.encode(QUERY_EN, [passage, ANSWER_EN])
        assert truncated == [True, False]
        assert len(features[0]["input_ids"]) <= 128
        ids = features[0]["input_ids"]
        return any(ids[i : i + len(answer_ids)] == answer_ids for i in range(len(ids)))

    assert reads_answer(windowed) and not reads_answer(plain)


def test_the_llm_reranker_keeps_the_passage_label_before_its_window(gemma) -> None:
    from rag.rerankers import LlmYesReranker

    tokenizer, model = gemma
    passage = FILLER_KO * 10 + ANSWER_KO + FILLER_KO * 3
    common = {
        "name": "gemma",
        "device": "cpu",
        "batch_size": 2,
        "max_length": 96,
        "normalize": "sigmoid",
    }
    windowed = LlmYesReranker(tokenizer, model, long_passages="best-window", **common)
    plain = LlmYesReranker(tokenizer, model, **common)
    (w_ids,), w_cut = windowed.build_inputs(QUERY_KO, [passage])
    (p_ids,), _ = plain.build_inputs(QUERY_KO, [passage])
    assert w_cut == [True] and len(w_ids) == len(p_ids)
    text = tokenizer.decode(w_ids)
    assert "\nB:" in text and "1887" in text
    assert "1887" not in tokenizer.decode(p_ids)


def test_bad_values_are_refused_by_name() -> None:
    with pytest.raises(
        ValueError, match="long_passages must be one of head, best-window, got 'tail'"
    ):
        RerankerOptions(model="x", long_passages="tail")


def test_a_model_is_read_as_it_was_trained(tmp_path, tiny_cross_encoder) -> None:
    """reading.json beside the weights settles the "auto" readings; a value set in the config
    wins.
    """
    import shutil

    from rag.models import ModelLoadError
    from rag.rerankers import load_reranker
    from rag.rerankers.reading import READING_FILE, write_reading

    model = tmp_path / "model"
    shutil.copytree(tiny_cross_encoder, model)
    common = {"device": "cpu", "dtype": "float32", "max_length": 64}
    plain = load_reranker("cross-encoder", RerankerOptions(model=str(model), **common))
    # no file: how hub models read
    assert (plain.long_passages, plain.romanize_hangul) == ("head", False)

    write_reading(model, long_passages="best-window", romanize_hangul=True)
    trained = load_reranker("cross-encoder", RerankerOptions(model=str(model), **common))
    assert (trained.long_passages, trained.romanize_hangul) == ("best-window", True)
    features, _ = trained.encode("서울", ["서울"])
    assert trained.tokenizer.unk_token_id not in features[0]["input_ids"]
    assert "seoul" in trained.tokenizer.decode(features[0]["input_ids"])

    overridden = load_reranker(
        "cross-encoder",
        RerankerOptions(model=str(model), long_passages="head", romanize_hangul=False, **common),
    )
    assert (overridden.long_passages, overridden.romanize_hangul) == ("head", False)

    (model / READING_FILE).write_text(
        '{"long_passages": "best-window", "lowercase": true}', encoding="utf-8"
    )
    with pytest.raises(ModelLoadError, match=r"reading\.json must be an object with keys"):
        load_reranker("cross-encoder", RerankerOptions(model=str(model), **common))


def test_the_shipped_english_reranker_reads_the_head() -> None:
    from rag.rerankers.reading import trained_reading

    assert trained_reading("shipped:minilm-en") == {
        "long_passages": "head",
        "romanize_hangul": False,
    }
