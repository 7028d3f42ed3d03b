"""Cross-encoder reranker: any ``AutoModelForSequenceClassification`` that scores (query, passage).

Covers BAAI/bge-reranker-v2-m3, BAAI/bge-reranker-large, Dongjin-kr/ko-reranker
and cross-encoder/ms-marco-*. The raw score is the model's logit:
``logits[:, 0]`` for the usual one-label rerankers, ``logits[:, 1]`` (the
"relevant" class) for two-label classifiers. Models with more labels (NLI
heads and the like) are refused at load: they do not score relevance.

Speed comes from sorting pairs by token length before batching, so each batch
is padded only to its own longest pair (FlagEmbedding does the same); results
are put back in the caller's order by index.

``backend`` picks what runs the forward pass: torch (here), or ONNX Runtime on
CPU, fp32 or with int8 weights (:mod:`rag.rerankers.onnx_backend`, which
reuses this class's tokenisation, batching and ranking).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from rag.models import ModelLoadError, load_error, resolve_model, select_device, select_dtype
from rag.rerankers.base import check_options, default_batch_tokens, length_sorted_batches, rerank_by_scores
from rag.types import Candidate

logger = logging.getLogger(__name__)

KIND = "cross-encoder"
# Tokenizers without a real limit report a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 1_000_000
_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class CrossEncoderReranker:
    """Scores each (query, passage) pair jointly; cheap to build from a loaded model."""

    kind = KIND
    backend = "torch"  # what runs the forward pass; the ONNX subclass says "onnx" or "onnx-int8"

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        *,
        name: str,
        device: str,
        batch_size: int,
        max_length: int,
        normalize: str,
    ) -> None:
        check_options(batch_size=batch_size, max_length=max_length, normalize=normalize)
        self.score_column = score_column(model.config, name)
        self.tokenizer = tokenizer
        self.model = model
        self.name = name
        self.device = device
        self.dtype = str(model.dtype).removeprefix("torch.")
        self.batch_size = batch_size
        # Padded tokens per batch (0: no cap); a tunable, set from reranker.batch_tokens after load.
        self.batch_tokens = default_batch_tokens(device)
        self.max_length = _cap_max_length(max_length, tokenizer, name)
        self.normalize = normalize

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> list[Candidate]:
        return rerank_by_scores(self, query, candidates, self.normalize)

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        """Raw scores and truncation flags, in the order of ``passages``."""
        features, truncated = self.encode(query, passages)
        raw: list[float] = [0.0] * len(features)
        lengths = [len(f["input_ids"]) for f in features]
        with torch.inference_mode():
            for batch in self.batches(lengths):
                padded = self.tokenizer.pad([features[i] for i in batch], padding=True, return_tensors="pt")
                inputs = {k: v.to(self.device) for k, v in padded.items() if k in _MODEL_KEYS}
                logits = self.model(**inputs).logits
                for i, value in zip(batch, logits[:, self.score_column].float().tolist()):
                    raw[i] = value
        return raw, truncated

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices of the pairs in each forward pass: length-sorted, at most batch_size and batch_tokens."""
        return length_sorted_batches(lengths, self.batch_size, self.batch_tokens)

    def encode(self, query: str, passages: Sequence[str]) -> tuple[list[dict[str, list[int]]], list[bool]]:
        """Token ids per pair (unpadded) and whether each pair was cut at max_length.

        One untruncated batched tokenisation gives exact lengths (so the flags
        are exact) and the final ids of every pair that fits; only pairs that
        are too long are tokenised again, with truncation. The passage is what
        gets cut; if the query alone leaves no room for it, both are cut
        rather than failing (the tokenizer raises on "only_second" then).
        """
        queries = [query] * len(passages)
        full = self.tokenizer(queries, list(passages), truncation=False, verbose=False)
        features = [{k: full[k][i] for k in _MODEL_KEYS if k in full} for i in range(len(passages))]
        truncated = [len(f["input_ids"]) > self.max_length for f in features]
        cut = [i for i, flag in enumerate(truncated) if flag]
        if cut:
            query_len = len(self.tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
            specials = self.tokenizer.num_special_tokens_to_add(pair=True)
            strategy = "only_second" if query_len + specials < self.max_length else "longest_first"
            if strategy != "only_second":
                logger.warning("%s: the query alone (%d tokens) fills max_length %d; cutting query and passage",
                               self.name, query_len, self.max_length)
            short = self.tokenizer([query] * len(cut), [passages[i] for i in cut], truncation=strategy,
                                   max_length=self.max_length)
            for j, i in enumerate(cut):
                features[i] = {k: short[k][j] for k in _MODEL_KEYS if k in short}
        return features, truncated


def score_column(config: Any, name: str) -> int:
    """The logit that scores relevance: 0 of one label, 1 ("relevant") of two; ValueError for other heads."""
    num_labels = int(config.num_labels)
    if num_labels not in (1, 2):
        raise ValueError(f"{name}: a reranker has 1 or 2 labels, this model has {num_labels}")
    return 0 if num_labels == 1 else 1


def _cap_max_length(max_length: int, tokenizer: Any, name: str) -> int:
    """Positions past the model's limit crash with an index error; cap and say so."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT and max_length > limit:
        logger.warning("%s: max_length %d exceeds the model's limit %d; using %d", name, max_length, limit, limit)
        return limit
    return max_length


def load_cross_encoder(
    *, model: str, device: str, dtype: str, batch_size: int, max_length: int, normalize: str,
    backend: str = "torch",
) -> CrossEncoderReranker:
    """Load tokenizer and weights once (hub id, local directory or ``pkg:`` spec).

    ``backend`` is "torch", or "onnx" / "onnx-int8" for ONNX Runtime on CPU
    (exported once per model and cached; see :mod:`rag.rerankers.onnx_backend`).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_options(batch_size=batch_size, max_length=max_length, normalize=normalize)
    if backend != "torch":
        from rag.rerankers.onnx_backend import load_onnx_cross_encoder

        return load_onnx_cross_encoder(model=model, device=device, dtype=dtype, batch_size=batch_size,
                                       max_length=max_length, normalize=normalize, backend=backend)
    resolved = resolve_model(model)
    if resolved.gguf_file is not None:
        raise ModelLoadError(f"{model}: GGUF files hold causal LMs, not cross-encoders; use kind = 'llm'")
    device = select_device(device)
    torch_dtype = select_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.location)
        network = AutoModelForSequenceClassification.from_pretrained(resolved.location, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise load_error(f"cross-encoder {model!r} from {resolved.location}", resolved.location, exc) from exc
    network.to(device).eval()
    try:
        reranker = CrossEncoderReranker(tokenizer, network, name=model, device=device, batch_size=batch_size,
                                        max_length=max_length, normalize=normalize)
    except ValueError as exc:  # e.g. a 3-label NLI head: it loaded, but it is not a reranker
        raise ModelLoadError(str(exc)) from exc
    logger.info("cross-encoder %s on %s (%s), max_length %d", model, device, reranker.dtype, reranker.max_length)
    return reranker
