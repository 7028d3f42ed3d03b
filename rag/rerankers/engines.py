"""What runs a cross-encoder's forward pass: torch here, ONNX Runtime in
:mod:`rag.rerankers.onnx_backend`.

An engine takes one padded batch (numpy arrays of token ids, as the tokenizer pads
them) and returns its logits as a float64 numpy array. The cross-encoder owns
tokenisation, batching and ranking, and is given an engine (composition, in the
manner of sentence-transformers' ``backend=``), so the same reranker code runs on
either. ``load_sequence_classifier`` is the one way a cross-encoder's torch weights
are loaded: a full checkpoint, or a LoRA adapter on top of its base model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch

from rag.models import ModelLoadError, attach_adapter, find_adapter, load_error, resolve_model

# The inputs a BERT-style classifier takes; a batch may carry others
# (offsets...), which are not fed.
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class Engine(Protocol):
    """Runs the forward pass of a sequence classifier; ``backend``, ``device`` and ``dtype`` are
    shown to users.
    """

    backend: str
    device: str
    dtype: str
    config: Any  # the model's transformers config (num_labels decides the score column)

    def logits(self, batch: Mapping[str, np.ndarray]) -> np.ndarray: ...


class TorchEngine:
    """A transformers ``AutoModelForSequenceClassification`` in eval mode on ``device``."""

    backend = "torch"

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device
        self.dtype = str(model.dtype).removeprefix("torch.")
        self.config = model.config

    def logits(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        inputs = {
            k: torch.as_tensor(np.asarray(v, dtype=np.int64)).to(self.device)
            for k, v in batch.items()
            if k in MODEL_KEYS
        }
        with torch.inference_mode():
            return self.model(**inputs).logits.float().cpu().numpy().astype(np.float64)


def score_column(config: Any, name: str) -> int:
    """The logit that scores relevance: 0 of one label, 1 ("relevant") of two; ValueError for
    other heads.
    """
    num_labels = int(config.num_labels)
    if num_labels not in (1, 2):
        raise ValueError(f"{name}: a reranker has 1 or 2 labels, this model has {num_labels}")
    return 0 if num_labels == 1 else 1


def classifier_labels(config: Any) -> dict[str, int]:
    """``from_pretrained`` options for a base: a checkpoint with a 1- or 2-label head keeps it; else
    one label.

    A plain encoder (the packaged all-MiniLM-L6-v2) gets a new one-label head; training and loading
    an adapter apply the same rule, so an adapter's saved head always fits its base.
    """
    has_head = any(
        a.endswith("ForSequenceClassification")
        for a in (getattr(config, "architectures", None) or ())
    )
    return {} if has_head and int(config.num_labels) in (1, 2) else {"num_labels": 1}


def load_sequence_classifier(
    spec: str, *, dtype: Any = torch.float32, merge: bool = True
) -> tuple[Any, Any]:
    """(tokenizer, model) of a cross-encoder spec: hub id, directory, ``pkg:``/``shipped:``, or a
    LoRA adapter.

    An adapter loads its base (named in its adapter_config.json) with the base's tokenizer, then its
    LoRA weights and head on top; ``merge`` folds them into the base weights (as fast as a plain
    model).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    resolved = resolve_model(spec)
    if resolved.gguf_file is not None:
        raise ModelLoadError(
            f"{spec}: GGUF files hold causal LMs, not cross-encoders; use kind = 'llm'"
        )
    adapter = find_adapter(resolved.location)
    location = resolved.location
    if adapter is not None:
        if adapter.task_type not in ("SEQ_CLS", ""):
            raise ModelLoadError(
                f"{spec}: this adapter was trained for {adapter.task_type}, not as a "
                "cross-encoder; use kind = 'llm'"
            )
        location = resolve_model(adapter.base).location
    from transformers.utils import logging as hf_logging

    # the base's head is missing by design: the adapter brings it, no report needed
    quiet = adapter is not None
    verbosity = hf_logging.get_verbosity()
    try:
        if quiet:
            hf_logging.set_verbosity_error()
        config = AutoConfig.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForSequenceClassification.from_pretrained(
            location, dtype=dtype, **(classifier_labels(config) if adapter is not None else {})
        )
    except (OSError, ValueError) as exc:
        raise load_error(f"cross-encoder {spec!r} from {location}", location, exc) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if adapter is not None:
        model = attach_adapter(model, adapter, merge=merge)
    return tokenizer, model
