"""Candidates built by hand, the way retrieval hands them to a reranker."""
from __future__ import annotations

import hashlib
from typing import Sequence

from rag.types import Candidate, Chunk


def make_candidates(texts: Sequence[str], scores: Sequence[float] | None = None) -> list[Candidate]:
    """One candidate per text, retrieval ranks 1..n in the given order."""
    scores = scores if scores is not None else [1.0 - i / 100 for i in range(len(texts))]
    return [
        Candidate(
            chunk=Chunk(id=f"doc.md#{i}", text=text, source="doc.md", page=None, chunk_index=i,
                        content_hash=hashlib.sha256(text.encode()).hexdigest()),
            retrieval_score=score,
            retrieval_rank=i + 1,
            rank=i + 1,
        )
        for i, (text, score) in enumerate(zip(texts, scores))
    ]
