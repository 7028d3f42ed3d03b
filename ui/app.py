"""Chat with your documents, and compare answers with reranking off and on.

    streamlit run ui/app.py            (RAG_CONFIG=config.offline.toml for the offline profile)

A thin page over rag/ and ingest/: widgets, session state and drawing. Models
are loaded once per process (ui/services.py); the conversation lives in
``st.session_state`` so reruns keep it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rag.common import shown_url
from rag.config import ConfigError, Settings, load_settings
from rag.generate import GenerationError
from rag.languages import format_shares, language_name, question_warning
from rag.models import ModelLoadError, select_device
from rag.pipeline import NO_RERANKER, check_question
from rag.reorder import STRATEGIES
from rag.rerankers import RerankError
from rag.retrieve import MODES
from rag.store import StoreError, StoreUnavailableError
from ui import services, uploads
from ui.render import BI_ENCODER, RERANKED, Result, ingest_time, show_result

HISTORY_TURNS = 3  # earlier turns passed to the LLM for follow-up questions
FILE_COLUMNS = {  # the sidebar is narrow: the name gives way, the chunk count stays whole
    "file": st.column_config.TextColumn("file", width="medium"),
    "chunks": st.column_config.NumberColumn("chunks", width="small"),
    "ingested": st.column_config.TextColumn("ingested", width="small"),
}


def init_state() -> None:
    st.session_state.setdefault("messages", [])
    st.session_state.setdefault("handled_uploads", set())
    st.session_state.setdefault("last_ingest", None)


def show_models(settings: Settings, choices: services.Choices) -> None:
    st.subheader("Models")
    embedder = services.embedder(settings)
    lines = [f"**Embedder**: {settings.embedder.model} ({embedder.device})"]
    if settings.reranker.enabled:
        lines.append(
            f"**Reranker**: {choices.reranker} ({select_device(settings.reranker.device)})"
        )
        for language, model in settings.reranker.models_by_language.items():
            shown = (
                "not reranked (first-stage order)"
                if model == NO_RERANKER
                else ": ".join(settings.reranker.language_model(language))
            )
            lines.append(f"&nbsp;&nbsp;{language_name(language)} questions: {shown}")
    if settings.llm.base_url.strip():
        lines.append(f"**LLM**: {choices.llm_model} at {shown_url(settings.llm.base_url)}")
    else:
        lines.append(
            f"**LLM**: {settings.llm.local_model}, local ({select_device(settings.llm.device)})"
        )
    st.markdown("  \n".join(lines))
    reasons = services.is_offline_profile(settings)
    if reasons:
        st.warning(
            f"**Offline profile** ({', '.join(reasons)}): small demo models that run without "
            "internet; answers are weak. For real use, set production models and an LLM endpoint "
            "in config.toml."
        )


def pick_choices(settings: Settings) -> services.Choices:
    st.subheader("Settings")
    top_k = st.number_input(
        "Candidates retrieved (top-k)",
        min_value=1,
        max_value=500,
        value=settings.retrieval.top_k,
        key="top_k",
    )
    top_n = st.number_input(
        "Chunks given to the LLM (top-n)",
        min_value=1,
        max_value=100,
        value=settings.reranker.top_n,
        key="top_n",
    )
    modes = list(MODES)
    retrieval = st.selectbox(
        "First-stage retrieval",
        modes,
        key="retrieval",
        index=modes.index(settings.retrieval.mode),
        help="dense: the bi-encoder; bm25: keywords (Korean morphemes); hybrid: both, "
        "fused by reciprocal rank",
    )
    options = list(services.reranker_options(settings))
    reranker = st.selectbox(
        "Reranker", options, key="reranker", disabled=not settings.reranker.enabled
    )
    strategies = list(STRATEGIES)
    strategy = st.selectbox(
        "Order of the chunks for the LLM",
        strategies,
        key="strategy",
        index=strategies.index(settings.reorder.strategy),
        help="lost_in_the_middle: best first, second best last (Liu et al. 2023); "
        "best_last: best right before the question (what a small local model reads best)",
    )
    if settings.llm.base_url.strip():
        llm_model = (
            st.text_input("LLM model", value=settings.llm.model, key="llm_model").strip()
            or settings.llm.model
        )
    else:
        llm_model = settings.llm.model
    return services.Choices(
        top_k=int(top_k),
        top_n=int(top_n),
        reranker=reranker,
        strategy=strategy,
        llm_model=llm_model,
        retrieval=retrieval,
    )


def handle_uploads(settings: Settings) -> None:
    types = sorted({e.lstrip(".") for e in settings.ingest.extensions})
    limits = (
        f"up to {settings.ingest.max_file_mb:g} MB each, {settings.ui.max_upload_files} files and "
        f"{settings.ui.max_upload_mb:g} MB at a time"
    )
    files = st.file_uploader(
        f"Add documents ({limits})",
        type=types,
        accept_multiple_files=True,
        key="uploader",
        max_upload_size=uploads.upload_size_cap_mb(settings, st.get_option("server.maxUploadSize")),
    )
    new = [f for f in files or [] if f.file_id not in st.session_state.handled_uploads]
    if new:
        bar = st.progress(0.0, text="saving uploads…")
        batch = [uploads.Upload(f.name, f.getvalue()) for f in new]
        st.session_state.handled_uploads.update(f.file_id for f in new)
        try:
            report, refused = uploads.ingest_uploads(
                settings,
                batch,
                on_progress=lambda done, text: bar.progress(min(done, 1.0), text=text),
            )
        # e.g. chunking.size too large, store unreachable
        except (ValueError, StoreError, OSError) as exc:
            st.session_state.last_ingest = None
            st.error(f"The upload could not be ingested: {exc}")
            return
        finally:
            bar.empty()
        st.session_state.last_ingest = (report, refused)
    if st.session_state.last_ingest is not None:
        report, refused = st.session_state.last_ingest
        counts = {s: report.count(s) for s in ("added", "updated", "unchanged")}
        if any(counts.values()):
            st.success(
                ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                + f"; {report.chunks_written} chunks written in {report.seconds:.1f} s"
            )
        for outcome in report.outcomes:
            if outcome.status == "failed":
                st.error(f"{Path(outcome.source).name}: {outcome.reason}")
            for warning in outcome.warnings:
                st.warning(f"{Path(outcome.source).name}: {warning}")
        for name, reason in refused:
            st.error(f"{uploads.shown_name(name)}: {reason}")


def show_documents(settings: Settings) -> list:
    st.subheader("Documents")
    handle_uploads(settings)
    docs = services.documents(settings)
    if not docs:
        return docs
    st.dataframe(
        [
            {
                "file": Path(d.source).name,
                "chunks": d.n_chunks,
                "ingested": ingest_time(d.ingest_time),
            }
            for d in docs
        ],
        hide_index=True,
        width="stretch",
        column_config=FILE_COLUMNS,
    )
    show_languages(settings)
    names = {f"{Path(d.source).name} ({d.source})": d.source for d in docs}
    picked = st.selectbox(
        "Remove a document",
        list(names),
        index=None,
        key="remove_pick",
        placeholder="choose a document",
    )
    if st.button("Remove", disabled=picked is None, key="remove"):
        try:
            services.remove_document(settings, names[picked])
        except (StoreError, OSError) as exc:
            st.error(f"{Path(names[picked]).name} could not be removed: {exc}")
            return docs
        st.session_state.last_ingest = None
        st.rerun()
    return docs


def show_languages(settings: Settings) -> None:
    """The collection's languages, and a warning when the embedder does not cover them (or the
    last upload's).
    """
    found = services.languages(settings)
    if found:
        st.caption(f"Languages: {format_shares(found)}")
    warning = services.language_warning(settings, found)
    if warning is None and st.session_state.last_ingest is not None:
        report, _ = st.session_state.last_ingest
        warning = services.language_warning(settings, report.languages(), subject="this upload is")
    if warning is not None:
        st.warning(f"**Language coverage**: {warning}")


def history() -> list[tuple[str, str]]:
    """Earlier (question, answer) turns for follow-ups: the reranked side's answer where there
    were two.
    """
    turns = []
    messages = st.session_state.messages
    for asked, answered in zip(messages[0::2], messages[1::2]):
        texts = [r.text for r in answered["results"] if r.text]
        if texts:
            turns.append((asked["content"], texts[-1]))
    return turns[-HISTORY_TURNS:]


def answer_side(
    settings: Settings, choices: services.Choices, question: str, *, rerank: bool
) -> Result:
    """Run one side in the current container, streaming the answer; errors become messages, not
    tracebacks.
    """
    label = RERANKED if rerank else BI_ENCODER
    llm, llm_error = None, None
    try:
        llm = services.generator(settings, choices.llm_model)
    except (GenerationError, ModelLoadError) as exc:
        llm_error = f"The LLM could not be loaded: {exc}"
    stage = st.empty()  # which stage is running, until the answer is done

    def show_stage(text: str) -> None:
        stage.caption(f"⏳ {text[:1].upper()}{text[1:]}…")

    try:
        pipeline = services.pipeline(
            settings,
            choices,
            rerank=rerank,
            llm=llm,
            rewrites=st.session_state.setdefault("rewrites", {}),
        )
        trace = pipeline.search(question, rerank=rerank, on_stage=show_stage, history=history())
    except StoreUnavailableError as exc:
        stage.empty()
        services.forget_store()
        return Result(label, error=f"{exc} Ask again once it is back.")
    except (ModelLoadError, RerankError, StoreError, ValueError) as exc:
        stage.empty()
        return Result(label, error=str(exc))
    if llm is None:
        stage.empty()
        return Result(label, trace=trace, error=f"{llm_error}. The retrieved sources are below.")
    show_stage(f"writing the answer with {llm.name}")
    placeholder = st.empty()
    streamed: list[str] = []

    def on_token(piece: str) -> None:
        streamed.append(piece)
        placeholder.markdown("".join(streamed) + " ▌")

    try:
        answer = pipeline.answer(trace, history=history(), on_token=on_token)
    except GenerationError as exc:
        return Result(
            label,
            trace=trace,
            error=f"The LLM could not answer: {exc}. The retrieved sources are below.",
        )
    finally:
        stage.empty()
        placeholder.empty()
    return Result(label, trace=trace, answer=answer)


def show_turn(results: list[Result]) -> None:
    if len(results) == 1:
        show_result(results[0])
        return
    first, second = results
    for column, result, other in zip(st.columns(2), results, (second, first)):
        with column:
            st.subheader(result.label)
            show_result(result, other)


def ask(
    settings: Settings, choices: services.Choices, question: str, *, rerank: bool, compare: bool
) -> None:
    with st.chat_message("user"):
        st.markdown(question)
    warning = None
    if services.question_mode(settings, choices, question) != "bm25":  # BM25 reads any language
        warning = question_warning(settings.embedder.model, question, settings.embedder.languages)
    with st.chat_message("assistant"):
        if warning is not None:
            st.warning(f"**Language coverage**: {warning}")
        if compare:
            results = []
            for column, side in zip(st.columns(2), (False, True)):
                with column:
                    st.subheader(RERANKED if side else BI_ENCODER)
                    results.append(answer_side(settings, choices, question, rerank=side))
                    show_result(results[-1])
        else:
            results = [answer_side(settings, choices, question, rerank=rerank)]
            show_result(results[0])
    st.session_state.messages += [
        {"role": "user", "content": question},
        {"role": "assistant", "results": results, "warning": warning},
    ]
    if compare:
        # drawn again from the conversation, now that each side knows the other's sources
        st.rerun()


def main() -> None:
    st.set_page_config(page_title="rag-rerank: chat with your documents", layout="wide")
    init_state()
    outage = None
    try:
        settings = load_settings()
        with st.sidebar:
            choices = pick_choices(settings)
            show_models(settings, choices)
            try:
                docs = show_documents(settings)
            # the server is down or restarting: keep the conversation
            except StoreUnavailableError as exc:
                services.forget_store()
                outage, docs = exc, None
                st.error(f"**Document store unavailable**: {exc}")
                st.button("Try again", key="reconnect")  # any click reruns and reconnects
            if st.button("Clear conversation", key="clear"):
                st.session_state.messages = []
                st.rerun()
    except (ConfigError, ModelLoadError, StoreError) as exc:
        st.error(f"The app cannot start: {exc}")
        st.stop()
    st.title("Chat with your documents")
    left, right = st.columns(2)
    can_rerank = settings.reranker.enabled
    rerank = left.toggle(
        "Rerank",
        value=can_rerank,
        key="rerank",
        disabled=not can_rerank,
        help="Reorder the retrieved chunks with the reranker before the LLM reads them",
    )
    compare = right.toggle(
        "Compare A/B",
        value=False,
        key="compare",
        disabled=not can_rerank,
        help="Answer each question twice, with reranking off and on, side by side",
    )
    if outage is not None:
        st.error(
            f"The document store is unavailable, so questions cannot be answered now: {outage} "
            "The app reconnects on your next question or click."
        )
    elif not docs:
        st.info(
            "No documents yet. Upload files in the sidebar, or run `python -m ingest docs/` "
            "with the same config, then reload this page."
        )
    for message in st.session_state.messages:
        with st.chat_message(message["role"]):
            if message["role"] == "user":
                st.markdown(message["content"])
            else:
                if message.get("warning"):
                    st.warning(f"**Language coverage**: {message['warning']}")
                show_turn(message["results"])
    # No max_chars: a browser cuts a longer paste silently; check_question refuses it
    # with the limit instead.
    question = st.chat_input("Ask about your documents", disabled=not docs and outage is None)
    if question is not None:
        try:
            check_question(question)
        except ValueError as exc:
            st.error(f"Not asked: {exc}")
        else:
            ask(
                settings,
                choices,
                question,
                rerank=rerank and can_rerank,
                compare=compare and can_rerank,
            )


main()
