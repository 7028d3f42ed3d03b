"""The evaluation library behind ``python -m lab.evaluate``: each configuration (first-stage
mode x no reranker / each reranker) runs every question through the real pipeline, and the
metrics come back as one report per run. Also: ranking {query, pos, neg} groups, the
grounding check's decisions with and without the gold passage, indexing a data set's
passages into a collection of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.datasets import (
    Corpus,
    Group,
    Passage,
    Query,
)
from lab.metrics import (
    exact_match,
    hit_at,
    holds_answer,
    mean,
    percentile,
    recall_at,
    summarize,
    token_f1,
)
from rag.citations import without_citations
from rag.config import Settings, with_collection
from rag.generate import is_decline
from rag.grounding import grounding
from rag.languages import question_language
from rag.pipeline import (
    Pipeline,
    load_configured_reranker,
    load_language_rerankers,
)
from rag.reorder import reorder
from rag.rerankers import KINDS, Reranker
from rag.store import ChunkStore
from rag.types import Chunk, Trace

# --modes auto: the configured first stage, routed by the question's language
# (retrieval.modes_by_language), and the configured reranker with its reranker.models_by_language:
# what `rag ask` and the app run.
AUTO = "auto"


CURVE_DEPTH = 20  # hit@k is plotted for k = 1..20 (or fewer candidates)


@dataclass(frozen=True)
class RerankerSpec:
    """A reranker to evaluate: ``[label=][kind:]model`` on the command line (kind defaults to
    cross-encoder).
    """

    label: str
    kind: str
    model: str

    @classmethod
    def parse(cls, text: str) -> RerankerSpec:
        label, _, rest = text.partition("=") if "=" in text else ("", "", text)
        kind, _, model = rest.partition(":")
        if kind not in KINDS:
            kind, model = "cross-encoder", rest
        if not model.strip():
            raise ValueError(f"--reranker {text!r}: no model given; expected [label=][kind:]model")
        return cls(label.strip() or short_name(model), kind, model)


def short_name(model: str) -> str:
    """The last two path parts of a directory, the name of a hub id or pkg: model."""
    parts = [p for p in re.split(r"[\\/]", model.removeprefix("pkg:")) if p]
    return "/".join(parts[-2:]) if Path(model).exists() else parts[-1]


def corpus_digest(passages: Sequence[Passage]) -> str:
    """Eight hex digits that name the passage set (its collection is reused only for the same
    set).
    """
    return hashlib.sha256("\n".join(sorted(p.id for p in passages)).encode()).hexdigest()[:8]


def index_passages(store: ChunkStore, passages: Sequence[Passage], embedder, on_batch=None) -> int:
    """Write the passages that are not in the store yet; returns how many were written.

    A collection that holds anything else is refused, not cleaned: the metrics
    need exactly the data set's passages, and deleting chunks from a collection
    the user named could destroy their data.
    """
    present = set(store.chunk_ids())
    wanted = {p.id for p in passages}
    foreign = present - wanted
    if foreign:
        raise ValueError(
            f"collection {store.chunks.name!r} holds {len(foreign)} chunk(s) that are not passages "
            "of this "
            "data set; evaluate into a new collection (--collection NAME, or leave it out)"
        )
    todo = [p for p in passages if p.id not in present]
    for start in range(0, len(todo), 256):
        part = todo[start : start + 256]
        chunks = [
            Chunk(id=p.id, text=p.text, source=p.title, page=None, chunk_index=0, content_hash=p.id)
            for p in part
        ]
        store.upsert_chunks(chunks, embedder.embed_passages([p.text for p in part]), 0.0)
        if on_batch is not None:
            on_batch(len(part))
    return len(todo)


@dataclass(frozen=True)
class Run:
    """One configuration: a first-stage mode (None: the configured one, routed by the question's
    language) and a reranker (None: no reranking), with the rerankers it hands questions in other
    languages to."""

    name: str
    mode: str | None
    reranker: Reranker | None = None
    routes: Mapping[str, Reranker | None] = dataclasses.field(default_factory=dict)
    retrieval_weight: float | None = None  # None: the configured reranker.retrieval_weight

    @property
    def rerank(self) -> bool:
        return self.reranker is not None


# ---------------------------------------------------------------------------- retrieval evaluation


def without_gold(trace: Trace, gold: frozenset[str] | set[str], top_n: int, strategy: str) -> Trace:
    """``trace`` with the gold passages taken out of what the LLM reads: the next-ranked candidates
    fill their places, in the same reading order (to measure whether the answer then declines)."""
    order = trace.reranked if trace.rerank else trace.retrieved
    kept = [c for c in order if c.chunk.id not in gold][:top_n]
    return dataclasses.replace(trace, context=tuple(reorder(kept, strategy)))


def evaluate(
    pipeline: Pipeline,
    queries: Sequence[Query],
    runs: Sequence[Run],
    *,
    top_k: int,
    top_n: int,
    answers: bool = False,
    decline: bool = False,
    on_query: Callable[[], None] | None = None,
) -> dict[str, dict[str, object]]:
    """Every metric for every run, keyed by run name. With ``answers``, each answer is scored (EM,
    F1) and checked for declining; with ``decline``, each question is also answered with its gold
    passage taken out of the context, where declining is the right answer."""
    report: dict[str, dict[str, object]] = {}
    depth = min(CURVE_DEPTH, top_k)
    for run in runs:
        weight = (
            run.retrieval_weight if run.retrieval_weight is not None else pipeline.retrieval_weight
        )
        runner = dataclasses.replace(
            pipeline,
            reranker=run.reranker,
            rerankers_by_language=run.routes,
            retriever=(
                pipeline.retriever
                if run.mode is None
                else dataclasses.replace(pipeline.retriever, modes_by_language={})
            ),
            retrieval_weight=weight,
        )
        ranked, first, positions, stages, em, f1, held = [], [], [], {}, [], [], []
        declined_with, declined_without, replies, same_language = [], [], [], []
        checks: list[dict[str, object]] = []
        for query in queries:
            trace = runner.search(
                query.text, rerank=run.rerank, mode=run.mode, top_k=top_k, top_n=top_n
            )
            order = trace.reranked if trace.rerank else trace.retrieved
            ranked.append(([c.chunk.id for c in order], query.gold))
            first.append(recall_at([c.chunk.id for c in trace.retrieved], query.gold, top_k))
            context = [c.chunk.id for c in trace.context]
            positions.append(
                next((i for i, cid in enumerate(context, start=1) if cid in query.gold), None)
            )
            if answers and query.answers:
                answer = runner.answer(trace)
                reply, trace = without_citations(answer.text), answer.trace
                em.append(exact_match(reply, query.answers))
                f1.append(token_f1(reply, query.answers))
                held.append(holds_answer(reply, query.answers))
                record = {
                    "question": query.text,
                    "gold": list(query.answers),
                    "answer": answer.text,
                    "gold_in_context": positions[-1] is not None,
                    "declined": is_decline(answer.text),
                }
                if record["gold_in_context"]:
                    declined_with.append(1.0 if record["declined"] else 0.0)
                if question_language(query.text) is not None:
                    same_language.append(
                        1.0
                        if question_language(answer.text) == question_language(query.text)
                        else 0.0
                    )
                if decline:
                    removed = runner.answer(
                        without_gold(trace, query.gold, top_n, runner.reorder_strategy)
                    )
                    record["answer_without_gold"] = removed.text
                    record["declined_without_gold"] = is_decline(removed.text)
                    declined_without.append(1.0 if record["declined_without_gold"] else 0.0)
                replies.append(record)
            elif decline and positions[-1] is not None:
                checks.append(
                    support_check(
                        query,
                        trace,
                        top_n,
                        runner.reorder_strategy,
                        runner.min_support,
                        runner.min_rerank_score,
                    )
                )
            for stage, seconds in trace.timings.items():
                stages.setdefault(stage, []).append(seconds)
            if on_query is not None:
                on_query()
        metrics = dict(summarize(ranked))
        metrics[f"recall@{top_k} (first stage)"] = mean(first)
        metrics[f"in context (top {top_n})"] = mean(
            1.0 if p is not None else 0.0 for p in positions
        )
        if em:
            metrics["answer EM"] = mean(em)
            metrics["answer F1"] = mean(f1)
            metrics["answer holds gold"] = mean(held)
            metrics["declined (gold in context)"] = mean(declined_with)
            if same_language:
                metrics["answered in the question's language"] = mean(same_language)
        if declined_without:
            metrics["declined (gold removed)"] = mean(declined_without)
        check = (
            summarize_support(checks, runner.min_support, runner.min_rerank_score)
            if checks
            else None
        )
        # retrieval only: what the grounding check alone would decide (no LLM ran)
        if check is not None:
            metrics["check declines (gold in context)"] = check["declined (gold in context)"]
            metrics["check declines (gold removed)"] = check["declined (gold removed)"]
        report[run.name] = {
            "mode": run.mode or AUTO,
            "reranker": run.reranker.name if run.reranker else None,
            "routes": {language: r.name if r else "none" for language, r in run.routes.items()},
            "metrics": metrics,
            "retrieval_weight": weight if run.rerank else None,
            "hit_curve": [mean(hit_at(r, g, k) for r, g in ranked) for k in range(1, depth + 1)],
            "gold_position_in_context": {
                str(p): positions.count(p) for p in sorted({p for p in positions if p})
            },
            "latency_ms": {
                s: {"p50": percentile(v, 50) * 1000, "p95": percentile(v, 95) * 1000}
                for s, v in stages.items()
            },
        }
        if replies:
            report[run.name]["answers"] = replies
        if check is not None:
            report[run.name]["grounding check"] = check
    return report


SUPPORT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 19))  # 0.05 ... 0.90


def support_check(
    query: Query,
    trace: Trace,
    top_n: int,
    strategy: str,
    min_support: float,
    min_rerank_score: float,
) -> dict[str, object]:
    """The grounding check's signals for one question whose gold passage is in the context, with the
    gold passage and with it taken out, and whether the configured thresholds decline each
    (rag.grounding)."""
    record: dict[str, object] = {"question": query.text}
    for case, context in (
        ("gold in context", trace.context),
        ("gold removed", without_gold(trace, query.gold, top_n, strategy).context),
    ):
        found = grounding(query.text, context)
        record[f"support ({case})"] = round(found.support.score, 4)
        if found.rerank is not None:
            record[f"reranker ({case})"] = round(found.rerank, 4)
        record[f"declined ({case})"] = (
            found.reason(min_support, min_rerank_score, len(context)) is not None
        )
    return record


def summarize_support(
    checks: Sequence[Mapping[str, object]], min_support: float, min_rerank_score: float
) -> dict[str, object]:
    """The share of questions the configured check declines with the gold passage in the context
    (wrongly) and removed (rightly); and for each signal (support; the reranker's best score) the
    same at each threshold, and its AUC (how often a context with the gold passage scores above one
    without it)."""
    out: dict[str, object] = {
        "questions": len(checks),
        "llm.min_support": min_support,
        "llm.min_rerank_score": min_rerank_score,
        "declined (gold in context)": round(
            mean(bool(c["declined (gold in context)"]) for c in checks), 4
        ),
        "declined (gold removed)": round(
            mean(bool(c["declined (gold removed)"]) for c in checks), 4
        ),
    }
    for signal in ("support", "reranker"):
        with_gold = [
            float(c[f"{signal} (gold in context)"])
            for c in checks
            if f"{signal} (gold in context)" in c
        ]
        removed = [
            float(c[f"{signal} (gold removed)"]) for c in checks if f"{signal} (gold removed)" in c
        ]
        if not with_gold:
            continue
        pairs = [(a > b) + 0.5 * (a == b) for a in with_gold for b in removed]
        out[signal] = {
            "auc": round(mean(pairs), 4),
            "declined at threshold": {
                f"{t:.2f}": {
                    "gold in context": round(mean(v < t for v in with_gold), 4),
                    "gold removed": round(mean(v < t for v in removed), 4),
                }
                for t in SUPPORT_THRESHOLDS
            },
        }
    out["per question"] = list(checks)
    return out


# ---------------------------------------------------------------------------- reranking-only
# evaluation (JSONL groups)


def rank_groups(
    groups: Sequence[Group],
    score_pairs: Callable[[str, list[str]], Sequence[float]],
    *,
    seed: int = 0,
    on_group: Callable[[float], None] | None = None,
) -> list[tuple[list[str], frozenset[str]]]:
    """(ranked ids, gold ids) per group, for ``lab.metrics.summarize``.

    ``score_pairs(query, passages)`` returns one score per passage (higher is
    better). Candidates are shuffled (seeded) before scoring, and ties keep the
    shuffled order, so a scorer that cannot tell passages apart gets chance
    results, not the positives-first order of the file. ``on_group`` gets the
    seconds each group took.
    """
    rng = random.Random(seed)
    runs = []
    for group in groups:
        items = [(f"pos{i}", t) for i, t in enumerate(group.pos)] + [
            (f"neg{i}", t) for i, t in enumerate(group.neg)
        ]
        rng.shuffle(items)
        started = time.perf_counter()
        scores = list(score_pairs(group.query, [t for _, t in items]))
        if on_group is not None:
            on_group(time.perf_counter() - started)
        order = sorted(range(len(items)), key=lambda i: -scores[i])
        runs.append(
            ([items[i][0] for i in order], frozenset(f"pos{i}" for i in range(len(group.pos))))
        )
    return runs


def bi_encoder_scorer(embedder) -> Callable[[str, list[str]], list[float]]:
    def score(query: str, passages: list[str]) -> list[float]:
        return (embedder.embed_passages(passages) @ embedder.embed_query(query)).tolist()

    return score


def evaluate_groups(
    groups: Sequence[Group],
    scorers: dict[str, Callable[[str, list[str]], Sequence[float]]],
    *,
    seed: int = 0,
    on_group: Callable[[], None] | None = None,
) -> dict[str, dict[str, object]]:
    """Rank each group's passages with every scorer (name -> score_pairs); metrics per scorer."""
    report: dict[str, dict[str, object]] = {}
    depth = min(CURVE_DEPTH, max(len(g.pos) + len(g.neg) for g in groups))
    for name, score_pairs in scorers.items():
        seconds: list[float] = []

        def tick(elapsed: float) -> None:
            seconds.append(elapsed)  # noqa: B023 (called within the iteration)
            if on_group is not None:
                on_group()

        ranked = rank_groups(groups, score_pairs, seed=seed, on_group=tick)
        report[name] = {
            "metrics": dict(summarize(ranked)),
            "hit_curve": [mean(hit_at(r, g, k) for r, g in ranked) for k in range(1, depth + 1)],
            "latency_ms": {
                "score": {
                    "p50": percentile(seconds, 50) * 1000,
                    "p95": percentile(seconds, 95) * 1000,
                }
            },
        }
    return report


def eval_settings(settings: Settings, corpus: Corpus, collection: str | None = None) -> Settings:
    """``settings`` pointed at the data set's own collection: ``collection``, or by default
    ``<collection>-eval-<format>-<digest of the passage set>`` (reused only for the same
    passages)."""
    default = f"{settings.store.collection}-eval-{corpus.name}-{corpus_digest(corpus.passages)}"
    return with_collection(settings, collection or default)


def load_specs(settings: Settings, specs: Sequence[RerankerSpec]) -> dict[str, Reranker]:
    return {s.label: load_configured_reranker(settings, kind=s.kind, model=s.model) for s in specs}


def configured_routes(
    settings: Settings, specs: Sequence[RerankerSpec], label: str
) -> dict[str, Reranker | None]:
    """The language routes of the configured reranker when ``label`` is it (the first spec, from
    config).
    """
    r = settings.reranker
    first = specs[0] if specs else None
    if first is None or first.label != label or (first.kind, first.model) != (r.kind, r.model):
        return {}
    return load_language_rerankers(settings)
