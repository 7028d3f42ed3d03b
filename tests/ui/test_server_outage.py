"""The Chroma server goes down and comes back mid-session: the app says so, keeps the conversation,
recovers.

A real `chroma run` holds the sample corpus; the app (AppTest, the real page
script) talks to it in server mode. The server is killed between two questions,
then started again on the same port and data, and after that wiped and rebuilt
(a restart whose collections are new), and the same session keeps working.
"""

from __future__ import annotations

import signal

import pytest
from streamlit.testing.v1 import AppTest

from tests.cli import run_module
from tests.conftest import REPO, server_env, write_offline_config
from tests.fake_llm import llm_env, reranker_env
from tests.servers import ChromaServer

pytestmark = pytest.mark.slow
APP = str(REPO / "ui" / "app.py")
QUESTION = "How many days of paid sick leave do full-time staff get?"


def ask(app: AppTest, question: str) -> AppTest:
    app.chat_input[0].set_value(question).run()
    assert not app.exception, app.exception
    return app


def errors(app: AppTest) -> list[str]:
    """Errors on the page now: the sidebar, the banner and the latest answer (earlier turns keep
    theirs).
    """
    latest = app.chat_message[-1] if len(app.chat_message) else None
    return (
        [e.value for e in app.sidebar.error]
        + [e.value for e in app.main.error if e.value.startswith("The document store")]
        + ([e.value for e in latest.error] if latest is not None else [])
    )


def test_server_down_then_back(tmp_path, monkeypatch, tiny_cross_encoder, llm_server):
    server = ChromaServer(tmp_path / "data").start()
    try:
        config = write_offline_config(tmp_path)
        env = {
            **server_env(server.port, None, "outage"),
            **llm_env(llm_server.url),
            **reranker_env(tiny_cross_encoder),
        }
        assert run_module("ingest", REPO / "docs", "--config", config, env=env).returncode == 0
        monkeypatch.setenv("RAG_CONFIG", str(config))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = AppTest.from_file(APP, default_timeout=300).run()
        assert not app.exception and errors(app) == []

        llm_server.script.append({"pieces": ["Ten days [1]."]})
        ask(app, QUESTION)
        assert app.chat_message[1].markdown[0].value == "Ten days [1]."

        server.stop(signal.SIGKILL)
        ask(app, QUESTION)
        shown = " ".join(errors(app))
        assert f"http://127.0.0.1:{server.port} is unreachable" in shown
        assert "Document store unavailable" in shown and "Traceback" not in shown
        assert app.chat_message[1].markdown[0].value == "Ten days [1]."  # the conversation is kept
        assert not app.chat_input[0].disabled

        server.start()  # same port, same data
        llm_server.script.append({"pieces": ["Still ten days [1]."]})
        ask(app, QUESTION)
        assert errors(app) == []
        assert app.chat_message[-1].markdown[0].value == "Still ten days [1]."

        server.stop()  # restarted empty, then rebuilt: new collections behind the same name
        for path in sorted(server.data.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        server.start()
        assert run_module("ingest", REPO / "docs", "--config", config, env=env).returncode == 0
        # any click reruns: the old handles fail once
        app.sidebar.number_input(key="top_k").set_value(19).run()
        assert "no longer has the collection" in " ".join(errors(app)) and not app.exception
        llm_server.script.append({"pieces": ["Ten days again [1]."]})
        ask(app, QUESTION)  # reconnected
        assert errors(app) == []
        assert app.chat_message[-1].markdown[0].value == "Ten days again [1]."
    finally:
        server.stop()
