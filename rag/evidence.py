"""Evidence: for each source an answer cites, the sentence or two of that source that support it.

Each sentence of the answer that cites [n] is a claim; the sentences of source n
are scored against it, and the best one per claim is kept (at most two per source).
Three scorers can do it (``llm.evidence``): character-bigram overlap (no model,
any language), the bi-encoder (cosine of the claim and each sentence) and the
reranker (the claim as the query, each sentence as a passage). Measured with
``python -m lab.evidence_eval`` (guides/answers.md, "Evidence"), bigrams picked the right
sentence most often in English and in Korean, so they are the default. It runs
after the answer is written: it adds to the answer's time, not the first token's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from rag.citations import CITATION, cited_numbers
from rag.sentences import split_sentences
from rag.types import Candidate, Evidence

# (claim, sentences) -> one score each, higher is better
Scorer = Callable[[str, list[str]], Sequence[float]]
MAX_SENTENCES = 2  # per cited source
MAX_CANDIDATES = 40  # sentences scored per source (a chunk is a few hundred tokens: rarely more)


def claims(answer: str) -> dict[int, list[str]]:
    """The answer's sentences that cite each source number, citations taken out."""
    found: dict[int, list[str]] = {}
    for sentence in split_sentences(answer):
        text = re.sub(r"\s+([.!?,;:])", r"\1", " ".join(CITATION.sub(" ", sentence).split()))
        if not text:
            continue
        for number in dict.fromkeys(cited_numbers(sentence)):
            found.setdefault(number, []).append(text)
    return found


def find_evidence(answer: str, context: Sequence[Candidate], score: Scorer) -> tuple[Evidence, ...]:
    """Evidence for every source [n] the answer cites (numbers outside the context are skipped)."""
    out = []
    for number, texts in claims(answer).items():
        if not 1 <= number <= len(context):
            continue
        sentences = split_sentences(context[number - 1].chunk.text)[:MAX_CANDIDATES]
        if not sentences:
            continue
        best: dict[int, float] = {}
        for claim in texts:
            scores = list(score(claim, sentences))
            top = int(np.argmax(scores))
            best[top] = max(best.get(top, float("-inf")), float(scores[top]))
        ranked = sorted(best.items(), key=lambda item: -item[1])[:MAX_SENTENCES]
        out.append(
            Evidence(
                number,
                tuple(sentences[i] for i, _ in ranked),
                tuple(round(s, 4) for _, s in ranked),
            )
        )
    return tuple(out)


def embedder_scorer(embedder) -> Scorer:
    """Cosine of the claim and each sentence, both embedded as passages (a symmetric comparison)."""

    def score(claim: str, sentences: list[str]) -> list[float]:
        vectors = embedder.embed_passages([claim, *sentences])
        return (vectors[1:] @ vectors[0]).tolist()

    return score


def reranker_scorer(reranker) -> Scorer:
    """The reranker's raw score of (claim, sentence)."""

    def score(claim: str, sentences: list[str]) -> list[float]:
        return reranker.score_pairs(claim, sentences)[0]

    return score


def _bigrams(text: str) -> set[str]:
    squeezed = "".join(text.lower().split())
    return {squeezed[i : i + 2] for i in range(len(squeezed) - 1)}


def bigram_scorer() -> Scorer:
    """Share of the sentence's character bigrams found in the claim (no model; reads any
    language).
    """

    def score(claim: str, sentences: list[str]) -> list[float]:
        wanted = _bigrams(claim)
        return [
            len(wanted & grams) / (len(grams) ** 0.5 or 1.0) for grams in map(_bigrams, sentences)
        ]

    return score


def scorer_for(method: str, *, embedder, reranker) -> Scorer | None:
    """The scorer ``llm.evidence`` names (None for "off"); "reranker" without one loaded falls
    back to bigrams.
    """
    if method == "off":
        return None
    if method == "embedder":
        return embedder_scorer(embedder)
    if method == "reranker" and reranker is not None:
        return reranker_scorer(reranker)
    return bigram_scorer()
