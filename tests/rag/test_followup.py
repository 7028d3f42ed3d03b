import pytest

from rag.followup import concat_query, llm_query, looks_like_follow_up, resolve_method

PREVIOUS = [("How many days of paid sick leave do full-time staff get?", "Ten days [1].")]


@pytest.mark.parametrize(
    "question",
    [
        "And interns?",
        "What about part-time staff?",
        "When did he die?",
        "What is its capital?",
        "Interns?",
        "인턴은요?",
        "그는 언제 태어났나요?",
        "그 회사의 본사는 어디인가요?",
        "그럼 국내 출장은?",
        "이 정책은 언제 시행되나요?",
    ],
)
def test_pronoun_and_ellipsis_follow_ups_are_recognised(question):
    assert looks_like_follow_up(question)


@pytest.mark.parametrize(
    "question",
    [
        "How many days of paid sick leave do full-time staff get?",
        "What is the name of the team that won the cup?",
        "Where was Genghis Khan born?",
        "관리자 계정 비밀번호의 최소 길이는?",
        "해외 출장 일비는 얼마인가요?",
    ],
)
def test_standalone_questions_are_left_alone(question):
    assert not looks_like_follow_up(question) and concat_query(question, PREVIOUS) == question


def test_concat_puts_the_previous_question_first():
    assert concat_query("And interns?", PREVIOUS) == f"{PREVIOUS[0][0]} And interns?"
    assert concat_query("And interns?", []) == "And interns?"


def test_llm_rewrite_and_its_fallbacks():
    sent = []

    def ask(messages):
        sent.append(messages)
        return replies.pop(0)

    replies = [
        '"How many days of paid sick leave do interns get?"\n(resolved "interns")',
        "",
        "x" * 2000,
    ]
    assert (
        llm_query("And interns?", PREVIOUS, ask)
        == "How many days of paid sick leave do interns get?"
    )
    assert (
        "User: How many days of paid sick leave do full-time staff get?\nAssistant: Ten days [1]."
        in sent[0][1]["content"]
    )
    assert sent[0][1]["content"].endswith("Last question: And interns?\n\nStandalone question:")
    # an empty or runaway reply: the cheap method instead
    assert llm_query("And interns?", PREVIOUS, ask) == f"{PREVIOUS[0][0]} And interns?"
    assert llm_query("And interns?", PREVIOUS, ask) == f"{PREVIOUS[0][0]} And interns?"
    # no history: not asked
    assert llm_query("And interns?", [], ask) == "And interns?" and len(sent) == 3
    standalone = "How many days of annual leave do interns get?"
    # needs no rewrite: not asked
    assert llm_query(standalone, PREVIOUS, ask) == standalone and len(sent) == 3


def test_auto_uses_the_llm_only_with_an_endpoint():
    assert resolve_method("auto", True) == "llm" and resolve_method("auto", False) == "concat"
    assert resolve_method("off", True) == "off"
