"""Small frozen result types shared by ingestion, retrieval, reranking and generation.

Scores are plain Python floats and every type is immutable: stages return new
objects (``dataclasses.replace``) instead of changing what they were given.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Page:
    """Text of one page (PDF) or of a whole file (number is None)."""

    number: int | None
    text: str


@dataclass(frozen=True)
class Document:
    """A loaded file: its pages and anything worth telling the user about it."""

    source: str
    pages: tuple[Page, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A piece of a document as stored in the vector store."""

    id: str
    text: str
    source: str
    page: int | None
    chunk_index: int
    content_hash: str


@dataclass(frozen=True)
class Candidate:
    """A chunk on its way through retrieval, reranking and reordering.

    ``retrieval_rank`` is 1-based and never changes after retrieval; ``rank`` is
    the 1-based position after the latest ranking stage (equal to
    ``retrieval_rank`` until a reranker runs). ``rerank_score`` is the
    normalised reranker score and ``rerank_raw`` the model's raw output.
    ``truncated`` is True when the reranker had to cut the input at max_length.
    """

    chunk: Chunk
    retrieval_score: float
    retrieval_rank: int
    rank: int
    rerank_score: float | None = None
    rerank_raw: float | None = None
    truncated: bool = False

    @property
    def score(self) -> float:
        return self.rerank_score if self.rerank_score is not None else self.retrieval_score


@dataclass(frozen=True)
class Citation:
    """A numbered source as the LLM saw it: [number] -> chunk."""

    number: int
    chunk_id: str
    source: str
    page: int | None


@dataclass(frozen=True)
class Trace:
    """What happened while answering: ranks before/after, timings, models."""

    question: str
    rerank: bool
    retrieved: tuple[Candidate, ...]
    reranked: tuple[Candidate, ...]
    context: tuple[Candidate, ...]
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    retrieval: str = "dense"  # dense | bm25 | hybrid
    # the question's language when the pipeline routes by language (ISO 639-1)
    language: str | None = None
    # what was searched instead of ``question`` (a follow-up made standalone)
    searched: str | None = None


@dataclass(frozen=True)
class Evidence:
    """Source [number]'s sentences that support the answer, best first, with their scores
    (rag.evidence).
    """

    number: int
    sentences: tuple[str, ...]
    scores: tuple[float, ...]


@dataclass(frozen=True)
class Answer:
    """The answer as shown: ``unsupported_citations`` were numbers the LLM cited with no such source
    (removed from ``text``); ``cut`` is True when the token limit ended it (its unfinished sentence
    dropped)."""

    text: str
    citations: tuple[Citation, ...]
    model: str
    trace: Trace
    unsupported_citations: tuple[int, ...] = ()
    cut: bool = False
    evidence: tuple[Evidence, ...] = ()  # per cited source, the sentences that support the answer
    # the grounding check's score (llm.min_support), None when it is off
    support: float | None = None
