"""LLM reranker in the BAAI/bge-reranker-v2-gemma style: the score is the logit of "Yes".

A causal LM reads, per candidate::

    <bos>A: {query}\\nB: {passage}\\n{PROMPT}

and the raw score is the logit of the first token of "Yes" at the last real
(non-padding) position. The layout is FlagEmbedding's recipe token for token:
the query part is cut to ``max_length * 3 // 4`` tokens, then only the passage
part (separator included) is cut so that bos + query + separator + passage fit
in ``max_length``; the separator and the prompt are appended after that, so an
input can be up to ``max_length + len(sep) + len(prompt)`` tokens long.

Any causal LM works (bge-reranker-v2-gemma is trained for this; a base model
such as the packaged Gemma 3 270M runs the same code with weak judgement). The
model comes from :func:`rag.models.load_causal_lm`, which shares one copy with
the local generator.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch

from rag.models import ModelLoadError, load_causal_lm, select_device, select_dtype, tokenizer_lock
from rag.rerankers.base import Reranker
from rag.rerankers.options import RerankerOptions
from rag.rerankers.window import MIN_ROOM, best_span
from rag.romanize import romanize

logger = logging.getLogger(__name__)

KIND = "llm"
PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the "
    "query "
    "by providing a prediction of either 'Yes' or 'No'."
)
SEP = "\n"
PAD_TO_MULTIPLE_OF = 8


class LlmYesReranker(Reranker):
    """Scores each pair by the LM's "Yes" logit; cheap to build from a loaded tokenizer and
    model.
    """

    kind = KIND

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
        batch_tokens: int = 0,
        long_passages: str = "head",
        romanize_hangul: bool = False,
    ) -> None:
        super().__init__(
            name=name,
            device=device,
            dtype=str(model.dtype).removeprefix("torch."),
            backend="torch",
            batch_size=batch_size,
            max_length=max_length,
            normalize=normalize,
            batch_tokens=batch_tokens,
            long_passages=long_passages,
            romanize_hangul=romanize_hangul,
        )
        pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        if pad_id is None:
            raise ValueError(
                f"{name}: the tokenizer has neither a pad nor an eos token to pad batches with"
            )
        if tokenizer.bos_token_id is None:
            logger.warning(
                "%s: the tokenizer has no bos token; inputs start directly with 'A: '", name
            )
        self.tokenizer = tokenizer
        self.model = model
        # Constants of this tokenizer, computed once (not per-call state).
        self.pad_id: int = pad_id
        self.bos_ids: list[int] = (
            [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        )
        with tokenizer_lock(tokenizer):
            self.sep_ids: list[int] = _ids(tokenizer, SEP)
            self.prompt_ids: list[int] = _ids(tokenizer, PROMPT)
            self.yes_id: int = _ids(tokenizer, "Yes")[0]
        # Projecting only the last position onto a 262k vocabulary saves gigabytes per batch.
        self.keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        """Raw "Yes" logits and truncation flags, in the order of ``passages``."""
        inputs, truncated = self.build_inputs(query, passages)
        raw: list[float] = [0.0] * len(inputs)
        with torch.inference_mode():
            for batch in self.batches([len(ids) for ids in inputs]):
                for i, value in zip(batch, self.yes_logits([inputs[i] for i in batch])):
                    raw[i] = value
        return raw, truncated

    def build_inputs(
        self, query: str, passages: Sequence[str]
    ) -> tuple[list[list[int]], list[bool]]:
        """Token ids per pair following the bge-reranker-v2-gemma recipe, and whether each was cut.

        Cutting is done by slicing the untruncated ids, so it keeps the beginning
        whatever the tokenizer's ``truncation_side`` says, or with ``long_passages =
        "best-window"`` the window of the passage that matches the query best.
        """
        if self.romanize_hangul:
            query, passages = romanize(query), [romanize(p) for p in passages]
        texts = [f"B: {p}" for p in passages]
        windows = self.long_passages != "head"
        with tokenizer_lock(self.tokenizer):  # shared with the local generator
            query_ids = _ids(self.tokenizer, f"A: {query}")
            encoded = self.tokenizer(
                texts, add_special_tokens=False, return_offsets_mapping=windows, verbose=False
            )
        query_limit = self.max_length * 3 // 4
        query_cut = len(query_ids) > query_limit
        first = self.bos_ids + query_ids[:query_limit]
        room = self.max_length - len(first)  # for separator + passage; >= 1 since max_length >= 8
        inputs: list[list[int]] = []
        truncated: list[bool] = []
        for i, passage_ids in enumerate(encoded["input_ids"]):
            second = self.sep_ids + list(passage_ids)
            cut = len(second) > room
            if cut and windows and room - len(self.sep_ids) >= MIN_ROOM:
                # The tokens of "B: " stay in front of the window (offsets:
                # they end by character 3).
                offsets = encoded["offset_mapping"][i]
                lead = sum(1 for _, end in offsets if end <= 3)
                start, end = best_span(
                    query, offsets[lead:], texts[i], room - len(self.sep_ids) - lead
                )
                second = (
                    self.sep_ids
                    + list(passage_ids[:lead])
                    + list(passage_ids[lead + start : lead + end])
                )
            inputs.append(first + second[:room] + self.sep_ids + self.prompt_ids)
            truncated.append(query_cut or cut)
        return inputs, truncated

    def yes_logits(self, rows: Sequence[Sequence[int]]) -> list[float]:
        """The "Yes" logit of each row (see :meth:`yes_logit_tensor`), as floats."""
        return self.yes_logit_tensor(rows).float().tolist()

    def yes_logit_tensor(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """One forward over right-padded rows; the "Yes" logit at each row's last real token.

        Right padding keeps every real token at the position it has unpadded, so
        a batched score equals the single-pair score (left padding would shift
        positions unless the model derived them from the mask).
        """
        input_ids, attention_mask = self.pad(rows)
        return self.yes_logits_of(
            self.model, input_ids.to(self.device), attention_mask.to(self.device)
        )

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and their mask, the width rounded up to a multiple of 8."""
        longest = max(len(r) for r in rows)
        width = -(-longest // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def yes_logits_of(
        self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """``model``'s "Yes" logit at each row's last real token (the model in training, too)."""
        last = last_token_index(attention_mask)
        if self.keeps_logits:
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=last[:, None]
            ).logits[:, 0, :]
        else:
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            logits = logits[torch.arange(len(input_ids), device=logits.device), last]
        return logits[:, self.yes_id]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a 0/1 mask: right for left and right padding alike."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.flip(dims=[1]).argmax(dim=1)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def load_llm_reranker(options: RerankerOptions) -> LlmYesReranker:
    """Load (or reuse) the causal LM through ``load_causal_lm`` and wrap it; a LoRA adapter
    loads on its base.
    """
    device = select_device(options.device)
    # Pass the concrete dtype name so "auto" and "float32" on CPU share one cached model.
    dtype_name = str(select_dtype(options.dtype, device)).removeprefix("torch.")
    tokenizer, network = load_causal_lm(options.model, device=device, dtype=dtype_name)
    try:
        reranker = LlmYesReranker(
            tokenizer,
            network,
            name=options.model,
            device=device,
            batch_size=options.batch_size,
            max_length=options.max_length,
            normalize=options.normalize,
            batch_tokens=options.batch_tokens,
            long_passages=options.long_passages,
            romanize_hangul=options.romanize_hangul,
        )
    except ValueError as exc:  # a tokenizer without pad/eos: loaded, but unusable here
        raise ModelLoadError(str(exc)) from exc
    logger.info(
        "LLM reranker %s on %s (%s), max_length %d",
        options.model,
        device,
        reranker.dtype,
        options.max_length,
    )
    return reranker
