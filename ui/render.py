"""How one answer is shown: the text, its sources in the order the LLM read them, rank moves, timings.

The formatting helpers are pure functions (tested exactly); ``show_result`` draws
a result into the current Streamlit container.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping

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


def source_title(number: int, candidate: Candidate, reranked: bool, cited: bool) -> str:
    """One line per source: number, file, page, rank move, scores, whether the answer cited it."""
    parts = [f"[{number}] {Path(candidate.chunk.source).name}"]
    if candidate.chunk.page is not None:
        parts.append(f"p. {candidate.chunk.page}")
    parts.append(movement(candidate, reranked))
    parts.append(f"retrieval {candidate.retrieval_score:.3f}")
    if candidate.rerank_score is not None:
        # the raw score beside the normalised one: sigmoid(7.2) and sigmoid(5.1) both print 0.99x
        raw = f" (raw {candidate.rerank_raw:.2f})" if candidate.rerank_raw is not None else ""
        parts.append(f"rerank {candidate.rerank_score:.3f}{raw}")
    if cited:
        parts.append("cited")
    return " · ".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def timing_line(timings: Mapping[str, float]) -> str:
    """'retrieve 16 ms · rerank 430 ms · generate 3.2 s · total 3.6 s' (embedding the query counts as retrieval)."""
    stages = {
        "retrieve": timings.get("embed_query", 0.0) + timings.get("retrieve", 0.0),
        "rerank": timings.get("rerank"),
        "generate": timings.get("generate"),
    }
    shown = [f"{name} {_ms(value)}" for name, value in stages.items() if value is not None]
    total = sum(v for k, v in timings.items() if k != "first_token")
    if "first_token" in timings:
        shown.append(f"first token {_ms(timings['first_token'])}")
    return " · ".join(shown + [f"total {_ms(total)}"])


def escape_markdown(text: str) -> str:
    """Document text shown as is: no markdown or HTML from a document is interpreted."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def candidate_rows(trace: Trace) -> list[dict[str, object]]:
    """Every candidate the reranker saw, in its new order, with where it came from."""
    used = {c.chunk.id for c in trace.context}
    return [{
        "rank": c.rank, "moved": movement(c, True), "file": Path(c.chunk.source).name,
        "page": c.chunk.page, "retrieval": round(c.retrieval_score, 4),
        "rerank": None if c.rerank_score is None else round(c.rerank_score, 4),
        "raw": None if c.rerank_raw is None else round(c.rerank_raw, 4), "in context": c.chunk.id in used,
    } for c in trace.reranked]


def ingest_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def show_sources(trace: Trace, cited: set[int]) -> None:
    st.markdown("**Sources, in the order the LLM read them**")
    for number, candidate in enumerate(trace.context, start=1):
        with st.expander(source_title(number, candidate, trace.rerank, number in cited)):
            st.markdown(escape_markdown(candidate.chunk.text))
            st.caption(f"{candidate.chunk.source} · chunk {candidate.chunk.chunk_index}")
    for note in trace.notes:
        st.caption(f"note: {note}")
    if trace.rerank and trace.reranked:
        with st.expander(f"All {len(trace.reranked)} candidates: bi-encoder rank → reranked rank"):
            st.dataframe(candidate_rows(trace), hide_index=True)


def show_result(result: Result) -> None:
    """Draw one side: answer (or error), sources, timings."""
    if result.error is not None:
        st.error(result.error)
    if result.answer is not None:
        st.markdown(result.answer.text if result.answer.text else "_(the model returned no text)_")
    if result.trace is None:
        return
    cited = {c.number for c in result.answer.citations} if result.answer is not None else set()
    show_sources(result.trace, cited)
    timings = result.answer.trace.timings if result.answer is not None else result.trace.timings
    st.caption(timing_line(timings))
