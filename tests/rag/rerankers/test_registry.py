"""load_reranker: the explicit registry and its load-time errors."""
from __future__ import annotations

import pytest

from rag.models import ModelLoadError
from rag.rerankers import RERANKERS, CrossEncoderReranker, Reranker, load_reranker

OPTIONS = {"device": "cpu", "dtype": "float32", "batch_size": 4, "max_length": 128, "normalize": "sigmoid"}


def test_registry_is_explicit() -> None:
    assert sorted(RERANKERS) == ["cross-encoder", "llm", "remote"]


def test_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(ValueError, match=r"'bge'.*cross-encoder, llm"):
        load_reranker("bge", model="BAAI/bge-reranker-v2-m3", **OPTIONS)


def test_kind_is_not_guessed_from_the_model_name(tiny_cross_encoder: str) -> None:
    with pytest.raises(ValueError, match="unknown reranker kind ''"):
        load_reranker("", model=tiny_cross_encoder, **OPTIONS)


def test_unknown_normalization_lists_valid_names(tiny_cross_encoder: str) -> None:
    options = {**OPTIONS, "normalize": "minmax"}
    with pytest.raises(ValueError, match=r"'minmax'.*sigmoid, softmax, none"):
        load_reranker("cross-encoder", model=tiny_cross_encoder, **options)


@pytest.mark.parametrize("kind", ["cross-encoder", "llm"])
def test_missing_model_path_names_the_spec(tmp_path, kind: str) -> None:
    missing = str(tmp_path / "no-such-reranker")
    with pytest.raises(ModelLoadError, match="no-such-reranker"):
        load_reranker(kind, model=missing, **OPTIONS)


def test_unknown_packaged_model() -> None:
    with pytest.raises(ModelLoadError, match="pkg:nope"):
        load_reranker("cross-encoder", model="pkg:nope", **OPTIONS)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["cross-encoder", "llm"])
def test_half_precision_on_cpu_is_refused(tiny_cross_encoder: str, kind: str, dtype: str) -> None:
    options = {**OPTIONS, "dtype": dtype}
    with pytest.raises(ModelLoadError, match=f"{dtype}.*cpu"):
        load_reranker(kind, model=tiny_cross_encoder, **options)


def test_auto_dtype_on_cpu_is_float32(tiny_cross_encoder: str) -> None:
    options = {**OPTIONS, "dtype": "auto"}
    reranker = load_reranker("cross-encoder", model=tiny_cross_encoder, **options)
    assert isinstance(reranker, CrossEncoderReranker)
    assert isinstance(reranker, Reranker)
    assert (reranker.name, reranker.kind, reranker.device, reranker.dtype) == (
        tiny_cross_encoder, "cross-encoder", "cpu", "float32")


def test_bad_device_is_refused(tiny_cross_encoder: str) -> None:
    options = {**OPTIONS, "device": "tpu"}
    with pytest.raises(ModelLoadError, match="'tpu'"):
        load_reranker("cross-encoder", model=tiny_cross_encoder, **options)


def test_bad_batch_size_names_the_value(tiny_cross_encoder: str) -> None:
    options = {**OPTIONS, "batch_size": 0}
    with pytest.raises(ValueError, match="batch_size.*0"):
        load_reranker("cross-encoder", model=tiny_cross_encoder, **options)
