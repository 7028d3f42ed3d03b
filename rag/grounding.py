"""Is the answer in the sources at all? A check made before the LLM is asked.

A small local model answers every question, with or without the answer in front
of it (guides/answers.md has the measurement). So the pipeline looks first, with two signals:

- ``support``: a source sentence that answers a question shares most of its words
  with it (names, numbers, the rare words), while a paragraph that only shares the
  topic does not. Over every sentence of the context (a long one in windows of 40
  words), the largest share of the question's words found in one sentence or in two
  neighbouring ones. Question words do not count; a Latin-script word matches by its
  first five letters ("commanded" ~ "command"), a Korean word by its character
  bigrams once a particle is taken off ("세종대왕이" ~ "세종대왕에"). No model: it
  reads Korean as well as English. Below ``llm.min_support``, decline.
- the reranker's best score among the sources, when a reranker ran (a trained
  cross-encoder's sigmoid separates answering passages from the rest). Below
  ``llm.min_rerank_score``, decline.

A declined answer is "not in the documents" in the question's language, the LLM is
not asked, and the trace notes which signal decided and the best place found, so a
user can judge the decision. Both thresholds are chosen with
``python -m lab.evaluate ... --decline`` (without ``--answers``: retrieval only),
which reports how often each signal declines with the gold paragraph in the context
and with it removed; guides/answers.md gives the numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rag.sentences import split_sentences
from rag.types import Candidate

MAX_SENTENCES = 60  # per source; a chunk is a few hundred tokens

_WORD = re.compile(r"\w+")
# Words a question is asked with, not about: they are in every text, or in none of the answer's.
_QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how many much did does do is are was were the a an "
    "of in on at to "
    "for by from with and or as that this these those it its be been has have had can could would "
    "will "
    "he she his her they their them there not no name named called kind type "
    "무엇 무엇인가 무엇인가요 무엇을 무엇이 무엇은 누구 누구인가 누구인가요 누가 누구를 누구의 "
    "언제 어디 어디에 어디에서 "
    "어디서 몇 어느 무슨 어떤 얼마 얼마나 왜 어떻게 무엇일까 인가 인가요 였나 였는가 이름 무엇인지 "
    "누구인지".split()
)


# A particle or ending glued to a Korean word ("세종대왕이", "반포한"): taken off before the
# word's bigrams are counted, since the source sentence says the same stem with another ending.
_KO_ENDING = re.compile(
    r"(?<=[\uac00-\ud7a3])(?:에서는|에서|에게|으로|부터|까지|이라는|라는|이었던|였던|이란|"
    r"은|는|이|가|을|를|의|에|로|와|과|도|만|한|된|인|던|란)$"
)
# lower-cased Latin-script words (accents too) and numbers
_LATIN = re.compile(r"[0-9a-z_\u00c0-\u024f]+")
# a Latin-script word is matched by its first letters ("commanded" ~ "command",
# "expeditions" ~ "expedition")
PREFIX = 5
# words: a longer sentence (a table row run, a list) is read in windows of this
# many, half overlapping
WINDOW = 40


def _units(word: str, *, question: bool) -> set[str]:
    """What one word is matched by: a number whole; a Latin-script word by its first PREFIX letters
    (a source's word also by its first 3 and 4, so that "die" finds "died" and "war" finds "wars");
    any other by its character bigrams (a Korean particle glued to a stem leaves the stem's bigrams;
    Chinese, Japanese and Thai run without spaces, so a "word" there is a whole phrase)."""
    # Hangul, and scripts written without spaces (Chinese, Japanese, Thai)
    if not _LATIN.fullmatch(word):
        return {word} if len(word) == 1 else {word[i : i + 2] for i in range(len(word) - 1)}
    if word.isdigit():
        return {word}
    if question:
        return {word[:PREFIX]}
    return {word[:k] for k in range(3, PREFIX + 1)} | {word[:PREFIX]}


# A Korean question word with its ending glued on ("얼마인가요", "무엇입니까", "누구였나요",
# "어디에서"): asked with, not about.
_KO_QUESTION = re.compile(
    r"(?:무엇|누구|누가|언제|어디|얼마|어떻게|어떤|어느|무슨|몇)[\uac00-\ud7a3]*$"
)


def question_grams(question: str) -> frozenset[str]:
    """The units the question is matched by: its words, question words left out, a Korean word's
    particle or ending taken off."""
    units: set[str] = set()
    for word in _WORD.findall(question.lower()):
        stem = _KO_ENDING.sub("", word) if len(word) > 2 else word
        if word in _QUESTION_WORDS or stem in _QUESTION_WORDS or _KO_QUESTION.match(word):
            continue
        units |= _units(stem, question=True)
    return frozenset(units)


def _windows(sentence: str) -> list[tuple[str, set[str]]]:
    """(text, units) of a sentence, or of each WINDOW-word window of a long one."""
    words = sentence.split()
    if len(words) <= WINDOW:
        return [(sentence, _grams(sentence))]
    texts = [
        " ".join(words[i : i + WINDOW]) for i in range(0, len(words) - WINDOW // 2, WINDOW // 2)
    ]
    return [(text, _grams(text)) for text in texts]


def _grams(text: str) -> set[str]:
    units: set[str] = set()
    for word in _WORD.findall(text.lower()):
        units |= _units(word, question=False)
    return units


@dataclass(frozen=True)
class Support:
    """How well the best place in the context covers the question: ``score`` in [0, 1], the source
    number it is in (1-based, as cited) and its sentence(s)."""

    score: float
    source: int | None = None
    sentence: str = ""


def support(question: str, context: Sequence[Candidate]) -> Support:
    """The best share of the question's units found in one sentence, or two neighbouring ones, of
    any source in ``context`` (a long sentence is read in windows)."""
    wanted = question_grams(question)
    if not wanted:
        # nothing to look for (a question of question words only): never decline
        return Support(1.0)
    best = Support(0.0)
    for number, candidate in enumerate(context, start=1):
        pieces = [
            w for s in split_sentences(candidate.chunk.text)[:MAX_SENTENCES] for w in _windows(s)
        ]
        found = [units & wanted for _, units in pieces]
        for i in range(len(found)):
            for span in (1, 2) if i + 1 < len(found) else (1,):
                score = len(set().union(*found[i : i + span])) / len(wanted)
                if score > best.score:
                    best = Support(
                        score, number, " ".join(text for text, _ in pieces[i : i + span])
                    )
    return best


@dataclass(frozen=True)
class Grounding:
    """Both signals for one context: ``support`` and the reranker's best score (None when none
    ran).
    """

    support: Support
    rerank: float | None = None
    rerank_source: int | None = None

    def reason(self, min_support: float, min_rerank_score: float, n_sources: int) -> str | None:
        """Why the answer is "not in the documents" at these thresholds (None: ask the LLM)."""
        if n_sources == 0 and (min_support > 0 or min_rerank_score > 0):
            return "not in the documents: no source was retrieved. The LLM was not asked"
        if min_rerank_score > 0 and self.rerank is not None and self.rerank < min_rerank_score:
            return (
                "not in the documents: the reranker scored every source below "
                f"{min_rerank_score:g} "
                f"(llm.min_rerank_score; the best, source [{self.rerank_source}], "
                f"{self.rerank:.3f}). "
                "The LLM was not asked"
            )
        if min_support > 0 and self.support.score < min_support:
            best = (
                "none of them holds any"
                if self.support.source is None
                else f"the best, source [{self.support.source}], holds {self.support.score:.0%}: "
                f"{self.support.sentence[:100]!r}"
            )
            sources = "the source" if n_sources == 1 else f"the {n_sources} sources"
            return (
                f"not in the documents: no sentence of {sources} holds enough of the question's "
                f"words (at least {min_support:.0%}, llm.min_support; {best}). The LLM was not "
                "asked"
            )
        return None


def grounding(question: str, context: Sequence[Candidate]) -> Grounding:
    """The signals for ``context`` (the reranker's only where its candidates carry a rerank
    score).
    """
    scored = [
        (c.rerank_score, i) for i, c in enumerate(context, start=1) if c.rerank_score is not None
    ]
    best = max(scored, default=None)
    return Grounding(
        support(question, context),
        None if best is None else best[0],
        None if best is None else best[1],
    )
