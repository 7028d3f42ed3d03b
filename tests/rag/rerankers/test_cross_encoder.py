"""Cross-encoder reranker on a tiny random BERT saved to disk and loaded like a user's model.

Weights are random, so these tests check mechanics (sorting for speed and
putting results back, truncation, ranking), never ranking quality.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rag.models import ModelLoadError
from rag.rerankers import CrossEncoderReranker, RerankerOptions, load_reranker
from rag.rerankers.cross_encoder import build
from rag.rerankers.engines import TorchEngine, score_column
from tests.rag.rerankers.helpers import LONG_PASSAGE, PASSAGES, QUERY, make_candidates


def _load(path: str, **overrides) -> CrossEncoderReranker:
    options = {
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 16,
        "max_length": 128,
        "normalize": "sigmoid",
        **overrides,
    }
    reranker = load_reranker("cross-encoder", RerankerOptions(model=path, **options))
    assert isinstance(reranker, CrossEncoderReranker)
    return reranker


def _plain_scores(
    path: str, query: str, passages: list[str], max_length: int, column: int = 0
) -> list[float]:
    """One unpadded forward per pair, in input order: what sorting and batching must reproduce."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    scores = []
    with torch.inference_mode():
        for passage in passages:
            inputs = tokenizer(
                query, passage, truncation="only_second", max_length=max_length, return_tensors="pt"
            )
            scores.append(float(model(**inputs).logits[0, column]))
    return scores


def test_scores_equal_a_plain_per_pair_forward(tiny_cross_encoder: str) -> None:
    passages = PASSAGES + [LONG_PASSAGE]
    raw, _ = _load(tiny_cross_encoder, batch_size=3).score_pairs(QUERY, passages)
    assert raw == pytest.approx(_plain_scores(tiny_cross_encoder, QUERY, passages, 128), abs=1e-5)


def test_batch_size_does_not_change_scores(tiny_cross_encoder: str) -> None:
    one, _ = _load(tiny_cross_encoder, batch_size=1).score_pairs(QUERY, PASSAGES)
    many, _ = _load(tiny_cross_encoder, batch_size=16).score_pairs(QUERY, PASSAGES)
    assert many == pytest.approx(one, abs=1e-5)


def test_truncation_flags_and_passage_only_cut(tiny_cross_encoder: str) -> None:
    reranker = _load(tiny_cross_encoder, max_length=32)
    features, truncated = reranker.encode(QUERY, [PASSAGES[1], LONG_PASSAGE])
    assert truncated == [False, True]
    assert len(features[1]["input_ids"]) == 32
    tokenizer = reranker.tokenizer
    query_ids = tokenizer(QUERY)["input_ids"]  # [CLS] query [SEP]
    assert features[1]["input_ids"][: len(query_ids)] == query_ids  # the query is intact
    # A pair of exactly max_length tokens is not cut.
    passage_ids = tokenizer(LONG_PASSAGE, add_special_tokens=False)["input_ids"]
    exact = tokenizer.decode(passage_ids[: 32 - len(query_ids) - 1])
    assert len(tokenizer(QUERY, exact)["input_ids"]) == 32
    assert reranker.encode(QUERY, [exact])[1] == [False]


def test_query_longer_than_max_length_cuts_both_instead_of_failing(tiny_cross_encoder: str) -> None:
    long_query = " ".join(["what is a reranker"] * 20)
    reranker = _load(tiny_cross_encoder, max_length=16)
    features, truncated = reranker.encode(long_query, ["short passage", LONG_PASSAGE])
    assert truncated == [True, True]
    assert all(len(f["input_ids"]) == 16 for f in features)
    ranked = reranker.rerank(long_query, make_candidates(["short passage", LONG_PASSAGE]))
    assert [c.truncated for c in ranked] == [True, True]


def test_rerank_returns_all_sorted_new_candidates(tiny_cross_encoder: str) -> None:
    reranker = _load(tiny_cross_encoder, max_length=32)
    candidates = make_candidates(PASSAGES + [LONG_PASSAGE])
    before = copy.deepcopy(candidates)
    ranked = reranker.rerank(QUERY, candidates)
    assert candidates == before
    assert len(ranked) == len(candidates)
    assert [c.rank for c in ranked] == list(range(1, len(candidates) + 1))
    raws = [c.rerank_raw for c in ranked]
    assert raws == sorted(raws, reverse=True)
    assert all(type(r) is float for r in raws)
    assert all(0.0 < c.rerank_score < 1.0 for c in ranked)
    by_id = {c.chunk.id: c for c in candidates}
    for c in ranked:
        original = by_id[c.chunk.id]
        assert (c.chunk, c.retrieval_score, c.retrieval_rank) == (
            original.chunk,
            original.retrieval_score,
            original.retrieval_rank,
        )
    lengths = {
        c.chunk.text: len(reranker.tokenizer(QUERY, c.chunk.text)["input_ids"]) for c in candidates
    }
    assert {c.chunk.text: c.truncated for c in ranked} == {
        text: n > 32 for text, n in lengths.items()
    }
    assert 0 < sum(c.truncated for c in ranked) < len(ranked)
    raw, _ = reranker.score_pairs(QUERY, [c.chunk.text for c in candidates])
    assert {c.chunk.id: c.rerank_raw for c in ranked} == {
        c.chunk.id: r for c, r in zip(candidates, raw)
    }


def test_empty_candidates(tiny_cross_encoder: str) -> None:
    assert _load(tiny_cross_encoder).rerank(QUERY, []) == []


def test_softmax_scores_sum_to_one(tiny_cross_encoder: str) -> None:
    ranked = _load(tiny_cross_encoder, normalize="softmax").rerank(QUERY, make_candidates(PASSAGES))
    assert sum(c.rerank_score for c in ranked) == pytest.approx(1.0)


def test_max_length_is_capped_at_the_model_limit(tiny_cross_encoder: str) -> None:
    assert _load(tiny_cross_encoder, max_length=4096).max_length == 512


def _tiny_classifier(directory, num_labels: int) -> str:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return str(directory)


def test_two_label_model_scores_the_positive_label(tmp_path, tiny_cross_encoder: str) -> None:
    path = _tiny_classifier(tmp_path / "two", num_labels=2)
    AutoTokenizer.from_pretrained(tiny_cross_encoder).save_pretrained(path)
    raw, _ = _load(path).score_pairs(QUERY, PASSAGES)
    assert raw == pytest.approx(_plain_scores(path, QUERY, PASSAGES, 128, column=1), abs=1e-5)


def test_three_label_model_is_not_a_reranker(tmp_path, tiny_cross_encoder: str) -> None:
    path = _tiny_classifier(tmp_path / "nli", num_labels=3)
    AutoTokenizer.from_pretrained(tiny_cross_encoder).save_pretrained(path)
    with pytest.raises(ModelLoadError, match="3"):
        _load(path)


def test_the_token_budget_changes_the_batches_not_the_scores(tiny_cross_encoder):
    reranker = _load(tiny_cross_encoder)
    assert reranker.batch_tokens == 1024  # the CPU default
    passages = PASSAGES + [LONG_PASSAGE]
    features, _ = reranker.encode(QUERY, passages)
    lengths = [len(f["input_ids"]) for f in features]
    assert all(
        len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 1024
        for b in reranker.batches(lengths)
    )
    capped = reranker.score_pairs(QUERY, passages)[0]
    reranker.batch_tokens, reranker.batch_size = 0, 16
    assert reranker.batches(lengths) == [sorted(range(len(passages)), key=lambda i: -lengths[i])]
    assert reranker.score_pairs(QUERY, passages)[0] == pytest.approx(capped, abs=1e-5)
    reranker.batch_tokens = 40  # every pair longer than 40 tokens goes alone
    assert all(len(b) == 1 for b in reranker.batches(lengths) if lengths[b[0]] > 20)
    assert reranker.score_pairs(QUERY, passages)[0] == pytest.approx(capped, abs=1e-5)


def test_reranker_batch_tokens_from_config_reaches_the_model(tiny_cross_encoder, tmp_path):
    from rag.config import load_settings
    from rag.pipeline import load_configured_reranker
    from tests.conftest import write_offline_config
    from tests.fake_llm import reranker_env

    config = write_offline_config(tmp_path)
    auto = load_configured_reranker(load_settings(config, env=reranker_env(tiny_cross_encoder)))
    chosen = load_configured_reranker(
        load_settings(
            config, env={**reranker_env(tiny_cross_encoder), "RAG_RERANKER__BATCH_TOKENS": "4096"}
        )
    )
    assert (auto.batch_tokens, chosen.batch_tokens) == (1024, 4096)


def test_the_torch_engine_is_what_runs_the_model(tiny_cross_encoder: str) -> None:
    reranker = _load(tiny_cross_encoder)
    engine = reranker.engine
    assert isinstance(engine, TorchEngine)
    assert (engine.backend, engine.device, engine.dtype) == ("torch", "cpu", "float32")
    assert (reranker.backend, reranker.device, reranker.dtype) == (
        engine.backend,
        engine.device,
        engine.dtype,
    )
    # eval mode: no dropout
    assert engine.config is engine.model.config and not engine.model.training
    # One padded batch in, float64 logits out: the values of the model's own forward.
    features, _ = reranker.encode(QUERY, PASSAGES[:3])
    padded = reranker.tokenizer.pad(features, padding=True, return_tensors="np")
    logits = engine.logits(padded)
    assert logits.dtype == "float64" and logits.shape == (3, 1)
    with torch.inference_mode():
        direct = engine.model(
            **reranker.tokenizer.pad(features, padding=True, return_tensors="pt")
        ).logits
    assert logits[:, 0].tolist() == pytest.approx(direct[:, 0].tolist(), abs=1e-6)


def test_the_reranker_takes_any_engine(tiny_cross_encoder: str) -> None:
    """Composition: tokenisation, flags, batching and ranking are the reranker's; only logits()
    is the engine's.
    """
    loaded = _load(tiny_cross_encoder, max_length=32)
    seen: list[int] = []

    class Recording:
        """An engine around the loaded torch engine that records each batch's size."""

        backend, device, dtype = "recording", "cpu", "float32"
        config = loaded.engine.config

        def logits(self, batch):
            seen.append(len(batch["input_ids"]))
            return loaded.engine.logits(batch)

    options = RerankerOptions(model="recorded", batch_size=2, max_length=32)
    reranker = build(loaded.tokenizer, Recording(), options)
    assert isinstance(reranker, CrossEncoderReranker)
    assert (reranker.name, reranker.backend, reranker.batch_size, reranker.max_length) == (
        "recorded",
        "recording",
        2,
        32,
    )
    assert reranker.describe() == "cross-encoder: recorded (cpu, float32, recording)"
    passages = PASSAGES + [LONG_PASSAGE]
    raw, cut = reranker.score_pairs(QUERY, passages)
    assert seen == [2, 2, 2, 1]  # 7 pairs, at most batch_size a forward
    assert 0 < sum(cut) < len(cut)
    # The same options on the torch engine itself: the same batches, so the very
    # same scores and flags.
    assert (raw, cut) == build(loaded.tokenizer, loaded.engine, options).score_pairs(
        QUERY, passages
    )


def test_score_column_follows_the_head() -> None:
    class Config:
        def __init__(self, num_labels: int) -> None:
            self.num_labels = num_labels

    assert (score_column(Config(1), "m"), score_column(Config(2), "m")) == (0, 1)
    with pytest.raises(ValueError, match="m: a reranker has 1 or 2 labels, this model has 3"):
        score_column(Config(3), "m")
