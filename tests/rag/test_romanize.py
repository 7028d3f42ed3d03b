"""Hangul spelled in Latin letters, for rerankers whose vocabulary has no Hangul."""

from __future__ import annotations

from transformers import AutoTokenizer

from rag.romanize import has_hangul, romanize


def test_syllables_are_spelled_letter_by_letter_and_the_rest_is_kept() -> None:
    assert romanize("서울") == "seoul"
    assert romanize("KTX 특실은 언제?") == "KTX teugsileun eonje?"
    assert romanize("한빛로보틱스 NR-400") == "hanbichrobotigseu NR-400"
    assert romanize("plain English, 123") == "plain English, 123"
    # Syllables that differ only in their final consonant stay apart (spelled by
    # letter, not by sound).
    assert romanize("있다") != romanize("잇다")
    # Every one of the 11,172 syllables is spelled, and differently from its neighbours.
    spelled = [romanize(chr(c)) for c in range(0xAC00, 0xD7A4)]
    assert all(s.isascii() and s.isalpha() for s in spelled)
    assert len(set(spelled)) == len(spelled)
    # Jamo on their own and other scripts are not syllables: kept as they are.
    assert romanize("ㄱㄴ 日本語") == "ㄱㄴ 日本語"
    assert has_hangul("abc 가") and not has_hangul("abc ㄱ")


def test_minilm_reads_romanized_korean_in_trained_pieces(minilm_path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    text = "한빛로보틱스 직원은 회사 노트북을 분실하면 24시간 이내에 신고해야 한다"
    jamo = tokenizer(text, add_special_tokens=False)["input_ids"]
    latin = tokenizer(romanize(text), add_special_tokens=False)["input_ids"]
    # A jamo missing from the vocabulary makes the whole word [UNK]: three of the
    # eight words here are lost.
    assert jamo.count(tokenizer.unk_token_id) == 3
    assert tokenizer.unk_token_id not in latin
    syllables = sum(1 for ch in text if has_hangul(ch))
    assert len(latin) <= 1.5 * syllables  # measured: 35 pieces for 29 syllables and "24"
