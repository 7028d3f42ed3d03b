"""The pieces of group training that need no Trainer: the run's typed configuration, the
groups as a dataset, the group loss, and validation by ranking with the product's own code.

``lab.trainer`` builds Hugging Face's ``Trainer`` from them; ``lab.finetune.train`` runs it.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lab.datasets import Group

BEST_METRIC = "mrr@10"


@dataclass(frozen=True)
class TrainConfig:
    """One training run, as ``python -m lab.finetune train`` takes it (the flags' names with
    ``_`` for ``-``)."""

    data: Path
    out: Path
    base: str
    kind: str = "cross-encoder"
    val: Path | None = None
    val_fraction: float = 0.1
    epochs: float = 3
    max_steps: int = 0
    lr: float = 5e-6
    group_size: int = 3
    max_len: int = 512
    long_passages: str = "head"
    romanize_hangul: bool = False
    batch_size: int = 8
    grad_accum: int = 1
    eval_batch_size: int = 32
    warmup: float = 0.1
    eval_steps: int = 0
    logging_steps: int = 10
    device: str = "auto"
    seed: int = 42
    resume: bool = False
    lora: int = 0
    lora_alpha: int = 0
    lora_dropout: float = 0.1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


class GroupDataset:
    """One item per query: [pos, neg, neg, ...] of ``group_size`` passages, drawn afresh each time.

    Like FlagEmbedding: the positive is drawn from pos, negatives without
    replacement from neg, with replacement when a query has fewer than needed.
    The draws use Python's ``random``, which the Trainer seeds and restores on resume.
    """

    def __init__(self, groups: Sequence[Group], group_size: int) -> None:
        self.groups = [g for g in groups if g.neg]
        self.group_size = group_size

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        group = self.groups[index]
        wanted = self.group_size - 1
        negs = (
            random.sample(group.neg, wanted)
            if len(group.neg) >= wanted
            else random.choices(group.neg, k=wanted)
        )
        return {"query": group.query, "passages": [random.choice(group.pos), *negs]}


class GroupCollator:
    """Tokenises the (query, passage) pairs of a batch of groups, padded to the batch's longest
    pair.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        queries = [item["query"] for item in items for _ in item["passages"]]
        passages = [p for item in items for p in item["passages"]]
        return dict(
            self.tokenizer(
                queries,
                passages,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
        )


def group_loss(logits: Any, group_size: int) -> Any:
    """Cross-entropy of the positive (column 0 of every group) over its group."""
    import torch

    scores = logits.view(-1, group_size).float()
    return torch.nn.functional.cross_entropy(
        scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    )


def mean_group_loss(
    model: Any,
    tokenizer: Any,
    groups: Sequence[Group],
    *,
    group_size: int,
    max_length: int,
    seed: int = 0,
) -> float:
    """The training loss over fixed draws of ``groups`` (for before/after comparisons)."""
    import torch

    state = random.getstate()
    random.seed(seed)
    try:
        data = GroupDataset(groups, group_size)
        items = [data[i] for i in range(len(data))]
    finally:
        random.setstate(state)
    collate = GroupCollator(tokenizer, max_length)
    from rag.rerankers.engines import score_column

    column = score_column(model.config, "the model being trained")
    was_training = model.training
    model.eval()
    losses = []
    with torch.inference_mode():
        for start in range(0, len(items), 8):
            batch = {k: v.to(model.device) for k, v in collate(items[start : start + 8]).items()}
            logits = model(**batch).logits[:, column]
            losses.append(group_loss(logits, group_size).item() * len(items[start : start + 8]))
    model.train(was_training)
    return sum(losses) / len(items)


def validate(
    task: Any, model: Any, groups: Sequence[Group], *, batch_size: int, seed: int
) -> dict[str, float]:
    """Rank held-out groups with the product's reranker around ``model``; lab.metrics' metrics."""
    from lab.evaluation import rank_groups
    from lab.metrics import summarize

    was_training = model.training
    model.eval()
    # LoRA layers unmerged cost about three times a plain forward on CPU: fold
    # them in while validating.
    merged = hasattr(model, "merge_adapter")
    if merged:
        model.merge_adapter()
    try:
        reranker = task.reranker(model.get_base_model() if merged else model, batch_size=batch_size)
        with torch_inference():
            runs = rank_groups(groups, lambda q, ps: reranker.score_pairs(q, ps)[0], seed=seed)
    finally:
        if merged:
            model.unmerge_adapter()
        model.train(was_training)
    return dict(summarize(runs))


def torch_inference() -> Any:
    import torch

    return torch.inference_mode()
