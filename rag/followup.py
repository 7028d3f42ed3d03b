"""Follow-up questions, made searchable: "and for interns?" retrieves nothing useful as typed.

Two ways to turn a follow-up into what is searched (``retrieval.follow_ups``):

- ``llm``: the LLM rewrites it into one standalone question from the earlier
  turns (used when an endpoint is set: a capable model resolves "it", "그 회사"
  and ellipsis well). A reply that is empty or runs long falls back to ``concat``.
  Only a question that looks like a follow-up (below) is sent: a standalone one
  costs no extra LLM call.
- ``concat``: when the question looks like a follow-up (a pronoun that needs an
  antecedent, "and ...", "what about ...", "...은요?", or two words or fewer),
  the previous question is put before it. Cheap and model-free, for the local
  270M model, which cannot rewrite; measured in guides/answers.md.

The answer is still written to the question as typed, with the conversation;
only retrieval and reranking read the standalone form, and the trace and the
app show it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

Turn = tuple[str, str]  # (question, answer) of an earlier turn

_WORD = re.compile(r"[\w']+")
_EN_PRONOUNS = frozenset(
    {
        "it",
        "its",
        "it's",
        "they",
        "them",
        "their",
        "theirs",
        "he",
        "him",
        "his",
        "she",
        "her",
        "hers",
        "those",
        "these",
    }
)
_EN_OPENERS = re.compile(
    r"^\s*(and|also|but|or|what about|how about|same for|and what about)\b", re.IGNORECASE
)
# Korean: demonstratives and pronouns that point back ("그 회사", "그것은", "거기서"), and the
# "…은요?" ellipsis
_KO_POINTERS = re.compile(
    r"^(그|이|저)(것|거|건|게|곳|때|들|녀|분|런|렇)|^(그|이|저)$|^그(는|가|의|를|에게|와|도)$|^거기|^해당"
)
_KO_OPENERS = re.compile(r"^\s*(그럼|그러면|그리고|또|그런데)\b")
_KO_ELLIPSIS = re.compile(r"[은는]요\s*\?*\s*$")
SHORT = 2  # words: "Interns?" "Boston?" carry no topic of their own


def looks_like_follow_up(question: str) -> bool:
    """Does ``question`` lean on an earlier turn (a pronoun, "and ...", "...은요?", very short)?"""
    words = _WORD.findall(question)
    if len(words) <= SHORT:
        return True
    if _EN_OPENERS.match(question) or _KO_OPENERS.match(question) or _KO_ELLIPSIS.search(question):
        return True
    return any(w.lower() in _EN_PRONOUNS or _KO_POINTERS.match(w) for w in words)


def concat_query(question: str, history: Sequence[Turn]) -> str:
    """The previous question, then this one, when this one looks like a follow-up; else this one."""
    if not history or not looks_like_follow_up(question):
        return question
    return f"{history[-1][0].strip()} {question.strip()}"


REWRITE_SYSTEM = (
    "Rewrite the user's last question as one standalone question that can be understood without "
    "the "
    "conversation: replace pronouns and fill in what the question leaves out, using the earlier "
    "turns. "
    "Keep the language of the last question. Do not answer it. Reply with the rewritten question "
    "only."
)


def rewrite_messages(question: str, history: Sequence[Turn]) -> list[dict[str, str]]:
    turns = "\n".join(f"User: {q.strip()}\nAssistant: {a.strip()}" for q, a in history)
    return [
        {"role": "system", "content": REWRITE_SYSTEM},
        {
            "role": "user",
            "content": f"Conversation:\n{turns}\n\nLast question: {question.strip()}\n\n"
            "Standalone question:",
        },
    ]


def llm_query(
    question: str, history: Sequence[Turn], ask: Callable[[list[dict[str, str]]], str]
) -> str:
    """The LLM's standalone form of ``question`` (``ask`` sends messages, returns the reply); when
    the reply is empty, or over 3x the length of the question and the previous one,
    :func:`concat_query` instead."""
    if not history or not looks_like_follow_up(question):
        return question
    reply = ask(rewrite_messages(question, history)).strip()
    line = reply.splitlines()[0].strip().strip("\"'“”「」") if reply else ""
    line = re.sub(
        r"^(standalone question|rewritten question)\s*:\s*", "", line, flags=re.IGNORECASE
    )
    if not line or len(line) > 3 * (len(question) + len(history[-1][0])):
        logger.info(
            "the LLM's rewrite of a follow-up was unusable (%r); "
            "the previous question is prepended",
            reply[:80],
        )
        return concat_query(question, history)
    return line


def resolve_method(method: str, has_endpoint: bool) -> str:
    """``auto``: the LLM rewrites when an endpoint is set; the local model cannot, so ``concat``
    then.
    """
    if method == "auto":
        return "llm" if has_endpoint else "concat"
    return method
