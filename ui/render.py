"""How one answer is shown: the text, its sources in the order the LLM read them, rank moves,
timings.

The formatting helpers are pure functions (tested exactly); ``show_result`` draws
a result into the current Streamlit container.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import streamlit as st

from rag.types import Answer, Candidate, Trace

RERANKED, BI_ENCODER = "Reranked", "Bi-encoder only"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~<$])")


@dataclass(frozen=True)
class Result:
    """One side of an answer: what was retrieved, what the LLM said (or why it could not)."""

    label: str
    trace: Trace | None = None
    answer: Answer | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return self.answer.text if self.answer is not None else ""


def movement(candidate: Candidate, reranked: bool) -> str:
    """'#14 → #1' after reranking, '#3' without."""
    if reranked:
        return f"#{candidate.retrieval_rank} → #{candidate.rank}"
    return f"#{candidate.retrieval_rank}"


TOP = "★"  # marks the source ranked first on its side
ONLY_HERE = "only on this side"


def locator(candidate: Candidate) -> str:
    """What locates a chunk in its file: "p. 3" for a PDF page, else nothing (never "None"; sections
    are not stored: ingest turns Markdown headings into plain lines)."""
    return f"p. {candidate.chunk.page}" if candidate.chunk.page is not None else ""


def source_title(
    number: int, candidate: Candidate, reranked: bool, cited: bool, only_here: bool = False
) -> str:
    """One line per source: number, file, page or section, rank move (★ for rank 1), scores, whether
    the answer cited it, and whether the other side of a comparison lacks it."""
    parts = [f"[{number}] {Path(candidate.chunk.source).name}"]
    if locator(candidate):
        parts.append(locator(candidate))
    parts.append(movement(candidate, reranked) + (f" {TOP}" if candidate.rank == 1 else ""))
    parts.append(f"retrieval {candidate.retrieval_score:.3f}")
    if candidate.rerank_score is not None:
        # the raw score beside the normalised one: sigmoid(7.2) and sigmoid(5.1) both print 0.99x
        raw = f" (raw {candidate.rerank_raw:.2f})" if candidate.rerank_raw is not None else ""
        parts.append(f"rerank {candidate.rerank_score:.3f}{raw}")
    if only_here:
        parts.append(ONLY_HERE)
    if cited:
        parts.append("cited")
    return " · ".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def timing_line(timings: Mapping[str, float]) -> str:
    """'retrieve 16 ms · rerank 430 ms · generate 3.2 s · total 3.6 s' (embedding the query
    counts as retrieval).
    """
    stages = {
        "retrieve": timings.get("embed_query", 0.0) + timings.get("retrieve", 0.0),
        "rerank": timings.get("rerank"),
        "check": timings.get("grounding"),  # is the answer in the sources at all (rag.grounding)
        "generate": timings.get("generate"),
        "evidence": timings.get("evidence"),
    }
    shown = [f"{name} {_ms(value)}" for name, value in stages.items() if value is not None]
    total = sum(v for k, v in timings.items() if k != "first_token")
    if "first_token" in timings:
        shown.append(f"first token {_ms(timings['first_token'])}")
    return " · ".join(shown + [f"total {_ms(total)}"])


def escape_markdown(text: str) -> str:
    """Document text shown as is: no markdown or HTML from a document is interpreted."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\((?!https?://)[^)]*\)")
MARKDOWN_SUFFIXES = (".md", ".markdown")


def document_markdown(text: str) -> str:
    """A Markdown document's chunk, to render (headings, lists, tables) safely: HTML is shown as
    text, images become their alt text (nothing is fetched), only http(s) links stay links, "$" is
    no math."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("$", "\\$")
    text = _IMAGE.sub(lambda m: m[1], text)
    return _LINK.sub(lambda m: m[1], text)


def chunk_markdown(candidate: Candidate, evidence: Sequence[str] = ()) -> str:
    """How a chunk is drawn: Markdown files render as Markdown (safely), other text shows as it is;
    the ``evidence`` sentences (exact substrings of the chunk) are highlighted."""
    render = (
        document_markdown
        if candidate.chunk.source.lower().endswith(MARKDOWN_SUFFIXES)
        else escape_markdown
    )
    text = candidate.chunk.text
    found = sorted((text.find(s), len(s)) for s in evidence if s and text.find(s) >= 0)
    out, position = [], 0
    for start, length in found:
        if start < position:
            continue
        # one line: a directive ends at a line break
        marked = " ".join(render(text[start : start + length]).split())
        out += [render(text[position:start]), f":orange-background[{marked}]"]
        position = start + length
    out.append(render(text[position:]))
    return "".join(out)


CANDIDATE_COLUMNS = {  # narrow enough for one column of the A/B view
    "moved": st.column_config.TextColumn(
        "rank", help="bi-encoder rank → reranked rank", width="small"
    ),
    "file": st.column_config.TextColumn("file", width="medium"),
    "where": st.column_config.TextColumn("page", width="small"),
    "retrieval": st.column_config.NumberColumn("retrieval", format="%.3f", width="small"),
    "rerank": st.column_config.NumberColumn("rerank", format="%.3f", width="small"),
    "used": st.column_config.CheckboxColumn(
        "LLM", help="among the chunks the LLM read", width="small"
    ),
}


def candidate_rows(trace: Trace) -> list[dict[str, object]]:
    """Every candidate the reranker saw, in its new order, with where it came from."""
    used = {c.chunk.id for c in trace.context}
    return [
        {
            "moved": movement(c, True),
            "file": Path(c.chunk.source).name,
            "where": locator(c),
            "retrieval": round(c.retrieval_score, 4),
            "rerank": None if c.rerank_score is None else round(c.rerank_score, 4),
            "used": c.chunk.id in used,
        }
        for c in trace.reranked
    ]


def context_ids(result: Result) -> set[str]:
    trace = result.answer.trace if result.answer is not None else result.trace
    return {c.chunk.id for c in trace.context} if trace is not None else set()


def ingest_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def top_line(trace: Trace, others: set[str] | None) -> str:
    """The source ranked first on this side, and how many of this side's sources the other side
    lacks.
    """
    top = next(((n, c) for n, c in enumerate(trace.context, start=1) if c.rank == 1), None)
    line = ""
    if top is not None:
        n, c = top
        line = f"{TOP} ranked first: [{n}] {Path(c.chunk.source).name}" + (
            f" · {locator(c)}" if locator(c) else ""
        )
    if others is not None:
        only = sum(1 for c in trace.context if c.chunk.id not in others)
        line += (" · " if line else "") + (
            f"{only} of {len(trace.context)} sources only on this side"
            if only
            else "same sources as the other side"
        )
    return line


def show_sources(
    trace: Trace,
    cited: set[int],
    others: set[str] | None = None,
    evidence: Mapping[int, Sequence[str]] | None = None,
) -> None:
    st.markdown("**Sources, in the order the LLM read them**")
    if trace.searched is not None:
        st.caption(
            f"searched for: {escape_markdown(trace.searched)} (the follow-up, made standalone)"
        )
    if trace.context:
        st.caption(top_line(trace, others))
    for number, candidate in enumerate(trace.context, start=1):
        only_here = others is not None and candidate.chunk.id not in others
        supporting = (evidence or {}).get(number, ())
        with st.expander(source_title(number, candidate, trace.rerank, number in cited, only_here)):
            if supporting:
                st.caption("highlighted: the sentences that support the answer")
            st.markdown(chunk_markdown(candidate, supporting))
            st.caption(f"{candidate.chunk.source} · chunk {candidate.chunk.chunk_index}")
    # a note may quote a document (the grounding check's best sentence): shown as text
    for note in trace.notes:
        st.caption(f"note: {escape_markdown(note)}")
    if trace.rerank and trace.reranked:
        with st.expander(f"All {len(trace.reranked)} candidates: bi-encoder rank → reranked rank"):
            st.dataframe(
                candidate_rows(trace),
                hide_index=True,
                width="stretch",
                column_config=CANDIDATE_COLUMNS,
            )


def show_result(result: Result, other: Result | None = None) -> None:
    """Draw one side: answer (or error), sources, timings; with ``other`` (the A/B view's other
    side), the sources that side lacks are marked."""
    if result.error is not None:
        st.error(result.error)
    if result.answer is not None:
        st.markdown(result.answer.text if result.answer.text else "_(the model returned no text)_")
    if result.trace is None:
        return
    cited = {c.number for c in result.answer.citations} if result.answer is not None else set()
    others = context_ids(other) if other is not None and other.trace is not None else None
    evidence = (
        {e.number: e.sentences for e in result.answer.evidence} if result.answer is not None else {}
    )
    show_sources(
        result.answer.trace if result.answer is not None else result.trace, cited, others, evidence
    )
    timings = result.answer.trace.timings if result.answer is not None else result.trace.timings
    st.caption(timing_line(timings))
