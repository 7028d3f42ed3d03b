"""The lab's metrics, pure functions: retrieval metrics over ranked ids and gold ids, and the
scores of generated answers (exact match, token F1; characters for Korean).

Each query has one ranked list of chunk (or passage) ids, best first, and a set
of gold ids, the passages that answer it. Ranks are 1-based. A query whose
gold passage is nowhere in the list scores 0 on every metric (it still counts
in the mean: averaging only over found queries would flatter a weak ranker).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set

from rag.common import check_int


def first_hit(ranked: Sequence[str], gold: Set[str]) -> int | None:
    """1-based rank of the first gold id in ``ranked``, or None."""
    for rank, item in enumerate(ranked, start=1):
        if item in gold:
            return rank
    return None


def hit_at(ranked: Sequence[str], gold: Set[str], k: int) -> float:
    """1.0 when a gold id is among the first k ("has-right-in-contexts" at k), else 0.0."""
    _check_k(k)
    rank = first_hit(ranked[:k], gold)
    return 0.0 if rank is None else 1.0


def reciprocal_rank(ranked: Sequence[str], gold: Set[str], k: int) -> float:
    """1/rank of the first gold id within the first k (MRR@k once averaged), else 0.0."""
    _check_k(k)
    rank = first_hit(ranked[:k], gold)
    return 0.0 if rank is None else 1.0 / rank


def recall_at(ranked: Sequence[str], gold: Set[str], k: int) -> float:
    """Share of the gold ids found in the first k (the ceiling a reranker of those k can reach)."""
    _check_k(k)
    if not gold:
        raise ValueError("recall needs at least one gold id")
    return len(gold.intersection(ranked[:k])) / len(gold)


def ndcg_at(ranked: Sequence[str], gold: Set[str], k: int) -> float:
    """Binary-relevance nDCG@k: DCG of the ranking over DCG of the ideal ranking (gold first)."""
    _check_k(k)
    if not gold:
        raise ValueError("nDCG needs at least one gold id")
    dcg = sum(
        1.0 / math.log2(rank + 1) for rank, item in enumerate(ranked[:k], start=1) if item in gold
    )
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return dcg / ideal


def mean(values: Iterable[float]) -> float:
    items = list(values)
    if not items:
        raise ValueError("the mean of no values is undefined")
    return math.fsum(items) / len(items)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("a percentile of no values is undefined")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q = {q!r}: must be between 0 and 100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(
    runs: Sequence[tuple[Sequence[str], Set[str]]],
    *,
    hits: Sequence[int] = (1, 3, 5, 10),
    mrr_k: int = 10,
    ndcg_k: int = 10,
) -> Mapping[str, float]:
    """Mean metrics over queries, each given as (ranked ids, gold ids)."""
    if not runs:
        raise ValueError("no queries to evaluate")
    result = {f"hit@{k}": mean(hit_at(r, g, k) for r, g in runs) for k in hits}
    result[f"mrr@{mrr_k}"] = mean(reciprocal_rank(r, g, mrr_k) for r, g in runs)
    result[f"ndcg@{ndcg_k}"] = mean(ndcg_at(r, g, ndcg_k) for r, g in runs)
    return result


def _check_k(k: int) -> None:
    check_int("k", k, 1)


# ---------------------------------------------------------------------------- answer quality
# (SQuAD's own definitions)

_HANGUL = re.compile(r"[\uac00-\ud7a3]")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no English articles, single spaces (SQuAD v1.1's evaluation
    script).
    """
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return max(
        (1.0 if normalize_answer(prediction) == normalize_answer(a) else 0.0 for a in answers),
        default=0.0,
    )


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD's token F1; for a Korean gold answer, F1 over characters (KorQuAD 1.0's own script does
    so: particles glued to words would otherwise make "서울에서" and "서울" share nothing)."""

    def f1(gold: str) -> float:
        pred_tokens, gold_tokens = (
            normalize_answer(prediction).split(),
            normalize_answer(gold).split(),
        )
        if _HANGUL.search(gold):
            pred_tokens, gold_tokens = list("".join(pred_tokens)), list("".join(gold_tokens))
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max((f1(a) for a in answers), default=0.0)


def holds_answer(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the prediction holds a gold answer whole, after SQuAD's normalisation: the measure
    for answers written as a sentence, which exact match never credits and token F1 marks down for
    every word around the answer. A gold answer must start at a word ("5 minutes" is not in "15
    minutes"); an English one must also end at one, a Korean one need not (particles attach:
    "서울" is in "서울에서")."""
    text = f" {normalize_answer(prediction)} "
    for answer in answers:
        gold = normalize_answer(answer)
        if gold and (f" {gold}" if _HANGUL.search(gold) else f" {gold} ") in text:
            return 1.0
    return 0.0
