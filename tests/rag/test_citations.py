import pytest

from rag.citations import AnswerStream, cited_numbers, clean_sentence


@pytest.mark.parametrize(
    ("sentence", "cleaned", "removed"),
    [
        # the answer
        ("The Time Machine H [6]. G [6]. Wells [6]", "The Time Machine H. G. Wells", [6]),
        ("…are the authors of the proposal [6].", "…are the authors of the proposal.", [6]),
        (
            "X [1] and Y [1][2] and [1, 7].",
            "X and Y [2] and [1].",
            [7],
        ),  # repeats: the last place kept
        ("Both [2; 1] and [0].", "Both [1, 2] and.", [0]),
        ("No citation here.", "No citation here.", []),
        ("서울은 수도이다 [1] [1].", "서울은 수도이다 [1].", []),
    ],
)
def test_clean_sentence(sentence, cleaned, removed):
    assert clean_sentence(sentence, 5) == (cleaned, removed)


def test_cited_numbers_in_order_with_repeats():
    assert cited_numbers("a [2] b [1, 3] c [2]") == [2, 1, 3, 2]


def feed_all(stream: AnswerStream, pieces: list[str], cut: bool) -> list[str]:
    return [stream.feed(p) for p in pieces] + [stream.finish(cut=cut)]


def test_stream_releases_whole_sentences_and_keeps_the_spacing():
    stream = AnswerStream(3)
    out = feed_all(
        stream,
        ["  Staff get", " 10 days [1].", "\n\n- Interns", " get none [4].\n- Nobody else."],
        cut=False,
    )
    assert out == ["", "", "Staff get 10 days [1].\n\n", "- Interns get none.\n", "- Nobody else."]
    assert stream.shown == "".join(out) and stream.removed == [4] and stream.dropped == ""


def test_a_cut_answer_drops_its_unfinished_sentence_or_ends_at_a_word():
    stream = AnswerStream(2)
    assert (
        "".join(feed_all(stream, ["It opens at 7 [1]. It was written by David M"], cut=True))
        == "It opens at 7 [1]. "
    )
    assert stream.dropped == "It was written by David M"
    alone = AnswerStream(2)
    assert (
        "".join(feed_all(alone, ["One long sentence that never ends bec"], cut=True))
        == "One long sentence that never ends…"
    )
    # the limit reached exactly at a sentence end (or a final citation) cuts nothing
    whole = AnswerStream(2)
    assert (
        "".join(feed_all(whole, ["Done [1]. Also this [2]"], cut=True)) == "Done [1]. Also this [2]"
    )
    assert whole.dropped == ""


def test_korean_sentences_stream_one_at_a_time():
    stream = AnswerStream(1)
    assert feed_all(stream, ["서울은 수도이다 [1]. 부산", "은 항구다 [3]."], cut=False) == [
        "서울은 수도이다 [1]. ",
        "",
        "부산은 항구다.",
    ]
    assert stream.removed == [3]


def test_a_citation_after_the_full_stop_stays_with_its_sentence():
    stream = AnswerStream(2)
    out = feed_all(
        stream, ["Answer to: What is it? [1]", " It is blue. [2] And", " more [3]."], cut=False
    )
    assert out == ["", "Answer to: What is it? [1] It is blue. [2] ", "", "And more."]
    assert stream.sentences() == 3 and stream.removed == [3]
