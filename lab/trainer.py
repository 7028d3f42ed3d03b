"""Hugging Face's ``Trainer`` set up for group training: the group loss, validation by ranking,
a progress bar that shows the loss, and ``reading.json`` beside every checkpoint.

Imported by :func:`lab.finetune.train` when a run starts, so that ``python -m lab.finetune
--help`` and the data commands do not load transformers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import ProgressCallback, Trainer, TrainerCallback, TrainingArguments

from lab.datasets import Group
from lab.training import BEST_METRIC, GroupDataset, TrainConfig, group_loss, validate
from rag.rerankers.reading import write_reading


class GroupTrainer(Trainer):
    """The loss is the positive's cross-entropy over its group; evaluation ranks ``val`` with the
    product's own reranker code (``validate``)."""

    def __init__(self, *, task: Any, val: Sequence[Group], config: TrainConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.val = val
        self.config = config

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = self.task.scores(model, inputs)
        loss = group_loss(scores, self.config.group_size)
        return (loss, {"scores": scores}) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        started = time.perf_counter()
        found = validate(
            self.task,
            self.model,
            self.val,
            batch_size=self.config.eval_batch_size,
            seed=self.config.seed,
        )
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in found.items()}
        metrics[f"{metric_key_prefix}_runtime"] = time.perf_counter() - started
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics


class LossBar(ProgressCallback):
    """The training bar shows the latest loss; validation results print as one line each."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs and self.training_bar is not None:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
        if f"eval_{BEST_METRIC}" in logs:
            shown = "  ".join(
                f"{k.removeprefix('eval_')} {v:.3f}"
                for k, v in logs.items()
                if k.startswith("eval_") and not k.endswith("runtime")
            )
            tqdm.write(f"epoch {state.epoch:.2f} step {state.global_step}: validation {shown}")


class ReadingCallback(TrainerCallback):
    """reading.json beside every checkpoint's weights: how the model read its inputs
    (rag.rerankers.reading)."""

    def __init__(self, out: Path, config: TrainConfig) -> None:
        self.out = out
        self.config = config

    def on_save(self, args, state, control, **kwargs):
        write_reading(
            self.out / "checkpoints" / f"checkpoint-{state.global_step}",
            long_passages=self.config.long_passages,
            romanize_hangul=self.config.romanize_hangul,
        )


def training_arguments(config: TrainConfig) -> TrainingArguments:
    """The run's schedule: checkpoints every ``eval_steps`` (or epoch), the best kept by MRR@10,
    bf16/fp16 on a GPU."""
    cuda = torch.cuda.is_available() and config.device != "cpu"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    strategy = "steps" if config.eval_steps else "epoch"
    return TrainingArguments(
        output_dir=str(config.out / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        weight_decay=0.01,
        warmup_steps=config.warmup,
        lr_scheduler_type="linear",
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=config.eval_steps or None,
        save_steps=config.eval_steps or None,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=BEST_METRIC,
        greater_is_better=True,
        logging_steps=config.logging_steps,
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def make_trainer(
    *, task: Any, train: Sequence[Group], val: Sequence[Group], config: TrainConfig
) -> GroupTrainer:
    # eval_dataset is only there to satisfy the Trainer's checks: evaluate() ranks ``val`` itself.
    trainer = GroupTrainer(
        task=task,
        val=val,
        config=config,
        model=task.model,
        args=training_arguments(config),
        train_dataset=GroupDataset(train, config.group_size),
        eval_dataset=GroupDataset(val, config.group_size),
        data_collator=task.collate,
        processing_class=task.tokenizer,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LossBar())
    trainer.add_callback(ReadingCallback(config.out, config))
    return trainer
