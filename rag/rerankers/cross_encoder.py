"""Cross-encoder reranker: any ``AutoModelForSequenceClassification`` that scores (query, passage).

Covers BAAI/bge-reranker-v2-m3, BAAI/bge-reranker-large, Dongjin-kr/ko-reranker
and cross-encoder/ms-marco-*. The raw score is the model's logit:
``logits[:, 0]`` for the usual one-label rerankers, ``logits[:, 1]`` (the
"relevant" class) for two-label classifiers. Models with more labels (NLI
heads and the like) are refused at load: they do not score relevance.

Speed comes from sorting pairs by token length before batching, so each batch
is padded only to its own longest pair (FlagEmbedding does the same); results
are put back in the caller's order by index.

The forward pass is the engine's (:mod:`rag.rerankers.engines`): torch, or ONNX
Runtime on CPU, fp32 or with int8 weights (:mod:`rag.rerankers.onnx_backend`); the
reranker is given one, so tokenisation, batching and ranking are the same on both.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rag.models import ModelLoadError, select_device, select_dtype, tokenizer_lock
from rag.rerankers.base import Reranker
from rag.rerankers.engines import (
    MODEL_KEYS,
    Engine,
    TorchEngine,
    load_sequence_classifier,
    score_column,
)
from rag.rerankers.options import RerankerOptions
from rag.rerankers.reading import resolve_reading
from rag.rerankers.window import fit_passages
from rag.romanize import romanize

logger = logging.getLogger(__name__)

KIND = "cross-encoder"
# Tokenizers without a real limit report a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 1_000_000


class CrossEncoderReranker(Reranker):
    """Scores each (query, passage) pair jointly; the forward pass is its engine's (torch or
    ONNX Runtime).
    """

    kind = KIND

    def __init__(
        self,
        tokenizer: Any,
        engine: Engine,
        *,
        name: str,
        batch_size: int,
        max_length: int,
        normalize: str,
        batch_tokens: int = 0,
        long_passages: str = "head",
        romanize_hangul: bool = False,
    ) -> None:
        super().__init__(
            name=name,
            device=engine.device,
            dtype=engine.dtype,
            backend=engine.backend,
            batch_size=batch_size,
            max_length=_cap_max_length(max_length, tokenizer, name),
            normalize=normalize,
            batch_tokens=batch_tokens,
            long_passages=long_passages,
            romanize_hangul=romanize_hangul,
        )
        self.score_column = score_column(engine.config, name)
        self.tokenizer = tokenizer
        self.engine = engine

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        """Raw scores and truncation flags, in the order of ``passages``."""
        features, truncated = self.encode(query, passages)
        raw: list[float] = [0.0] * len(features)
        for batch in self.batches([len(f["input_ids"]) for f in features]):
            with tokenizer_lock(self.tokenizer):
                padded = self.tokenizer.pad(
                    [features[i] for i in batch], padding=True, return_tensors="np"
                )
            logits = self.engine.logits(padded)
            for i, value in zip(batch, logits[:, self.score_column].tolist()):
                raw[i] = float(value)
        return raw, truncated

    def encode(
        self, query: str, passages: Sequence[str]
    ) -> tuple[list[dict[str, list[int]]], list[bool]]:
        """Token ids per pair (unpadded) and whether each pair was cut at max_length.

        One untruncated batched tokenisation gives exact lengths (so the flags
        are exact) and the final ids of every pair that fits; only pairs that
        are too long are tokenised again, with truncation. The passage is what
        gets cut (after its best window is taken, with ``long_passages = "best-window"``);
        if the query alone leaves no room for it, both are cut rather than failing
        (the tokenizer raises on "only_second" then).
        """
        with tokenizer_lock(self.tokenizer):
            return self._encode(query, passages)

    def _encode(
        self, query: str, passages: Sequence[str]
    ) -> tuple[list[dict[str, list[int]]], list[bool]]:
        if self.romanize_hangul:
            query, passages = romanize(query), [romanize(p) for p in passages]
        queries = [query] * len(passages)
        full = self.tokenizer(queries, list(passages), truncation=False, verbose=False)
        features = [{k: full[k][i] for k in MODEL_KEYS if k in full} for i in range(len(passages))]
        truncated = [len(f["input_ids"]) > self.max_length for f in features]
        cut = [i for i, flag in enumerate(truncated) if flag]
        if cut:
            query_len = len(
                self.tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"]
            )
            specials = self.tokenizer.num_special_tokens_to_add(pair=True)
            strategy = "only_second" if query_len + specials < self.max_length else "longest_first"
            if strategy != "only_second":
                logger.warning(
                    "%s: the query alone (%d tokens) fills max_length %d; "
                    "cutting query and passage",
                    self.name,
                    query_len,
                    self.max_length,
                )
            kept = fit_passages(
                self.tokenizer,
                query,
                [passages[i] for i in cut],
                max_length=self.max_length,
                mode=self.long_passages,
            )
            short = self.tokenizer(
                [query] * len(cut), kept, truncation=strategy, max_length=self.max_length
            )
            for j, i in enumerate(cut):
                features[i] = {k: short[k][j] for k in MODEL_KEYS if k in short}
        return features, truncated


def _cap_max_length(max_length: int, tokenizer: Any, name: str) -> int:
    """Positions past the model's limit crash with an index error; cap and say so."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT and max_length > limit:
        logger.warning(
            "%s: max_length %d exceeds the model's limit %d; using %d",
            name,
            max_length,
            limit,
            limit,
        )
        return limit
    return max_length


def load_cross_encoder(options: RerankerOptions) -> CrossEncoderReranker:
    """Tokenizer and weights on torch, loaded once (hub id, directory, ``pkg:``/``shipped:``,
    LoRA adapter).
    """
    device = select_device(options.device)
    tokenizer, network = load_sequence_classifier(
        options.model, dtype=select_dtype(options.dtype, device)
    )
    network.to(device).eval()
    reranker = build(tokenizer, TorchEngine(network, device), options)
    logger.info(
        "cross-encoder %s on %s (%s), max_length %d",
        options.model,
        device,
        reranker.dtype,
        reranker.max_length,
    )
    return reranker


def build(tokenizer: Any, engine: Engine, options: RerankerOptions) -> CrossEncoderReranker:
    """The reranker around a loaded engine; a head that does not score relevance is a
    ModelLoadError.
    """
    # "auto" readings: the model's reading.json (idempotent once resolved)
    options = resolve_reading(options)
    try:
        return CrossEncoderReranker(
            tokenizer,
            engine,
            name=options.model,
            batch_size=options.batch_size,
            max_length=options.max_length,
            normalize=options.normalize,
            batch_tokens=options.batch_tokens,
            long_passages=options.long_passages,
            romanize_hangul=options.romanize_hangul,
        )
    except ValueError as exc:  # e.g. a 3-label NLI head: it loaded, but it is not a reranker
        raise ModelLoadError(str(exc)) from exc
