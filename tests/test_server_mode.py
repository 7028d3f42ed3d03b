"""The docker-compose topology without containers: ingest and ask through a real Chroma server.

`chroma run` holds the data; the compose file's nginx token proxy stands in front of
it; the CLIs reach it through chromadb's HttpClient with the token from
CHROMA_TOKEN, exactly as the app container does.
"""

from __future__ import annotations

import json
import uuid

import chromadb
import pytest

from tests.cli import run_module
from tests.conftest import REPO, server_env, write_offline_config
from tests.fake_llm import llm_env, reranker_env
from tests.servers import free_port

pytestmark = pytest.mark.slow
QUESTION = "How many days of paid sick leave do full-time staff get?"


def direct_count(server, collection: str) -> int:
    """Chunks in the collection, read from the Chroma server itself (behind the proxy)."""
    client = chromadb.HttpClient(host="127.0.0.1", port=server.port)
    return client.get_collection(collection).count()


@pytest.fixture(scope="module")
def ingested(chroma_stack, tmp_path_factory):
    """docs/ ingested into a fresh collection through the proxy: (config, env, chunk count)."""
    server, proxy = chroma_stack
    config = write_offline_config(tmp_path_factory.mktemp("server-mode"))
    env = server_env(proxy.port, proxy.token, f"srv-{uuid.uuid4().hex[:8]}")
    result = run_module("ingest", REPO / "docs", "--config", config, env=env)
    assert result.returncode == 0, result.stderr
    count = direct_count(server, env["RAG_STORE__COLLECTION"])
    assert count > 50
    return config, env, count


def test_ingest_through_the_proxy_writes_every_chunk_once(chroma_stack, ingested):
    server, _ = chroma_stack
    config, env, count = ingested
    again = run_module("ingest", REPO / "docs", "--config", config, env=env)
    assert again.returncode == 0, again.stderr
    assert direct_count(server, env["RAG_STORE__COLLECTION"]) == count  # nothing twice


def test_ask_through_the_proxy(ingested, tiny_cross_encoder, llm_server):
    config, env, _ = ingested
    llm_server.script.append({"pieces": ["Ten days [1]."]})
    result = run_module(
        "rag",
        "ask",
        QUESTION,
        "--json",
        "--config",
        config,
        env={**env, **llm_env(llm_server.url), **reranker_env(tiny_cross_encoder)},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["text"] == "Ten days [1]." and out["trace"]["rerank"] is True
    sources = [c["chunk"]["source"] for c in out["trace"]["retrieved"]]
    assert len(sources) == 20 and any(s.endswith("employee-handbook.md") for s in sources)


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_refused_and_nothing_changes(chroma_stack, ingested, token):
    server, _ = chroma_stack
    config, env, count = ingested
    result = run_module(
        "ingest",
        REPO / "docs",
        "--config",
        config,
        "--reset",
        env={**env, "CHROMA_TOKEN": token or ""},
    )
    assert result.returncode == 2
    assert "refused the token (HTTP 401)" in result.stderr and "Traceback" not in result.stderr
    assert direct_count(server, env["RAG_STORE__COLLECTION"]) == count


def test_unreachable_server_is_named(ingested):
    config, env, _ = ingested
    port = free_port()
    result = run_module(
        "rag",
        "ask",
        QUESTION,
        "--no-rerank",
        "--config",
        config,
        env={**env, "RAG_STORE__PORT": str(port)},
    )
    assert result.returncode == 2
    assert (
        f"http://127.0.0.1:{port} is unreachable" in result.stderr
        and "Traceback" not in result.stderr
    )
