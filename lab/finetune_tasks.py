"""What differs between training a cross-encoder and a Yes-logit LLM reranker: the rest of
lab.finetune is shared.

A task loads its base model, wraps it with LoRA adapters (peft), turns a batch of
groups into model inputs, gives the raw score of every (query, passage) pair of that
batch (group-major: 1 positive then its negatives), and builds the product's own
reranker around the model being trained, so validation ranks with exactly the code
that will serve it.

* ``cross-encoder``: ``AutoModelForSequenceClassification``; a plain encoder gets a new
  one-label head; LoRA on every linear layer of the encoder, the head and pooler trained whole.
* ``llm``: a causal LM read the bge-reranker-v2-gemma way (``A: {query}`` / ``B: {passage}`` /
  the Yes-or-No instruction, inputs built by :class:`~rag.rerankers.llm_yes.LlmYesReranker`
  itself); the score is the logit of "Yes" at the last real token; LoRA on every attention
  and MLP projection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rag.models import ModelLoadError

logger = logging.getLogger(__name__)

# Every linear layer of a BERT-style encoder (attention and feed-forward); the pooler
# and the head train whole.
ENCODER_LORA_TARGETS = r".*encoder\.layer\.\d+\..*(query|key|value|dense)$"
ENCODER_SAVED_MODULES = ("classifier", "pooler")
# The attention and MLP projections of Gemma, Llama, Qwen, Mistral and their kin.
LM_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _lora(
    model: Any,
    *,
    task_type: str,
    targets: Any,
    saved: Sequence[str],
    base: str,
    rank: int,
    alpha: int,
    dropout: float,
) -> Any:
    """``model`` wrapped by peft; the adapter records ``base`` (the spec the user gave) as its base
    model, so it loads anywhere that spec resolves, not only on the machine that trained it."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type=task_type,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=list(saved) or None,
    )
    wrapped = get_peft_model(model, config)
    wrapped.peft_config["default"].base_model_name_or_path = base
    trainable, total = wrapped.get_nb_trainable_parameters()
    logger.info(
        "LoRA r=%d alpha=%d: %d of %d parameters train (%.2f%%)",
        rank,
        alpha,
        trainable,
        total,
        100 * trainable / total,
    )
    return wrapped


def load_base(spec: str) -> tuple[Any, Any]:
    """Tokenizer and a sequence-classification model from a reranker or a plain encoder.

    A checkpoint that already has a one- or two-label head keeps it; a plain
    encoder (e.g. the packaged all-MiniLM-L6-v2) gets a new one-label head.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from rag.models import ModelLoadError, find_adapter, load_error, resolve_model
    from rag.rerankers.engines import classifier_labels

    resolved = resolve_model(spec)
    if resolved.gguf_file is not None:
        raise ModelLoadError(
            f"{spec}: a GGUF file holds a causal LM; fine-tuning needs an encoder checkpoint"
        )
    if find_adapter(resolved.location) is not None:
        raise ModelLoadError(f"{spec} is a LoRA adapter; train from its base model instead")
    try:
        config = AutoConfig.from_pretrained(resolved.location)
        tokenizer = AutoTokenizer.from_pretrained(resolved.location)
        model = AutoModelForSequenceClassification.from_pretrained(
            resolved.location, **classifier_labels(config)
        )
    except (OSError, ValueError) as exc:
        raise load_error(f"base model {spec!r}", resolved.location, exc) from exc
    return tokenizer, model


class CrossEncoderTask:
    kind = "cross-encoder"

    def __init__(
        self,
        base: str,
        *,
        max_length: int,
        long_passages: str = "head",
        romanize_hangul: bool = False,
    ) -> None:
        self.base = base
        self.max_length = max_length
        self.long_passages = long_passages
        self.romanize_hangul = romanize_hangul
        self.tokenizer, self.model = load_base(base)

    def add_lora(self, *, rank: int, alpha: int, dropout: float) -> None:
        names = {name.split(".")[-1] for name, _ in self.model.named_modules()}
        saved = [m for m in ENCODER_SAVED_MODULES if m in names]
        self.model = _lora(
            self.model,
            task_type="SEQ_CLS",
            targets=ENCODER_LORA_TARGETS,
            saved=saved,
            base=self.base,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
        )

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from rag.rerankers.window import fit_passages
        from rag.romanize import romanize

        read = romanize if self.romanize_hangul else str
        queries = [read(item["query"]) for item in items for _ in item["passages"]]
        passages = [
            p
            for item in items
            for p in fit_passages(
                self.tokenizer,
                read(item["query"]),
                [read(x) for x in item["passages"]],
                max_length=self.max_length,
                mode=self.long_passages,
            )
        ]
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

    def scores(self, model: Any, inputs: dict[str, Any]) -> Any:
        from rag.rerankers.engines import score_column

        return model(**inputs).logits[:, score_column(model.config, "the model being trained")]

    def reranker(self, model: Any, *, batch_size: int) -> Any:
        from rag.rerankers.cross_encoder import CrossEncoderReranker
        from rag.rerankers.engines import TorchEngine

        return CrossEncoderReranker(
            self.tokenizer,
            TorchEngine(model, str(model.device)),
            name="validation",
            batch_size=batch_size,
            max_length=self.max_length,
            normalize="none",
            long_passages=self.long_passages,
            romanize_hangul=self.romanize_hangul,
        )


class LlmYesTask:
    kind = "llm"

    def __init__(
        self,
        base: str,
        *,
        max_length: int,
        long_passages: str = "head",
        romanize_hangul: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rag.models import find_adapter, load_error, materialize, resolve_model
        from rag.rerankers.llm_yes import LlmYesReranker

        resolved = resolve_model(base)
        if resolved.gguf_file is None and find_adapter(resolved.location) is not None:
            raise ModelLoadError(f"{base} is a LoRA adapter; train from its base model instead")
        location = materialize(resolved)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModelForCausalLM.from_pretrained(location)
        except (OSError, ValueError) as exc:
            raise load_error(f"causal LM {base!r}", location, exc) from exc
        self.base = base
        self.max_length = max_length
        # The product's reranker builds the inputs and reads the "Yes" logit, in training as in use.
        self.long_passages = long_passages
        self.romanize_hangul = romanize_hangul
        self.inputs = LlmYesReranker(
            self.tokenizer,
            self.model,
            name=base,
            device="cpu",
            batch_size=1,
            max_length=max_length,
            normalize="none",
            long_passages=long_passages,
            romanize_hangul=romanize_hangul,
        )

    def add_lora(self, *, rank: int, alpha: int, dropout: float) -> None:
        names = {name.split(".")[-1] for name, _ in self.model.named_modules()}
        targets = [t for t in LM_LORA_TARGETS if t in names]
        if not targets:
            raise ModelLoadError(
                f"{self.base}: none of the projections LoRA targets ({', '.join(LM_LORA_TARGETS)}) "
                "is in this model"
            )
        self.model = _lora(
            self.model,
            task_type="CAUSAL_LM",
            targets=targets,
            saved=(),
            base=self.base,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
        )

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        rows: list[list[int]] = []
        for item in items:
            rows.extend(self.inputs.build_inputs(item["query"], item["passages"])[0])
        input_ids, attention_mask = self.inputs.pad(rows)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def scores(self, model: Any, inputs: dict[str, Any]) -> Any:
        return self.inputs.yes_logits_of(model, inputs["input_ids"], inputs["attention_mask"])

    def reranker(self, model: Any, *, batch_size: int) -> Any:
        from rag.rerankers.llm_yes import LlmYesReranker

        return LlmYesReranker(
            self.tokenizer,
            model,
            name="validation",
            device=str(model.device),
            batch_size=batch_size,
            max_length=self.max_length,
            normalize="none",
            long_passages=self.long_passages,
            romanize_hangul=self.romanize_hangul,
        )


TASKS = {"cross-encoder": CrossEncoderTask, "llm": LlmYesTask}
