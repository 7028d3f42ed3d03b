"""Sentence splitting and token-aware chunking, counted with the real MiniLM tokenizer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.chunking import chunk_document, chunk_text
from ingest.loaders import load
from rag.sentences import split_sentences
from rag.types import Document, Page

KOREAN = (
    "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있다.\n모든 권력은 국민으로부터 나온다\n"
    "국민이 되는 요건은 법률로 정한다."
)
CHINESE = "国家尊重和保障人权。任何人不得侵犯！是吗？是的。"
ENGLISH = "The cat sat. The dog ran. A bird flew. Fish swim."
TEN = "one two three four five six seven eight nine ten"  # one token per word


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def loaded(shared_data: Path) -> Callable[[str], Document]:
    """Loaded PDFs by name, each loaded once for the whole module."""
    cache: dict[str, Document] = {}

    def get(name: str) -> Document:
        if name not in cache:
            cache[name] = load(shared_data / "pdfs" / name)
        return cache[name]

    return get


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def squash(text: str) -> str:
    return "".join(text.split())


def chunks(tokenizer, text: str, size: int, overlap: int) -> list[str]:
    return chunk_text(text, tokenizer=tokenizer, size=size, overlap=overlap)


def assert_valid(tokenizer, text: str, result: list[str], size: int) -> None:
    """No chunk over size, none empty, each a substring of the text, in order, no word lost."""
    assert result, "text with words must give chunks"
    assert max(n_tokens(tokenizer, c) for c in result) <= size
    assert all(c.strip() == c and c for c in result)
    position = 0
    for chunk in result:
        found = text.find(chunk, position)
        assert found >= 0, f"chunk is not a substring after position {position}: {chunk[:60]!r}"
        position = found
    covered = set(squash(" ".join(result)))
    assert set(squash(text)) <= covered


# ---------------------------------------------------------------- split_sentences


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Dr. Smith arrived at 3.14 p.m. on Monday. He said hello! Did you hear? Yes.",
            [
                "Dr. Smith arrived at 3.14 p.m. on Monday.",
                "He said hello!",
                "Did you hear?",
                "Yes.",
            ],
        ),
        (
            "We use tools, e.g. hammers, i.e. simple ones. H. G. Wells wrote it. Mr. Lee left.",
            [
                "We use tools, e.g. hammers, i.e. simple ones.",
                "H. G. Wells wrote it.",
                "Mr. Lee left.",
            ],
        ),
        (
            'He said "Stop." Then he left. Wait... what? It is 2.5 m.',
            ['He said "Stop."', "Then he left.", "Wait... what?", "It is 2.5 m."],
        ),
        (
            "1. Introduction\nThis is it. The end.\n\nNew paragraph here",
            ["1. Introduction\nThis is it.", "The end.", "New paragraph here"],
        ),
        (
            "a line\nwithout an end\n\n\n  next paragraph  ",
            ["a line\nwithout an end", "next paragraph"],
        ),
    ],
)
def test_english_sentences(text: str, expected: list[str]):
    assert split_sentences(text) == expected


def test_korean_sentences():
    assert split_sentences(KOREAN) == [
        "대한민국은 민주공화국이다.",
        "대한민국의 주권은 국민에게 있다.",
        "모든 권력은 국민으로부터 나온다",
        "국민이 되는 요건은 법률로 정한다.",
    ]
    assert split_sentences("정말요? 좋아요! 그렇죠. 왔다.그리고 갔다\n끝") == [
        "정말요?",
        "좋아요!",
        "그렇죠.",
        "왔다.",
        "그리고 갔다",
        "끝",
    ]
    assert split_sentences("모두 다 같이 간다") == [
        "모두 다 같이 간다"
    ]  # 다 mid-line is not an end


def test_chinese_and_japanese_sentences():
    assert split_sentences(CHINESE) == [
        "国家尊重和保障人权。",
        "任何人不得侵犯！",
        "是吗？",
        "是的。",
    ]
    assert split_sentences("東京は日本の首都です。大阪は「天下の台所」と呼ばれた。本当？ はい") == [
        "東京は日本の首都です。",
        "大阪は「天下の台所」と呼ばれた。",
        "本当？",
        "はい",
    ]


@pytest.mark.parametrize(
    "text", [ENGLISH, KOREAN, CHINESE, " \n Mixed 한국어 text. 中文。End!\n\n\tTabs ok.  "]
)
def test_sentences_only_drop_whitespace(text: str):
    sentences = split_sentences(text)
    assert squash("".join(sentences)) == squash(text)
    assert all(s and s == s.strip() and s in text for s in sentences)


def test_no_sentences_in_blank_text():
    assert split_sentences("") == []
    assert split_sentences(" \n\n\t ") == []


# ---------------------------------------------------------------- chunk_text: exact small cases


def test_whole_sentences_with_and_without_overlap(tokenizer):
    assert [n_tokens(tokenizer, s) for s in split_sentences(ENGLISH)] == [4, 4, 4, 3]
    assert chunks(tokenizer, ENGLISH, 8, 0) == [
        "The cat sat. The dog ran.",
        "A bird flew. Fish swim.",
    ]
    assert chunks(tokenizer, ENGLISH, 8, 4) == [
        "The cat sat. The dog ran.",
        "The dog ran. A bird flew.",
        "A bird flew. Fish swim.",
    ]
    assert chunks(tokenizer, ENGLISH, 12, 4) == [
        "The cat sat. The dog ran. A bird flew.",
        "A bird flew. Fish swim.",
    ]
    assert chunks(tokenizer, ENGLISH, 100, 10) == [ENGLISH]


def test_overlap_carries_only_whole_sentences(tokenizer):
    # "The dog ran." is 4 tokens: an overlap of 3 cannot carry it, so nothing is carried.
    assert chunks(tokenizer, ENGLISH, 8, 3) == [
        "The cat sat. The dog ran.",
        "A bird flew. Fish swim.",
    ]


def test_paragraphs_stay_whole_when_they_fit(tokenizer):
    text = "Fish swim. Birds fly.\n\nThe cat sat. The dog ran."
    # Sentence by sentence, "The cat sat." would still fit in the first chunk;
    # the paragraph goes whole.
    assert chunks(tokenizer, text, 12, 0) == ["Fish swim. Birds fly.", "The cat sat. The dog ran."]
    assert chunks(tokenizer, text, 12, 4) == [
        "Fish swim. Birds fly.",
        "Birds fly.\n\nThe cat sat. The dog ran.",
    ]
    assert chunks(tokenizer, text, 16, 4) == [text]


def test_long_sentence_is_cut_at_token_boundaries(tokenizer):
    assert chunks(tokenizer, TEN, 4, 0) == [
        "one two three four",
        "five six seven eight",
        "nine ten",
    ]
    assert chunks(tokenizer, TEN, 4, 1) == [
        "one two three four",
        "four five six seven",
        "seven eight nine ten",
    ]
    assert chunks(tokenizer, TEN, 4, 2) == [
        "one two three four",
        "three four five six",
        "five six seven eight",
        "seven eight nine ten",
    ]


def test_long_sentence_between_short_ones(tokenizer):
    text = f"Short one. {TEN}. Last one here."
    assert chunks(tokenizer, text, 5, 0) == [
        "Short one. one two",
        "three four five six seven",
        "eight nine ten.",
        "Last one here.",
    ]
    # Overlap by tokens inside the cut sentence; none after it, where it would
    # start mid-word (". Last").
    assert chunks(tokenizer, text, 5, 2) == [
        "Short one. one two",
        "one two three four five",
        "four five six seven eight",
        "seven eight nine ten.",
        "Last one here.",
    ]


def test_hangul_syllables_are_never_split(tokenizer):
    # Uncased BERT splits each syllable into 2-3 jamo tokens that all point at the same character.
    assert chunks(tokenizer, "한국어 문장입니다", 4, 0) == [
        "한",
        "국",
        "어",
        "문",
        "장",
        "입",
        "니다",
    ]
    assert chunks(tokenizer, "한국어 문장입니다", 8, 3) == ["한국어", "어 문장", "입니다"]


def test_korean_sentences_pack_with_overlap(tokenizer):
    assert [n_tokens(tokenizer, s) for s in split_sentences(KOREAN)] == [32, 33, 35, 34]
    assert chunks(tokenizer, KOREAN, 70, 33) == [
        "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있다.",
        "대한민국의 주권은 국민에게 있다.\n모든 권력은 국민으로부터 나온다",
        "국민이 되는 요건은 법률로 정한다.",
    ]


def test_cjk_without_spaces(tokenizer):
    assert chunks(tokenizer, CHINESE, 12, 4) == [
        "国家尊重和保障人权。",
        "任何人不得侵犯！是吗？",
        "是吗？是的。",
    ]
    assert chunks(tokenizer, "東京は日本の首都です。", 4, 0) == ["東京は日", "本の首都", "です。"]
    assert chunks(tokenizer, "東京は日本の首都です。", 4, 2) == [
        "東京は日",
        "は日本の",
        "本の首都",
        "首都です",
        "です。",
    ]


def test_word_pieces_that_retokenise_longer_are_recut(tokenizer):
    # "tic" alone is more tokens than "##tic" was inside the word: chunks are checked and re-cut.
    text = "Supercalifragilistic words make tokenization interesting for everyone involved today"
    result = chunks(tokenizer, text, 5, 0)
    assert result == [
        "Supercalifragilis",
        "tic words make",
        "tokenization",
        "interesting for everyone involved today",
    ]
    assert_valid(tokenizer, text, result, 5)


def test_blank_text_gives_no_chunks(tokenizer):
    assert chunks(tokenizer, "", 16, 4) == []
    assert chunks(tokenizer, " \n\n\t", 16, 4) == []


@pytest.mark.parametrize(
    "size, overlap, match",
    [
        (0, 0, "size=0"),
        (-5, 0, "size=-5"),
        (8, -1, "overlap=-1"),
        (8, 8, "overlap=8"),
        (8, 9, "overlap=9"),
    ],
)
def test_invalid_sizes(tokenizer, size: int, overlap: int, match: str):
    with pytest.raises(ValueError, match=match):
        chunk_text(ENGLISH, tokenizer=tokenizer, size=size, overlap=overlap)
    with pytest.raises(ValueError, match=match):
        chunk_document(
            Document("d", (Page(1, ENGLISH),)), tokenizer=tokenizer, size=size, overlap=overlap
        )


def test_size_too_small_for_one_character(tokenizer):
    # One Hangul syllable is three jamo tokens here; a chunk of two tokens cannot hold it whole.
    with pytest.raises(ValueError, match=r"size=2 is too small"):
        chunk_text("한", tokenizer=tokenizer, size=2, overlap=0)
    assert chunk_text("한", tokenizer=tokenizer, size=3, overlap=0) == ["한"]


def test_a_tokenizer_without_offsets_is_refused():
    with pytest.raises(TypeError, match="fast tokenizer"):
        chunk_text(ENGLISH, tokenizer=object(), size=8, overlap=0)


# ---------------------------------------------------------------- invariants on real text


@pytest.mark.parametrize(
    "name",
    [
        "alice-in-wonderland.pdf",
        "linux-kernel-howto.pdf",
        "chinese-patent.pdf",
        "japanese-slides-encrypted.pdf",
        "usenix-paper-encrypted.pdf",
    ],
)
@pytest.mark.parametrize("size, overlap", [(256, 32), (48, 12), (12, 3)])
def test_size_and_order_invariants_on_real_pdfs(
    tokenizer, loaded, name: str, size: int, overlap: int
):
    doc = loaded(name)
    result = chunk_document(doc, tokenizer=tokenizer, size=size, overlap=overlap)
    by_page = {page.number: page.text for page in doc.pages}
    numbers = [number for number, _ in result]
    assert numbers == sorted(numbers) and set(numbers) == set(by_page)
    for page in doc.pages:
        assert_valid(
            tokenizer, page.text, [c for number, c in result if number == page.number], size
        )


def test_korean_invariants_and_determinism(tokenizer):
    text = "\n\n".join([KOREAN] * 6 + ["가나다라마바사아자차카타파하 " * 40])
    first = chunks(tokenizer, text, 40, 10)
    assert_valid(tokenizer, text, first, 40)
    assert chunks(tokenizer, text, 40, 10) == first


def test_chunk_document_keeps_pages_apart(tokenizer):
    pages = (Page(3, "First page. It ends here."), Page(7, ENGLISH), Page(None, "Loose text."))
    doc = Document("notes.pdf", pages)
    assert chunk_document(doc, tokenizer=tokenizer, size=8, overlap=4) == [
        (3, "First page. It ends here."),
        (7, "The cat sat. The dog ran."),
        (7, "The dog ran. A bird flew."),
        (7, "A bird flew. Fish swim."),
        (None, "Loose text."),
    ]
    assert chunk_document(Document("empty", ()), tokenizer=tokenizer, size=8, overlap=4) == []


def test_stress_pdf_chunks_quickly(tokenizer, shared_data: Path):
    # the default refuses it
    doc = load(shared_data / "pdfs" / "stress-10000-pages.pdf", min_chars=0)
    result = chunk_document(doc, tokenizer=tokenizer, size=256, overlap=32)
    assert result == [(n, "x") for n in range(1, 10_001)]


@pytest.mark.slow
def test_bible_chunks_within_size_in_seconds(tokenizer, shared_data: Path):
    doc = load(shared_data / "pdfs" / "king-james-bible-702p.pdf")
    started = time.perf_counter()
    result = chunk_document(doc, tokenizer=tokenizer, size=256, overlap=32)
    elapsed = time.perf_counter() - started
    assert elapsed < 30, f"chunking 702 pages took {elapsed:.1f} s"
    assert {number for number, _ in result} == set(range(1, 703))
    counts = tokenizer([c for _, c in result], add_special_tokens=False)["input_ids"]
    assert max(len(ids) for ids in counts) <= 256
    assert all(c.strip() for _, c in result)
