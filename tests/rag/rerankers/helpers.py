"""Candidates built by hand, the way retrieval hands them to a reranker."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from rag.types import Candidate, Chunk

# A query and passages of mixed length, shared by the cross-encoder tests of every backend.
QUERY = "how do rerankers improve retrieval"
PASSAGES = [
    "A cross-encoder reads the query and the passage together.",
    "Bananas are yellow.",
    "Reranking reorders the candidates that a fast bi-encoder retrieved, using a slower but more "
    "accurate model that attends across the query and the passage at once, token by token.",
    "Chroma stores embeddings.",
    "The lost in the middle effect means language models read the start and the end of a long "
    "context best.",
    "ok",
]
LONG_PASSAGE = " ".join(["retrieval augmented generation with a reranking stage"] * 40)


def make_candidates(texts: Sequence[str], scores: Sequence[float] | None = None) -> list[Candidate]:
    """One candidate per text, retrieval ranks 1..n in the given order."""
    scores = scores if scores is not None else [1.0 - i / 100 for i in range(len(texts))]
    return [
        Candidate(
            chunk=Chunk(
                id=f"doc.md#{i}",
                text=text,
                source="doc.md",
                page=None,
                chunk_index=i,
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
            ),
            retrieval_score=score,
            retrieval_rank=i + 1,
            rank=i + 1,
        )
        for i, (text, score) in enumerate(zip(texts, scores))
    ]
