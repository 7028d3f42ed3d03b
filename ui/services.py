"""What the app needs from rag/ and ingest/, loaded once per process and shared by every browser
session.

Streamlit reruns the page script on every click. Each model is loaded by a
``st.cache_resource`` function keyed by the settings that shape it, so changing
top-k or the reorder strategy reloads nothing, and picking another reranker
loads only that reranker (once). The objects shared here hold no per-request
state: a Pipeline is a small frozen value built per question.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from rag.config import RerankerSettings, Settings
from rag.embedder import Embedder
from rag.generate import Generator
from rag.languages import collection_languages, coverage_warning, question_language
from rag.pipeline import (
    NO_RERANKER,
    Pipeline,
    load_configured_reranker,
    load_embedder,
    load_generator,
    open_store,
)
from rag.rerankers import Reranker, ScoreCache
from rag.retrieve import LexicalIndex, Retriever, language_routes
from rag.store import ChunkStore, FileRecord


@dataclass(frozen=True)
class Choices:
    """What the user picked in the sidebar for the next question."""

    top_k: int
    top_n: int
    reranker: str  # a label from reranker_options()
    strategy: str
    llm_model: str
    retrieval: str = "dense"  # dense | bm25 | hybrid


@st.cache_resource(show_spinner="Loading the embedding model…")
def _embedder(key: str, _settings: Settings) -> Embedder:
    return load_embedder(_settings)


@st.cache_resource(show_spinner=False)
def _store(key: str, _settings: Settings, _embedder: Embedder) -> ChunkStore:
    return open_store(_settings, _embedder, create=True)


@st.cache_resource(show_spinner=False)
def _lexical(key: str, _store: ChunkStore, korean: str, stemming: str) -> LexicalIndex:
    return LexicalIndex(_store, korean=korean, stemming=stemming)


@st.cache_resource(show_spinner="Loading the reranker…")
def _reranker(key: str, _settings: Settings) -> Reranker:
    # Shared by every session, and so is its score cache (a question asked again, the Compare view
    # after a plain answer, another top-n: known pairs are not scored again).
    return load_configured_reranker(_settings).with_cache(ScoreCache())


@st.cache_resource(show_spinner="Loading the LLM…")
def _generator(key: str, _settings: Settings) -> Generator:
    return load_generator(_settings)


def _embedder_key(settings: Settings) -> str:
    # only the language warning reads it
    return settings.embedder.model_dump_json(exclude={"languages"})


def embedder(settings: Settings) -> Embedder:
    return _embedder(_embedder_key(settings), settings)


def _store_key(settings: Settings) -> str:
    return settings.store.model_dump_json() + settings.base_dir + _embedder_key(settings)


def store(settings: Settings) -> ChunkStore:
    return _store(_store_key(settings), settings, embedder(settings))


def forget_store() -> None:
    """Drop the cached store connection and what hangs on it, so the next use connects afresh.

    Called when the Chroma server was unreachable: once it is back (restarted,
    perhaps with its collections recreated), the next rerun reconnects instead of
    reusing a client and collection handles from before the outage.
    """
    _store.clear()
    _lexical.clear()
    _languages.clear()


def lexical(settings: Settings) -> LexicalIndex:
    """The BM25 index that follows this store (built on first use, rebuilt when the store
    changes).
    """
    r = settings.retrieval
    return _lexical(_store_key(settings), store(settings), r.korean_tokens, r.stemming)


@st.cache_data(show_spinner=False, max_entries=64)
def _languages(key: str, fingerprint: str, _store: ChunkStore) -> dict[str, float]:
    return collection_languages(_store)


def languages(settings: Settings) -> dict[str, float]:
    """The collection's main languages (share of characters), detected again only when its
    ledger changes.
    """
    chunks = store(settings)
    return _languages(_store_key(settings), chunks.fingerprint(), chunks)


def language_warning(
    settings: Settings, found: dict[str, float], subject: str = "the collection is"
) -> str | None:
    """Why the configured embedder cannot read the languages found, or None when it can (or is
    unknown).
    """
    return coverage_warning(
        settings.embedder.model,
        found,
        settings.embedder.languages,
        subject=subject,
        routes=settings.retrieval.modes_by_language,
    )


def reranker_options(settings: Settings) -> dict[str, RerankerSettings]:
    """Label -> reranker settings: the configured reranker first, then the configured
    alternatives.
    """
    base = settings.reranker
    options = {f"{base.kind}: {base.model}": base}
    for choice in base.alternatives:
        options.setdefault(
            f"{choice.kind}: {choice.model}",
            base.model_copy(update={"kind": choice.kind, "model": choice.model}),
        )
    return options


def reranker(settings: Settings, label: str) -> Reranker:
    chosen = reranker_options(settings)[label]
    return _reranker(chosen.model_dump_json(), settings.model_copy(update={"reranker": chosen}))


def generator(settings: Settings, llm_model: str) -> Generator:
    llm = settings.llm.model_copy(update={"model": llm_model})
    return _generator(llm.model_dump_json(), settings.model_copy(update={"llm": llm}))


def language_rerankers(settings: Settings) -> dict[str, Reranker | None]:
    """reranker.models_by_language, each loaded once and shared (with its score cache) like the
    main one.
    """
    base = settings.reranker
    routed = {}
    for language, model in base.models_by_language.items():
        if model == NO_RERANKER:
            routed[language] = None
            continue
        kind, spec = base.language_model(language)
        chosen = base.model_copy(update={"model": spec, "kind": kind, "models_by_language": {}})
        routed[language] = _reranker(
            chosen.model_dump_json(), settings.model_copy(update={"reranker": chosen})
        )
    return routed


def question_mode(settings: Settings, choices: Choices, question: str) -> str:
    """The first stage this question runs with: its language's route, or the sidebar's mode."""
    routes = language_routes(settings, choices.retrieval)
    return routes.get(question_language(question) or "", choices.retrieval)


def pipeline(
    settings: Settings,
    choices: Choices,
    *,
    rerank: bool,
    llm: Generator | None,
    rewrites: MutableMapping[tuple, str] | None = None,
) -> Pipeline:
    """A pipeline for one question; the reranker is loaded only when this question reranks.

    The configured reranker and first stage follow the question's language
    (reranker.models_by_language, retrieval.modes_by_language); a reranker or mode picked in the
    sidebar instead is used as picked.
    """
    configured_reranker = choices.reranker == next(iter(reranker_options(settings)))
    retriever = Retriever.from_settings(
        settings,
        embedder(settings),
        store(settings),
        lexical=lexical(settings),
        mode=choices.retrieval,
    )
    return Pipeline.from_settings(
        settings,
        retriever=retriever,
        reranker=reranker(settings, choices.reranker) if rerank else None,
        rerankers_by_language=language_rerankers(settings)
        if rerank and configured_reranker
        else {},
        generator=llm,
        top_k=choices.top_k,
        top_n=choices.top_n,
        strategy=choices.strategy,
        rewrites=rewrites,
    )


def is_offline_profile(settings: Settings) -> list[str]:
    """What runs on demo models: "packaged embedder", "packaged reranker", "local LLM" (empty
    for production).
    """
    reasons = []
    if settings.embedder.model.startswith("pkg:"):
        reasons.append("packaged embedder")
    if settings.reranker.model.startswith(("pkg:", "shipped:")):
        reasons.append("packaged reranker")
    if settings.llm.base_url.strip() == "":
        reasons.append("local LLM")
    return reasons


# --- documents ------------------------------------------------------------------------------


def documents(settings: Settings) -> list[FileRecord]:
    """The files in the collection, newest first."""
    records = store(settings).file_records().values()
    return sorted(records, key=lambda r: r.ingest_time, reverse=True)


def remove_document(settings: Settings, source: str) -> None:
    """Delete a file's chunks and ledger entry; an uploaded copy is deleted too, so it does not
    come back.
    """
    store(settings).remove_file(source)
    uploads = settings.resolve_path(settings.ui.upload_dir)
    path = Path(source)
    if path.parent == uploads and path.is_file():
        path.unlink()
