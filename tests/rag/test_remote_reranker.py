"""The remote reranker against a stand-in rerank server on 127.0.0.1 (the process boundary).

The stand-in (tests/fake_rerank.py) speaks TEI's and the Cohere-style wire
formats; nothing else is mocked. Retries are kept fast with small backoff
settings or ``Retry-After: 0``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import ConfigError, load_settings
from rag.jsonclient import retry_after_seconds
from rag.models import ModelLoadError
from rag.pipeline import load_configured_reranker
from rag.rerankers import (
    DEFAULT_BACKEND,
    LOADERS,
    CrossEncoderReranker,
    RemoteEndpoint,
    RemoteReranker,
    Reranker,
    RerankerOptions,
    RerankError,
    ScoreCache,
    backends_of,
    load_reranker,
)
from rag.rerankers.remote import parse_scores, relevance_to_raw
from tests.cli import run_module
from tests.conftest import INFINITY_RERANKER
from tests.fake_llm import llm_env
from tests.fake_rerank import FakeRerankServer, relevance_logit, reranker_env, sigmoid
from tests.rag.rerankers.helpers import make_candidates
from tests.servers import free_port

QUERY = "how many days of paid sick leave"
TEXTS = [
    "The office is closed on public holidays.",
    "Full-time staff get ten days of paid sick leave a year.",
    "Sick leave must be reported on the first day.",
    "Parking permits are issued by facilities.",
    "Paid leave days carry over for one year.",
]
OPTIONS = {
    "device": "auto",
    "dtype": "auto",
    "batch_size": 8,
    "max_length": 512,
    "normalize": "sigmoid",
}
KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[FakeRerankServer]:
    with FakeRerankServer() as stand_in:
        yield stand_in


def remote(model: str, endpoint: RemoteEndpoint | None) -> Reranker:
    """load_reranker for kind remote, as the app calls it (the backend left to the kind: http)."""
    return load_reranker("remote", RerankerOptions(model=model, **OPTIONS, endpoint=endpoint))


def expected_order(texts: list[str], query: str = QUERY) -> list[str]:
    """Best first by the stand-in's logit, ties in retrieval order, as rank_candidates sorts."""
    return sorted(texts, key=lambda t: (-relevance_logit(query, t), texts.index(t)))


def client(
    url: str,
    *,
    api: str = "tei",
    batch_size: int = 8,
    max_retries: int = 0,
    timeout: float = 5.0,
    backoff: float = 0.001,
    retry_after_max: float = 30.0,
    api_key: str = "",
    api_key_env: str = "",
) -> RemoteReranker:
    endpoint = RemoteEndpoint(
        url=url, api=api, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries
    )
    return RemoteReranker(
        endpoint,
        model="stand-in-reranker",
        batch_size=batch_size,
        normalize="sigmoid",
        api_key=api_key,
        backoff=backoff,
        backoff_max=0.01,
        retry_after_max=retry_after_max,
    )


# --- wire formats and scores
# ------------------------------------------------------------------------------


def test_tei_ranks_by_the_servers_logits(server):
    reranker = remote("BAAI/bge-reranker-v2-m3", RemoteEndpoint(url=server.tei_url))
    ranked = reranker.rerank(QUERY, make_candidates(TEXTS))
    assert [c.chunk.text for c in ranked] == expected_order(TEXTS)
    assert [c.rank for c in ranked] == [1, 2, 3, 4, 5]
    for c in ranked:
        assert c.rerank_raw == relevance_logit(QUERY, c.chunk.text)
        assert c.rerank_score == pytest.approx(sigmoid(c.rerank_raw))
        assert c.truncated is False
    (request,) = server.requests
    assert request["path"] == "/rerank"
    assert request["body"] == {
        "query": QUERY,
        "texts": sorted(TEXTS, key=len, reverse=True),
        "raw_scores": True,
        "truncate": True,
    }
    assert "authorization" not in request["headers"]
    port = server.port
    assert isinstance(reranker, RemoteReranker)
    assert (reranker.kind, reranker.name, reranker.device, reranker.dtype, reranker.backend) == (
        "remote",
        "BAAI/bge-reranker-v2-m3",
        f"127.0.0.1:{port}",
        "server",
        "http",
    )
    assert reranker.describe() == f"remote: BAAI/bge-reranker-v2-m3 (127.0.0.1:{port}, server)"


def test_cohere_scores_are_shown_unchanged(server):
    reranker = remote("rerank-v3.5", RemoteEndpoint(url=server.cohere_url, api="cohere"))
    ranked = reranker.rerank(QUERY, make_candidates(TEXTS))
    assert [c.chunk.text for c in ranked] == expected_order(TEXTS)
    for c in ranked:  # the server's probability, through logit then the sigmoid normalisation
        assert c.rerank_score == pytest.approx(
            sigmoid(relevance_logit(QUERY, c.chunk.text)), abs=1e-12
        )
        assert c.rerank_raw == pytest.approx(relevance_logit(QUERY, c.chunk.text), abs=1e-9)
    (request,) = server.requests
    assert request["path"] == "/v1/rerank"
    assert request["body"] == {
        "model": "rerank-v3.5",
        "query": QUERY,
        "documents": sorted(TEXTS, key=len, reverse=True),
        "top_n": 5,
        "return_documents": False,
    }


def test_cohere_scores_outside_zero_one_stay_raw(server):
    server.script.append(
        {
            "body": {
                "results": [
                    {"index": 0, "relevance_score": 2.5},
                    {"index": 1, "relevance_score": -1.0},
                    {"index": 2, "relevance_score": 0.5},
                ]
            }
        }
    )
    raw, truncated = client(server.cohere_url, api="cohere").score_pairs("q", ["aaa", "bb", "c"])
    assert raw == [2.5, -1.0, 0.5] and truncated == [False, False, False]


def test_relevance_to_raw_inverts_the_sigmoid_and_keeps_the_order():
    probabilities = [0.0, 1e-15, 0.2, 0.5, 0.9, 1.0]
    raw = relevance_to_raw(probabilities)
    assert all(math.isfinite(x) for x in raw)
    assert raw == sorted(raw) and raw[3] == 0.0
    assert [sigmoid(x) for x in raw[2:5]] == pytest.approx([0.2, 0.5, 0.9], abs=1e-12)
    assert relevance_to_raw([0.3, 1.7]) == [0.3, 1.7]
    assert relevance_to_raw([]) == []


def test_nothing_to_score_sends_nothing(server):
    reranker = client(server.tei_url)
    assert reranker.rerank(QUERY, []) == []
    assert reranker.score_pairs(QUERY, []) == ([], [])
    assert server.requests == []


# --- batching
# ---------------------------------------------------------------------------------------------


def test_batches_stay_under_the_servers_limit_and_come_back_in_order():
    with FakeRerankServer(max_batch=4) as server:
        texts = [f"passage {i} about sick leave" + " days" * (i % 3) for i in range(10)]
        reranker = client(server.tei_url, batch_size=3)
        raw, _ = reranker.score_pairs(QUERY, texts)
        assert raw == [relevance_logit(QUERY, t) for t in texts]
        assert len(server.requests) == math.ceil(10 / 3)
        assert all(len(r["body"]["texts"]) <= 3 for r in server.requests)
        sent = sorted(t for r in server.requests for t in r["body"]["texts"])
        assert sent == sorted(texts)


def test_a_batch_above_the_limit_is_refused_with_advice():
    with FakeRerankServer(max_batch=4) as server:
        reranker = client(server.tei_url, batch_size=8, max_retries=3)
        with pytest.raises(RerankError) as err:
            reranker.score_pairs(QUERY, TEXTS)
        message = str(err.value)
        assert server.tei_url in message and "HTTP 413" in message
        assert "maximum allowed batch size 4" in message and "reranker.batch_size" in message
        assert len(server.requests) == 1  # a 413 is not retried


# --- retries
# ----------------------------------------------------------------------------------------------


def test_429_honours_retry_after(server):
    server.script.append(
        {"status": 429, "headers": {"Retry-After": "0"}, "body": {"error": "overloaded"}}
    )
    reranker = client(server.tei_url, max_retries=2, backoff=60.0)  # backoff would take a minute
    started = time.monotonic()
    raw, _ = reranker.score_pairs(QUERY, TEXTS)
    assert time.monotonic() - started < 10
    assert raw == [relevance_logit(QUERY, t) for t in TEXTS]
    assert len(server.requests) == 2


def test_retry_after_is_capped(server):
    server.script.append(
        {"status": 503, "headers": {"Retry-After": "3600"}, "body": {"error": "loading"}}
    )
    reranker = client(server.tei_url, max_retries=1, retry_after_max=0.01)
    started = time.monotonic()
    reranker.score_pairs(QUERY, TEXTS)
    assert time.monotonic() - started < 10
    assert len(server.requests) == 2


def test_repeated_503_gives_up_after_max_retries(server):
    server.script.extend(
        {"status": 503, "body": {"error": "Model is overloaded", "error_type": "overloaded"}}
        for _ in range(10)
    )
    with pytest.raises(RerankError) as err:
        client(server.tei_url, max_retries=2).score_pairs(QUERY, TEXTS)
    message = str(err.value)
    assert len(server.requests) == 3
    assert server.tei_url in message and "HTTP 503" in message and "Model is overloaded" in message
    assert "3 attempts" in message and "reranker.max_retries = 2" in message


def test_retry_after_header_forms():
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def test_timeout_names_the_setting(server):
    server.script.append({"delay": 1.5})
    with pytest.raises(
        RerankError, match=r"did not answer within reranker\.timeout = 0\.3s"
    ) as err:
        client(server.tei_url, timeout=0.3, max_retries=2).score_pairs(QUERY, TEXTS)
    assert server.tei_url in str(err.value)
    assert len(server.requests) == 1  # a read timeout is not retried


def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/rerank"
    with pytest.raises(RerankError) as err:
        client(url, max_retries=1).score_pairs(QUERY, TEXTS)
    message = str(err.value)
    assert f"cannot connect to {url}" in message and "refused" in message.lower()
    assert "2 attempts" in message


# --- keys
# -------------------------------------------------------------------------------------------------


def test_the_key_is_sent_as_a_bearer_token(monkeypatch):
    monkeypatch.setenv("RERANK_KEY", KEY)
    with FakeRerankServer(api_key=KEY) as server:
        reranker = remote("m", RemoteEndpoint(url=server.tei_url, api_key_env="RERANK_KEY"))
        reranker.score_pairs(QUERY, TEXTS)
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
        assert KEY not in repr(reranker)


def test_401_names_the_env_var_and_hides_the_key(monkeypatch):
    wrong = "sk-wrong-key-987654321"
    monkeypatch.setenv("RERANK_KEY", wrong)
    with FakeRerankServer(api_key=KEY) as server:
        server.script.append({"status": 401, "body": {"message": f"invalid api token {wrong}"}})
        reranker = remote("m", RemoteEndpoint(url=server.tei_url, api_key_env="RERANK_KEY"))
        with pytest.raises(RerankError) as err:
            reranker.score_pairs(QUERY, TEXTS)
        message = str(err.value)
        assert "HTTP 401" in message and "env var RERANK_KEY is missing or wrong" in message
        assert wrong not in message and KEY not in message
        assert len(server.requests) == 1


def test_401_without_a_key_configured_says_where_to_put_one():
    with FakeRerankServer(api_key=KEY) as server:
        with pytest.raises(RerankError, match="reranker.api_key_env"):
            client(server.tei_url).score_pairs(QUERY, TEXTS)


def test_a_missing_key_variable_fails_at_load(monkeypatch, server):
    monkeypatch.delenv("RERANK_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="RERANK_KEY"):
        remote("m", RemoteEndpoint(url=server.tei_url, api_key_env="RERANK_KEY"))


# --- malformed answers
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "reply", "reason"),
    [
        ("tei", {"raw": b"<html>gateway</html>"}, "not JSON"),
        ("tei", {"body": {"results": []}}, "expected a JSON list"),
        ("tei", {"body": [{"score": 1.0}]}, "no index"),
        (
            "tei",
            {"body": [{"index": 0, "score": 1.0}, {"index": 0, "score": 2.0}]},
            "index 0 appears twice",
        ),
        (
            "tei",
            {"body": [{"index": 0, "score": 1.0}, {"index": 9, "score": 2.0}]},
            "no index in 0..1",
        ),
        ("tei", {"body": [{"index": 0, "score": 1.0}]}, "1 of 2 texts got no score"),
        (
            "tei",
            {"body": [{"index": 0, "score": "high"}, {"index": 1, "score": 1.0}]},
            "not a finite number",
        ),
        ("cohere", {"body": [{"index": 0, "relevance_score": 0.5}]}, '"results" list'),
        (
            "cohere",
            {"body": {"results": [{"index": 0, "score": 0.5}, {"index": 1, "score": 0.1}]}},
            "relevance_score = None",
        ),
    ],
)
def test_malformed_answers_say_so(server, api, reply, reason):
    server.script.append(reply)
    url = server.tei_url if api == "tei" else server.cohere_url
    with pytest.raises(RerankError) as err:
        client(url, api=api, max_retries=2).score_pairs(QUERY, ["first text", "second"])
    assert "malformed response from" in str(err.value) and reason in str(err.value)
    assert len(server.requests) == 1


def test_parse_scores_puts_results_in_request_order():
    assert parse_scores(
        [{"index": 1, "score": -2}, {"index": 0, "score": 3.5}], api="tei", count=2
    ) == [3.5, -2.0]


def test_wrong_path_or_format_gets_a_hint(server):
    with pytest.raises(RerankError, match=r"HTTP 404.*check reranker\.url"):
        client(server.base + "/v1/embeddings").score_pairs(QUERY, TEXTS)
    with pytest.raises(RerankError, match=r"HTTP 422.*reranker\.api = 'cohere' matches the server"):
        client(server.tei_url, api="cohere").score_pairs(QUERY, TEXTS)


# --- registry, config and the pipeline's loader
# -----------------------------------------------------------


def test_registry_has_remote_and_it_needs_an_endpoint(server):
    assert (
        ("remote", "http") in LOADERS
        and backends_of("remote") == ("http",)
        and DEFAULT_BACKEND["remote"] == "http"
    )
    with pytest.raises(ValueError, match="reranker.url"):
        remote("m", None)
    endpoint = RemoteEndpoint(url=server.tei_url)
    assert isinstance(
        load_reranker("remote", RerankerOptions(model="m", endpoint=endpoint), backend="http"),
        RemoteReranker,
    )
    with pytest.raises(
        ValueError,
        match=r"backend 'torch' applies to kind cross-encoder \| llm only, not to "
        r"'remote'; valid for 'remote': http$",
    ):
        load_reranker("remote", RerankerOptions(model="m", endpoint=endpoint), backend="torch")
    assert server.requests == []  # loading sends nothing


def test_the_score_cache_saves_requests(server):
    """The base class's cache works for the remote kind too: a repeated pair is not sent again."""
    reranker = remote("m", RemoteEndpoint(url=server.tei_url)).with_cache(ScoreCache(max_pairs=100))
    first, reused_first = reranker.rerank_counted(QUERY, make_candidates(TEXTS[:3]))
    assert reused_first == 0 and len(server.requests) == 1
    ranked, reused = reranker.rerank_counted(QUERY, make_candidates(TEXTS))
    assert reused == 3 and len(server.requests) == 2
    # only the new pairs are sent
    assert sorted(server.requests[-1]["body"]["texts"]) == sorted(TEXTS[3:])
    assert [c.chunk.text for c in ranked] == expected_order(TEXTS)
    assert [c.rerank_raw for c in ranked] == [
        relevance_logit(QUERY, t) for t in expected_order(TEXTS)
    ]
    assert reranker.rerank(QUERY, make_candidates(TEXTS)) == ranked and len(server.requests) == 2


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("url", "reranker:80/rerank", "reranker.url"),
        ("api", "openai", "reranker.api"),
        ("timeout", 0, "reranker.timeout"),
        ("max_retries", -1, "reranker.max_retries"),
    ],
)
def test_endpoint_checks_its_values(field, value, key):
    options = {"url": "http://reranker:80/rerank", field: value}
    with pytest.raises(ValueError, match=key):
        RemoteEndpoint(**options)


def test_device_hides_credentials_in_the_url():
    endpoint = RemoteEndpoint(url="https://user:pw@rerank.example.com:8443/v1/rerank")
    assert endpoint.host == "rerank.example.com:8443"
    assert endpoint.shown_url == "https://rerank.example.com:8443/v1/rerank"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_remote_without_url_names_the_key(tmp_path):
    with pytest.raises(
        ConfigError, match=r"reranker\.url = '': .*required when a reranker's kind is 'remote'"
    ):
        load_settings(write(tmp_path, "[reranker]\nkind = 'remote'\n"), env={})
    alternative = "[reranker]\nalternatives = [{ kind = 'remote', model = 'm' }]\n"
    with pytest.raises(ConfigError, match=r"reranker\.url"):
        load_settings(write(tmp_path, alternative), env={})


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("URL", "reranker:80/rerank", "reranker.url = 'reranker:80/rerank'"),
        ("API", "openai", "reranker.api = 'openai'"),
        ("TIMEOUT", "0", "reranker.timeout = '0'"),
        ("MAX_RETRIES", "-1", "reranker.max_retries = '-1'"),
    ],
)
def test_config_bad_remote_values_name_the_key(tmp_path, key, value, shown):
    env = {
        "RAG_RERANKER__KIND": "remote",
        "RAG_RERANKER__URL": "http://reranker:80/rerank",
        f"RAG_RERANKER__{key}": value,
    }
    with pytest.raises(ConfigError, match=shown):
        load_settings(write(tmp_path, ""), env=env)


def test_config_env_overrides_and_defaults(tmp_path):
    defaults = load_settings(write(tmp_path, ""), env={}).reranker
    assert (
        defaults.url,
        defaults.api,
        defaults.api_key_env,
        defaults.timeout,
        defaults.max_retries,
    ) == ("", "tei", "", 30.0, 3)
    env = {
        "RAG_RERANKER__KIND": "remote",
        "RAG_RERANKER__URL": "http://vllm:8000/v1/rerank",
        "RAG_RERANKER__API": "cohere",
        "RAG_RERANKER__API_KEY_ENV": "VLLM_KEY",
        "RAG_RERANKER__MODEL": "BAAI/bge-reranker-v2-m3",
        "RAG_RERANKER__TIMEOUT": "2.5",
        "RAG_RERANKER__MAX_RETRIES": "0",
    }
    r = load_settings(write(tmp_path, ""), env=env).reranker
    assert (r.kind, r.url, r.api, r.api_key_env, r.model, r.timeout, r.max_retries) == (
        "remote",
        "http://vllm:8000/v1/rerank",
        "cohere",
        "VLLM_KEY",
        "BAAI/bge-reranker-v2-m3",
        2.5,
        0,
    )


def test_configured_loader_passes_the_endpoint(tmp_path, server, tiny_cross_encoder):
    env = {
        "RAG_RERANKER__KIND": "remote",
        "RAG_RERANKER__URL": server.cohere_url,
        "RAG_RERANKER__API": "cohere",
        "RAG_RERANKER__MODEL": "first",
        "RAG_RERANKER__TIMEOUT": "4",
        "RAG_RERANKER__MAX_RETRIES": "1",
        "RAG_RERANKER__DEVICE": "cuda:7",
    }  # no GPU needed: a remote reranker has no device here
    settings = load_settings(write(tmp_path, ""), env=env)
    reranker = load_configured_reranker(settings)
    assert isinstance(reranker, RemoteReranker)
    assert reranker.endpoint == RemoteEndpoint(
        url=server.cohere_url, api="cohere", timeout=4.0, max_retries=1
    )
    # as lab.evaluate and the app do
    other = load_configured_reranker(settings, kind="remote", model="second")
    other.score_pairs(QUERY, TEXTS)
    assert other.name == "second" and server.requests[-1]["body"]["model"] == "second"
    local = load_configured_reranker(
        settings.model_copy(
            update={"reranker": settings.reranker.model_copy(update={"device": "cpu"})}
        ),
        kind="cross-encoder",
        model=tiny_cross_encoder,
    )
    # the endpoint does not get in a local kind's way
    assert isinstance(local, CrossEncoderReranker)


# --- end to end
# -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ask_cli_reranks_on_the_server(readonly_sample_config, server, llm_server):
    question = "How many days of paid sick leave do full-time staff get?"
    llm_server.script.append({"pieces": ["Ten days [1]."]})
    env = {**llm_env(llm_server.url), **reranker_env(server.tei_url)}
    result = run_module(
        "rag", "ask", question, "--json", "--config", readonly_sample_config, env=env
    )
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)["trace"]
    port = server.port
    assert trace["models"]["reranker"] == f"remote: stand-in-reranker (127.0.0.1:{port}, server)"
    retrieved = [c["chunk"]["text"] for c in trace["retrieved"]]
    assert [c["chunk"]["text"] for c in trace["reranked"]] == expected_order(retrieved, question)
    assert [c["rerank_raw"] for c in trace["reranked"]] == sorted(
        (relevance_logit(question, t) for t in retrieved), reverse=True
    )
    assert sum(len(r["body"]["texts"]) for r in server.requests) == len(retrieved) == 20
    # the offline profile's batch_size
    assert all(len(r["body"]["texts"]) <= 16 for r in server.requests)


# --- a real server: Infinity
# ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_infinity_scores_as_the_local_model_does(infinity):
    """The shipped English reranker, merged and served by Infinity's Cohere-style /rerank, gives
    the local model's logits back (Infinity sends sigmoid(logit); the client takes the logit)."""
    options = {**OPTIONS, "device": "cpu", "max_length": 256}
    local = load_reranker("cross-encoder", RerankerOptions(model="shipped:minilm-en", **options))
    endpoint = RemoteEndpoint(url=f"{infinity.url}/rerank", api="cohere")
    served = remote(INFINITY_RERANKER, endpoint)
    ours, _ = local.score_pairs(QUERY, TEXTS)
    theirs, truncated = served.score_pairs(QUERY, TEXTS)
    assert truncated == [False] * len(TEXTS)
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-3
    ranked = served.rerank(QUERY, make_candidates(TEXTS))
    assert ranked[0].chunk.text == TEXTS[1]  # "ten days of paid sick leave"
    assert [c.chunk.text for c in ranked] == [
        c.chunk.text for c in local.rerank(QUERY, make_candidates(TEXTS))
    ]
