"""What an answer shows: whole sentences, and only citations of sources that exist.

An LLM's text goes through :class:`AnswerStream` on its way to the user (the
CLI, the app, the JSON trace all get the same text):

- ``[n]`` with no source n is removed (a 270M model invents "[6]" with five
  sources); "[1, 7]" keeps its valid part, "[1]"; each removal is recorded.
- The same source cited twice in one sentence is cited once, at its last place.
- Text is released a whole sentence at a time, so an answer cut at the token
  limit (``llm.max_tokens``) loses only its unfinished last sentence, never
  ends mid-word or mid-name ("David M [5]").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.sentences import spans as sentence_spans

CITATION = re.compile(r"\[\s*([0-9]+(?:\s*[,;]\s*[0-9]+)*)\s*\]")
_SPACE_BEFORE = re.compile(r"[ \t]+$")
CUT_MARK = "…"


def cited_numbers(text: str) -> list[int]:
    """Every number cited in ``text``, in order, repeats included."""
    return [int(part) for m in CITATION.finditer(text) for part in re.split(r"[,;]", m[1])]


def without_citations(text: str) -> str:
    """``text`` with its [n] markers taken out: the answer as scored against a gold answer (a
    marker's number must not count as a word of the answer)."""
    return CITATION.sub("", text).strip()


def clean_sentence(sentence: str, n_sources: int) -> tuple[str, list[int]]:
    """``sentence`` with citations of missing sources removed and repeats cited once (at their
    last place); also the numbers that named no source."""
    matches = list(CITATION.finditer(sentence))
    if not matches:
        return sentence, []
    seen: set[int] = set()
    removed: list[int] = []
    kept: list[list[int]] = []
    for m in reversed(matches):  # the last citation of a number is the one kept
        numbers = []
        for part in re.split(r"[,;]", m[1]):
            number = int(part)
            if not 1 <= number <= n_sources:
                removed.append(number)
            elif number not in seen:
                seen.add(number)
                numbers.append(number)
        kept.append(sorted(numbers))
    kept.reverse()
    out, last = [], 0
    for m, numbers in zip(matches, kept):
        before = sentence[last : m.start()]
        if numbers:
            out.append(before + "[" + ", ".join(map(str, numbers)) + "]")
        elif sentence.startswith("[", m.end()):
            out.append(before)  # "Y [7][2]" -> "Y [2]"
        else:
            out.append(_SPACE_BEFORE.sub("", before))  # "H [6]." -> "H."
        last = m.end()
    out.append(sentence[last:])
    return "".join(out), sorted(set(removed), key=removed.index)


def spans(text: str) -> list[tuple[int, int]]:
    """Sentence spans of an answer, a citation written after the full stop ("It is blue. [1]") kept
    with the sentence it cites rather than starting the next one."""
    out: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        lead = re.match(r"(?:\s*" + CITATION.pattern + r")+", text[start:end])
        if out and lead:
            out[-1] = (out[-1][0], start + lead.end())
            start += lead.end()
            while start < end and text[start].isspace():
                start += 1
            if start >= end:
                continue
        out.append((start, end))
    return out


@dataclass
class AnswerStream:
    """Feed the LLM's pieces in; get back the text to show, a whole sentence at a time."""

    n_sources: int
    shown: str = ""
    removed: list[int] = field(default_factory=list)
    dropped: str = ""  # the unfinished sentence left out when the answer was cut
    _held: str = ""

    def feed(self, piece: str) -> str:
        """The text that became ready with ``piece`` ("" while a sentence is still being
        written).
        """
        self._held += piece
        found = spans(self._held)
        if len(found) < 2:
            return ""
        ready = found[-1][0]  # every sentence but the last is finished: a later one has begun
        return self._release(self._held[:ready], self._held[ready:])

    def finish(self, cut: bool = False) -> str:
        """The rest of the text; with ``cut`` (the LLM hit its token limit), an unfinished last
        sentence is dropped, or, when it is the whole answer, ended at a word with "…"."""
        rest = self._held
        if cut and rest.strip():
            last = rest.rstrip()
            if last[-1] not in ".!?。！？" and not CITATION.search(last[-6:]):
                self.dropped = rest.strip()
                if self.shown.strip():
                    rest = ""
                else:
                    words = last.rsplit(None, 1)
                    rest = (words[0] if len(words) > 1 else last) + CUT_MARK
        return self._release(rest, "")

    def sentences(self) -> int:
        """How many sentences have been shown."""
        return len(spans(self.shown))

    def stop(self) -> None:
        """End here (enough sentences were shown): the next sentence, begun, is not shown."""
        self._held = ""

    def _release(self, ready: str, held: str) -> str:
        self._held = held
        if not ready:
            return ""
        text, start = [], 0
        for lo, hi in spans(ready):
            cleaned, removed = clean_sentence(ready[lo:hi], self.n_sources)
            text.append(ready[start:lo] + cleaned)
            start = hi
            self.removed += [n for n in removed if n not in self.removed]
        text.append(ready[start:])
        out = "".join(text)
        if not self.shown:
            out = out.lstrip()
        self.shown += out
        return out
