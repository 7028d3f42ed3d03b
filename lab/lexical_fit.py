"""Fitting a lexical reranker (:mod:`rag.rerankers.lexical`) on a labelled corpus.

``python -m lab.finetune lexical squad FILE --articles 0:90 --out DIR`` counts the index
terms of the corpus's passages (the IDF table), ranks each question's top ``--top-k`` BM25
candidates by the three features for every weight pair of a small grid, keeps the pair with
the best MRR@10 over these questions (the sentence weight is fixed at 1: only ratios rank),
then fits the logit's scale and bias (a two-parameter logistic regression of "this candidate is
the gold passage") so that the sigmoid of the score is a probability. Nothing is learned from
passages outside the corpus given: measure the result on other articles with ``lab.evaluate``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lab.datasets import Corpus
from rag.lexical import Bm25Index
from rag.rerankers.lexical import FEATURES, LexicalModel

# The grid: bigrams' and the whole passage's weight beside the best sentence's (1).
BIGRAM_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
PASSAGE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Fitted:
    model: LexicalModel
    questions: int
    first_stage: tuple[float, float]  # MRR@10, hit@1 of the BM25 order on the fitted questions
    reranked: tuple[float, float]  # the same after reranking with the fitted weights
    grid: list[tuple[float, float, float, float]]  # (bigrams, passage, MRR@10, hit@1)


def _mrr_hit(ranked: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """MRR@10 and hit@1 over questions (each: gold flags in ranked order); a question without a
    candidate counts 0."""
    rr = [next((1 / (i + 1) for i, g in enumerate(flags[:10]) if g), 0.0) for flags in ranked]
    hits = [1.0 if flags and flags[0] else 0.0 for flags in ranked]
    return (sum(rr) / len(rr), sum(hits) / len(hits)) if ranked else (0.0, 0.0)


def _logistic(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Scale and bias of P(y) = sigmoid(scale * x + bias) by Newton's method (a small ridge keeps
    it finite when the classes separate)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - y) + 1e-3 * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def fit_lexical(
    corpus: Corpus,
    *,
    top_k: int = 20,
    korean: str = "morphemes",
    stemming: str = "english",
    trained_on: str = "",
    on_question: Callable[[], None] | None = None,
) -> Fitted:
    """The lexical model of ``corpus`` (see the module docstring)."""
    probe = LexicalModel({}, 1, 1.0, dict.fromkeys(FEATURES, 1.0), korean=korean, stemming=stemming)
    sentences = {p.id: probe.passage_terms(p.text) for p in corpus.passages}
    df: Counter[str] = Counter()
    lengths = []
    for terms in sentences.values():
        flat = [t for s in terms for t in s]
        df.update(set(flat))
        lengths.append(len(flat))
    stats = dict(
        document_frequency=dict(df),
        documents=len(corpus.passages),
        average_length=max(sum(lengths) / len(lengths), 1.0),
        korean=korean,
        stemming=stemming,
        trained_on=trained_on,
    )
    model = LexicalModel(weights=dict.fromkeys(FEATURES, 1.0), **stats)
    index = Bm25Index(
        [p.id for p in corpus.passages],
        [p.text for p in corpus.passages],
        korean=korean,
        stemming=stemming,
    )
    # per question: (gold flags in BM25 order, feature rows in the same order)
    questions: list[tuple[list[bool], np.ndarray]] = []
    for query in corpus.queries:
        hits = index.search(query.text, top_k)
        terms = model.tokens(query.text)
        flags = [pid in query.gold for pid, _ in hits]
        rows = np.array([model.features(terms, sentences[pid]) for pid, _ in hits]).reshape(-1, 3)
        questions.append((flags, rows))
        if on_question is not None:
            on_question()

    def ranked_by(weights: np.ndarray) -> list[list[bool]]:
        out = []
        for flags, rows in questions:
            scores = rows @ weights
            order = sorted(range(len(flags)), key=lambda i: (-scores[i], i))
            out.append([flags[i] for i in order])
        return out

    grid = []
    for bigrams, passage in itertools.product(BIGRAM_WEIGHTS, PASSAGE_WEIGHTS):
        mrr, hit = _mrr_hit(ranked_by(np.array([1.0, bigrams, passage])))
        grid.append((bigrams, passage, mrr, hit))
    # The best MRR@10; ties go to the earlier (smaller) weights of the grid.
    bigrams, passage, *_ = max(grid, key=lambda row: (row[2], row[3], -grid.index(row)))
    weights = {"sentence": 1.0, "bigrams": bigrams, "passage": passage}
    w = np.array([weights[f] for f in FEATURES])
    x = np.concatenate([rows @ w for _, rows in questions if len(rows)])
    y = np.concatenate([np.array(flags, dtype=float) for flags, _ in questions if flags])
    scale, bias = _logistic(x, y) if y.any() and not y.all() else (1.0, 0.0)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"the fitted scale is {scale}: the features do not separate the gold passages here"
        )
    fitted = LexicalModel(weights=weights, scale=scale, bias=bias, **stats)
    return Fitted(
        model=fitted,
        questions=len(questions),
        first_stage=_mrr_hit([flags for flags, _ in questions]),
        reranked=_mrr_hit(ranked_by(w)),
        grid=grid,
    )
