"""Secrets stay secret: planted API keys and a planted Chroma token never reach a log, an output, a
file or the page, even with every logger at DEBUG and a server that echoes the key back.

The keys are planted in the environment (OPENAI_API_KEY, and a variable named by
RAG_LLM__API_KEY_ENV) and CHROMA_TOKEN; the commands run as separate processes
with the root logger at DEBUG (and OPENAI_LOG=debug); the app runs in AppTest
with caplog at DEBUG for every logger. Then every stdout and stderr, every file
written under the test's folder, every log record and every element of the page
is searched for each planted value and for its last 8 characters. The stand-in
LLM server must see the key in its Authorization header: proof that the key was
really used, not merely absent.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from rag.common import scrub_secret
from tests.conftest import REPO, server_env, write_offline_config
from tests.fake_llm import llm_env, reranker_env

OPENAI_KEY = "sk-planted-" + secrets.token_urlsafe(24)
NAMED_KEY = "sk-planted-named-" + secrets.token_urlsafe(24)
CHROMA_TOKEN = "planted-token-" + secrets.token_urlsafe(24)
RERANK_KEY = "rk-planted-" + secrets.token_urlsafe(24)
PLANTED = (OPENAI_KEY, NAMED_KEY, CHROMA_TOKEN, RERANK_KEY)
NEEDLES = tuple(n for value in PLANTED for n in (value, value[-8:]))
KEY_ENV = "PLANTED_LLM_KEY"
RERANK_KEY_ENV = "PLANTED_RERANK_KEY"
QUESTION = "How many days of paid sick leave do full-time staff get?"
DOCS = {
    "handbook.md": (
        "# Leave\n\nFull-time staff get 10 days of paid sick leave a year. Interns get 3 days.\n"
    ),
    "parking.md": "# Parking\n\nVisitor parking is on level B3. The garage closes at 22:00.\n",
}
# Every logger at DEBUG, whatever the command's own -v does (lab.evaluate has
# none: it is forced on).
DEBUG_MAIN = """
import logging, runpy, sys
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
import rag.cli
quiet = rag.cli.setup_logging
rag.cli.setup_logging = lambda verbose: quiet(True)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def echo_401(key: str) -> dict:
    """A 401 the way OpenAI words it, echoing the key in full and masked (a proxy may do either)."""
    masked = key[:7] + "*" * 20 + key[-4:]
    return {
        "status": 401,
        "error": {
            "error": {
                "message": f"Incorrect API key provided: {key}. You can find your API key at "
                f"https://platform.openai.com/account/api-keys. (also seen as {masked})",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    }


def leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [n for n in NEEDLES if n.encode() in data]


def files_under(root: Path) -> dict[str, list[str]]:
    """Planted values found in any file under root (reports, traces, logs, the Chroma store)."""
    found = {str(p): leaks(p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    return {path: hits for path, hits in found.items() if hits}


def run_debug(
    module: str, *args: str | Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with every logger at DEBUG and only the planted secrets in the
    environment.
    """
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAG_", "OPENAI_"))
        and k not in ("CHROMA_TOKEN", KEY_ENV, RERANK_KEY_ENV)
    }
    base.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
            "OPENAI_LOG": "debug",
            "OPENAI_API_KEY": OPENAI_KEY,
            KEY_ENV: NAMED_KEY,
            "CHROMA_TOKEN": CHROMA_TOKEN,
            RERANK_KEY_ENV: RERANK_KEY,
        }
    )
    base.update(env)
    return subprocess.run(
        [sys.executable, "-c", DEBUG_MAIN, module, *map(str, args)],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=600,
    )


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_scrub_secret_removes_the_key_in_every_form_a_server_echoes():
    key = "sk-planted-AbCdEfGhIjKlMnOpQrStUv"
    assert (
        scrub_secret(f"Incorrect API key provided: {key}. See docs.", key)
        == "Incorrect API key provided: ***. See docs."
    )
    assert scrub_secret(f"bad key '{key[:15]}...'", key) == "bad key '***'"  # cut short
    # masked
    assert scrub_secret("provided: sk-plan****************StUv. Go", key) == "provided: ***. Go"
    assert (
        scrub_secret(f"{{'detail': 'key {key[-10:]} revoked'}}", key)
        == "{'detail': 'key *** revoked'}"
    )
    assert scrub_secret("HTTP 500 - model overloaded", key) == "HTTP 500 - model overloaded"
    assert scrub_secret("anything", "") == "anything"


# --- the command lines
# ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_commands_never_print_log_or_write_a_planted_secret(
    tmp_path, shared_data, tiny_cross_encoder, llm_server
):
    config = write_offline_config(tmp_path)
    docs = write_docs(tmp_path / "docs")
    named = {
        **llm_env(llm_server.url),
        **reranker_env(tiny_cross_encoder),
        "RAG_LLM__API_KEY_ENV": KEY_ENV,
    }
    default = {**named, "RAG_LLM__API_KEY_ENV": "OPENAI_API_KEY"}
    squad = shared_data / "squad" / "squad-v1.1-dev-part-a.json"
    evaluate = (
        "lab.evaluate",
        "squad",
        squad,
        "--articles",
        "1",
        "--limit",
        "3",
        "--seed",
        "0",
        "--modes",
        "dense",
        "--no-rerank",
        "--answers",
        "--config",
        config,
        "--out",
        tmp_path / "out" / "report.json",
    )
    runs = {}
    runs["ingest"] = run_debug("ingest", docs, "--config", config, "-v", env=named)
    llm_server.script.append({"pieces": ["Ten days [1]."]})
    runs["ask --json"] = run_debug(
        "rag", "ask", QUESTION, "--json", "--config", config, "-v", env=named
    )
    llm_server.script.append({"pieces": ["Ten days [1]."]})
    runs["ask"] = run_debug("rag", "ask", QUESTION, "--config", config, "-v", env=default)
    llm_server.script.append(echo_401(NAMED_KEY))
    runs["ask, 401"] = run_debug("rag", "ask", QUESTION, "--config", config, "-v", env=named)
    llm_server.script += [{"pieces": ["Denver Broncos"]}] * 3
    runs["evaluate"] = run_debug(*evaluate, env=named)
    llm_server.script.append(echo_401(NAMED_KEY))
    runs["evaluate, 401"] = run_debug(*evaluate, env=named)

    codes = {name: r.returncode for name, r in runs.items()}
    assert codes == {
        "ingest": 0,
        "ask --json": 0,
        "ask": 0,
        "ask, 401": 2,
        "evaluate": 0,
        "evaluate, 401": 2,
    }, {name: r.stderr[-2000:] for name, r in runs.items()}
    # the keys were really sent, each where it was asked for
    sent = [r["headers"]["authorization"] for r in llm_server.requests]
    assert sent == [f"Bearer {NAMED_KEY}", f"Bearer {OPENAI_KEY}"] + [f"Bearer {NAMED_KEY}"] * 5
    assert "authentication failed (HTTP 401)" in runs["ask, 401"].stdout
    assert "Incorrect API key provided: ***. You can find" in runs["ask, 401"].stdout
    assert "authentication failed (HTTP 401)" in runs["evaluate, 401"].stderr
    # DEBUG was on
    assert "DEBUG openai" in runs["ask"].stderr and "DEBUG httpcore" in runs["ask"].stderr
    assert (tmp_path / "out" / "report.json").is_file() and (
        tmp_path / "out" / "report.png"
    ).is_file()

    for name, result in runs.items():
        assert leaks(result.stdout) == [] and leaks(result.stderr) == [], name
    assert files_under(tmp_path) == {}


@pytest.mark.slow
def test_the_remote_reranker_key_is_used_but_never_shown(tmp_path, llm_server):
    """A rerank server that wants a bearer key: accepted, then refused with the key echoed back."""
    from tests.fake_rerank import FakeRerankServer
    from tests.fake_rerank import reranker_env as remote_env

    config = write_offline_config(tmp_path)
    assert (
        run_debug("ingest", write_docs(tmp_path / "docs"), "--config", config, env={}).returncode
        == 0
    )
    with FakeRerankServer(api_key=RERANK_KEY) as server:
        env = {
            **llm_env(llm_server.url),
            **remote_env(server.tei_url),
            "RAG_RERANKER__API_KEY_ENV": RERANK_KEY_ENV,
        }
        llm_server.script.append({"pieces": ["Ten days [1]."]})
        ok = run_debug("rag", "ask", QUESTION, "--json", "--config", config, "-v", env=env)
        server.api_key = RERANK_KEY[::-1]  # the server now refuses the key
        refused = run_debug("rag", "ask", QUESTION, "--config", config, "-v", env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert refused.returncode == 2 and RERANK_KEY_ENV in refused.stderr, refused.stderr[-2000:]
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {RERANK_KEY}"
    for result in (ok, refused):
        assert leaks(result.stdout) == [] and leaks(result.stderr) == []
    assert files_under(tmp_path) == {}


@pytest.mark.slow
def test_the_chroma_token_is_used_but_never_shown(
    tmp_path, tmp_path_factory, chroma_stack, tiny_cross_encoder, llm_server
):
    """Server mode through the deployment's token proxy, which accepts only the planted token."""
    from tests.servers import TokenProxy

    server, other_proxy = chroma_stack
    # not under tmp_path
    proxy = TokenProxy(tmp_path_factory.mktemp("planted-proxy"), server.port, CHROMA_TOKEN).start()
    try:
        config = write_offline_config(tmp_path)
        env = {
            **server_env(proxy.port, CHROMA_TOKEN, f"secrets-{secrets.token_hex(4)}"),
            **llm_env(llm_server.url),
            **reranker_env(tiny_cross_encoder),
            "RAG_LLM__API_KEY_ENV": KEY_ENV,
        }
        runs = {
            "ingest": run_debug(
                "ingest", write_docs(tmp_path / "docs"), "--config", config, "-v", env=env
            )
        }
        llm_server.script.append({"pieces": ["Ten days [1]."]})
        runs["ask"] = run_debug("rag", "ask", QUESTION, "--json", "--config", config, "-v", env=env)
        # the planted token at a proxy that expects another one: refused, and the
        # message does not repeat it
        runs["refused"] = run_debug(
            "rag",
            "ask",
            QUESTION,
            "--config",
            config,
            "-v",
            env={**env, "RAG_STORE__PORT": str(other_proxy.port)},
        )
    finally:
        proxy.stop()
    assert [r.returncode for r in runs.values()] == [0, 0, 2], {
        n: r.stderr[-2000:] for n, r in runs.items()
    }
    assert "refused the token (HTTP 401)" in runs["refused"].stderr
    for name, result in runs.items():
        assert leaks(result.stdout) == [] and leaks(result.stderr) == [], name
    # and Chroma's own log
    assert files_under(tmp_path) == {} and leaks(server.log.read_bytes()) == []


# --- the app
# ----------------------------------------------------------------------------------------------


def element_texts(node) -> list[str]:
    """Everything an element carries (its protobuf: labels, bodies, help, values), for the whole
    tree.
    """
    out = [str(node.proto)] if getattr(node, "proto", None) is not None else []
    for child in getattr(node, "children", {}).values():
        out += element_texts(child)
    return out


@pytest.fixture
def debug_logs(caplog):
    for name in (
        "",
        "openai",
        "httpx",
        "httpcore",
        "chromadb",
        "streamlit",
        "rag",
        "ingest",
        "ui",
        "urllib3",
    ):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def test_app_never_shows_or_logs_a_planted_secret(
    monkeypatch, debug_logs, capfd, tmp_path, sample_config, tiny_cross_encoder, llm_server
):
    from streamlit.testing.v1 import AppTest

    from tests.ui.test_app import APP

    for name, value in {
        "RAG_CONFIG": str(sample_config),
        **llm_env(llm_server.url),
        **reranker_env(tiny_cross_encoder),
        "RAG_LLM__API_KEY_ENV": KEY_ENV,
        KEY_ENV: NAMED_KEY,
        "OPENAI_API_KEY": OPENAI_KEY,
        "CHROMA_TOKEN": CHROMA_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    llm_server.script += [{"pieces": ["Ten days [1]."]}, echo_401(NAMED_KEY)]
    app = AppTest.from_file(APP, default_timeout=300).run()
    shown = element_texts(app._tree)
    app.chat_input[0].set_value(QUESTION).run()
    shown += element_texts(app._tree)
    # 401, echoing the key
    app.chat_input[0].set_value("How many days of annual leave do interns get?").run()
    assert not app.exception, app.exception
    shown += element_texts(app._tree)

    assert app.chat_message[1].markdown[0].value == "Ten days [1]."
    (error,) = [e.value for e in app.main.error]
    assert (
        "authentication failed (HTTP 401)" in error and "Incorrect API key provided: ***" in error
    )
    assert [r["headers"]["authorization"] for r in llm_server.requests] == [
        f"Bearer {NAMED_KEY}"
    ] * 2
    # the sidebar was drawn
    assert any("LLM" in t and "stand-in" in t for t in element_texts(app.sidebar))
    assert any(r.name.startswith("httpcore") for r in debug_logs.records)  # DEBUG was on

    assert any("Ten days [1]." in t for t in shown) and any(
        "authentication failed" in t for t in shown
    )
    assert [t for t in shown if leaks(t)] == []
    assert [r.name for r in debug_logs.records if leaks(r.getMessage())] == [] and leaks(
        debug_logs.text
    ) == []
    out, err = capfd.readouterr()
    assert leaks(out) == [] and leaks(err) == []
    assert files_under(tmp_path) == {}
