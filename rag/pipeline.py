"""question -> retrieve -> rerank -> reorder -> generate -> Answer with a Trace.

``build_pipeline(settings)`` does all heavy loading once; ``Pipeline.search``
runs the retrieval side (so retrieval results exist even if generation fails)
and ``Pipeline.answer`` the generation side. Per-call options (rerank on/off,
top_k, top_n, reorder strategy) are arguments, never state on the pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rag.citations import AnswerStream
from rag.common import check_int
from rag.config import Settings
from rag.embedder import Embedder, LocalEmbedder
from rag.evidence import find_evidence, scorer_for
from rag.followup import concat_query, llm_query, resolve_method
from rag.generate import (
    LENGTH,
    NO_ANSWER,
    NO_ANSWER_KO,
    GenerationError,
    Generator,
    build_generator,
    build_messages,
    parse_citations,
)
from rag.grounding import Grounding, grounding
from rag.languages import language_name, question_language
from rag.models import configure_threads, select_device
from rag.remote_embedder import EmbedEndpoint, load_remote_embedder
from rag.reorder import check_strategy, reorder
from rag.rerankers import RemoteEndpoint, Reranker, RerankerOptions, ScoreCache, load_reranker
from rag.rerankers.base import fuse_with_retrieval
from rag.retrieve import Retrieval, Retriever, check_mode
from rag.store import ChunkStore, check_embedded, connect
from rag.types import Answer, Candidate, Trace

logger = logging.getLogger(__name__)


def load_embedder(settings: Settings) -> Embedder:
    """The configured bi-encoder; every entry point loads it first, so torch's thread count is
    set here.
    """
    configure_threads()
    e = settings.embedder
    if e.kind == "remote":
        endpoint = EmbedEndpoint(
            url=e.url,
            api=e.api,
            api_key_env=e.api_key_env,
            timeout=e.timeout,
            max_retries=e.max_retries,
            concurrency=e.concurrency,
        )
        return load_remote_embedder(
            endpoint,
            model=e.model,
            batch_size=e.batch_size,
            tokenizer=e.tokenizer,
            max_tokens=e.max_tokens,
            query_prefix=e.query_prefix,
            passage_prefix=e.passage_prefix,
        )
    return LocalEmbedder.load(
        e.model,
        device=select_device(e.device),
        batch_size=e.batch_size,
        query_prefix=e.query_prefix,
        passage_prefix=e.passage_prefix,
    )


def check_store_files(settings: Settings) -> None:
    """An embedded store's files, checked before any model loads: a damaged store fails in a
    moment.
    """
    if settings.store.mode == "embedded":
        check_embedded(settings.resolve_path(settings.store.path))


def open_store(
    settings: Settings,
    embedder: Embedder,
    *,
    create: bool,
    reset: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ChunkStore:
    """Connect to Chroma as configured; ``reset`` drops the collection first."""
    s = settings.store
    environ = os.environ if environ is None else environ
    token = environ.get(s.token_env) if s.token_env else None
    client = connect(
        mode=s.mode,
        path=settings.resolve_path(s.path),
        host=s.host,
        port=s.port,
        ssl=s.ssl,
        token=token,
    )
    if reset:
        ChunkStore.drop(client, s.collection)
    return ChunkStore.open(
        client, s.collection, embedder=embedder.name, dimension=embedder.dimension, create=create
    )


def reranker_options(settings: Settings, *, model: str | None = None) -> RerankerOptions:
    """The configured reranker's options (another ``model`` with the same ones, if given)."""
    r = settings.reranker
    endpoint = (
        RemoteEndpoint(
            url=r.url,
            api=r.api,
            api_key_env=r.api_key_env,
            timeout=r.timeout,
            max_retries=r.max_retries,
        )
        if r.url != ""
        else None
    )
    return RerankerOptions(
        model=model if model is not None else r.model,
        device=r.device,
        dtype=r.dtype,
        batch_size=r.batch_size,
        batch_tokens=r.batch_tokens,
        max_length=r.max_length,
        normalize=r.normalize,
        long_passages=r.long_passages,
        romanize_hangul=r.romanize_hangul,
        endpoint=endpoint,
    )


def load_configured_reranker(
    settings: Settings, *, kind: str | None = None, model: str | None = None
) -> Reranker:
    """The configured reranker, or another kind/model with the same batch size, max_length, device,
    endpoint...

    The local kinds pick their device themselves (``select_device``); a remote
    reranker has none, so a GPU named in the config is not required here.
    """
    chosen = kind if kind is not None else settings.reranker.kind
    return load_reranker(
        chosen,
        reranker_options(settings, model=model),
        backend=settings.reranker.backend_for(chosen),
    )


# reranker.models_by_language value: questions in that language are not reranked
NO_RERANKER = "none"


def load_language_rerankers(settings: Settings) -> dict[str, Reranker | None]:
    """reranker.models_by_language loaded (the kind its ``[kind:]model`` names, else the
    configured one; the configured options), each with a cache.
    """
    r = settings.reranker
    loaded: dict[str, Reranker | None] = {}
    for language, spec in r.models_by_language.items():
        if spec == NO_RERANKER:
            loaded[language] = None
            continue
        kind, model = r.language_model(language)
        loaded[language] = load_configured_reranker(settings, kind=kind, model=model).with_cache(
            ScoreCache()
        )
    return loaded


def load_generator(settings: Settings, environ: Mapping[str, str] | None = None) -> Generator:
    g = settings.llm
    return build_generator(
        base_url=g.base_url,
        model=g.model,
        api_key_env=g.api_key_env,
        temperature=g.temperature,
        max_tokens=g.max_tokens,
        timeout=g.timeout,
        max_retries=g.max_retries,
        local_model=g.local_model,
        device=g.device,
        environ=os.environ if environ is None else environ,
    )


class FirstStage(Protocol):
    """What the pipeline needs of its first stage (:class:`rag.retrieve.Retriever`; a test may
    give a small fake)."""

    mode: str
    modes_by_language: Mapping[str, str]
    embedder: Embedder  # read by the "embedder" evidence scorer only

    def search(self, question: str, *, k: int, mode: str, also: str | None = None) -> Retrieval:
        """The top ``k`` (also fused with ``also``'s), the files left out and the stage's times."""
        ...

    def models(self, mode: str) -> dict[str, str]:
        """The models a search in ``mode`` runs, for the trace."""
        ...


@dataclass(frozen=True)
class Pipeline:
    """One question's way through the stages; built by :meth:`from_settings` (or
    :func:`build_pipeline`, which loads the components first)."""

    retriever: FirstStage
    reranker: Reranker | None
    generator: Generator | None
    top_k: int = 20
    top_n: int = 5
    reorder_strategy: str = "lost_in_the_middle"
    # reranker.retrieval_weight: the first stage's vote after reranking, fused by reciprocal rank
    # with retrieval.rrf_k
    retrieval_weight: float = 0.0
    rrf_k: int = 60
    # Per question language (ISO 639-1), another reranker (reranker.models_by_language); None for
    # a language: no reranker reads it well enough, so its questions keep the first stage's order.
    # (Another first stage per language is the retriever's: retrieval.modes_by_language.)
    rerankers_by_language: Mapping[str, Reranker | None] = dataclasses.field(default_factory=dict)
    follow_ups: str = "concat"  # llm | concat | off: what a follow-up searches for (rag.followup)
    # bigrams | embedder | reranker | off: how cited sentences are found (rag.evidence)
    evidence: str = "bigrams"
    # llm.max_sentences: the answer ends after this many sentences (0: when the LLM ends it)
    max_sentences: int = 0
    # llm.min_support: below it the answer is "not in the documents" (rag.grounding; 0: off)
    min_support: float = 0.0
    # llm.min_rerank_score: the same for the reranker's best score (0: off)
    min_rerank_score: float = 0.0
    # follow-ups the LLM made standalone, by (question, history): the two sides of a comparison
    # share one
    rewrites: MutableMapping[tuple, str] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        retriever: FirstStage,
        reranker: Reranker | None,
        generator: Generator | None,
        rerankers_by_language: Mapping[str, Reranker | None] | None = None,
        top_k: int | None = None,
        top_n: int | None = None,
        strategy: str | None = None,
        rewrites: MutableMapping[tuple, str] | None = None,
    ) -> Pipeline:
        """The pipeline of ``settings`` around components already loaded (the app shares them
        between sessions); ``top_k``, ``top_n`` and ``strategy`` replace the configured ones."""
        return cls(
            retriever=retriever,
            reranker=reranker,
            generator=generator,
            top_k=top_k if top_k is not None else settings.retrieval.top_k,
            top_n=top_n if top_n is not None else settings.reranker.top_n,
            reorder_strategy=strategy if strategy is not None else settings.reorder.strategy,
            retrieval_weight=settings.reranker.retrieval_weight,
            rrf_k=settings.retrieval.rrf_k,
            rerankers_by_language=dict(rerankers_by_language or {}),
            follow_ups=resolve_method(
                settings.retrieval.follow_ups, settings.llm.base_url.strip() != ""
            ),
            evidence=settings.llm.evidence,
            max_sentences=settings.llm.max_sentences,
            min_support=settings.llm.min_support,
            min_rerank_score=settings.llm.min_rerank_score,
            rewrites=rewrites,
        )

    def route(self, question: str) -> tuple[str | None, str, Reranker | None]:
        """The question's language if it has a route (else None), its first stage and its
        reranker.
        """
        routes = self.retriever.modes_by_language
        if not routes and not self.rerankers_by_language:
            return None, self.retriever.mode, self.reranker
        language = question_language(question)
        if language not in routes and language not in self.rerankers_by_language:
            return None, self.retriever.mode, self.reranker
        return (
            language,
            routes.get(language, self.retriever.mode),
            self.rerankers_by_language.get(language, self.reranker),
        )

    def search(
        self,
        question: str,
        *,
        rerank: bool = True,
        top_k: int | None = None,
        top_n: int | None = None,
        strategy: str | None = None,
        mode: str | None = None,
        on_stage: Callable[[str], None] | None = None,
        history: Sequence[tuple[str, str]] = (),
    ) -> Trace:
        """Retrieve, optionally rerank, keep top_n and reorder; the Trace holds every step.

        ``history`` holds earlier (question, answer) turns: a follow-up is made standalone before it
        is searched (``follow_ups``), and ``Trace.searched`` says what was searched. ``on_stage`` is
        told what starts, in words ("retrieving (hybrid)", "reranking 20 candidates with ..."), so
        that a page can show which stage is running."""
        asked = check_question(question)
        tell = on_stage if on_stage is not None else (lambda stage: None)
        if history and self.follow_ups != "off":
            tell("making the follow-up question standalone")
        question = self.standalone(asked, history)
        k = top_k if top_k is not None else self.top_k
        n = top_n if top_n is not None else self.top_n
        strategy = strategy if strategy is not None else self.reorder_strategy
        language, routed_mode, reranker = self.route(question)
        mode = mode if mode is not None else routed_mode
        _check_options(k, n, strategy, mode)
        unranked = (
            language is not None and language in self.rerankers_by_language and reranker is None
        )
        if rerank and reranker is None and not unranked:
            raise ValueError(
                "reranking was asked for but no reranker is loaded (reranker.enabled = false?)"
            )
        rerank = rerank and not unranked
        tell(f"retrieving {k} candidates ({mode})")
        # concat: the previous question + this one widens the first stage, fused with this one as
        # typed, and the reranker reads this one as typed (the concatenation confused it:
        # guides/answers.md, "Follow-up questions")
        widened = question != asked and self.follow_ups == "concat"
        found = self.retriever.search(question, k=k, mode=mode, also=asked if widened else None)
        timings = dict(found.timings)
        hits, hidden = found.hits, found.hidden
        retrieved = tuple(
            Candidate(chunk=c, retrieval_score=s, retrieval_rank=i, rank=i)
            for i, (c, s) in enumerate(hits, start=1)
        )
        ranked: Sequence[Candidate] = retrieved
        notes: list[str] = [_half_written_note(hidden)] if hidden else []
        if rerank and retrieved:
            tell(f"reranking {len(retrieved)} candidates with {reranker.name}")
            with _timed(timings, "rerank"):
                ranked, reused = reranker.rerank_counted(asked if widened else question, retrieved)
                ranked = fuse_with_retrieval(ranked, self.retrieval_weight, self.rrf_k)
            if reused:
                notes.append(
                    f"{reused} of {len(ranked)} reranker scores were reused from an earlier "
                    "question "
                    "(same question, same passage text)"
                )
            cut = sum(1 for c in ranked if c.truncated)
            if cut:
                read = (
                    "the window of each that matches the question best was read"
                    if reranker.long_passages == "best-window"
                    else "the first tokens of each were read"
                )
                notes.append(
                    f"{cut} of {len(ranked)} passages were longer than the reranker's max_length "
                    f"({reranker.max_length} tokens with the question): {read}"
                )
        with _timed(timings, "reorder"):
            context = reorder(list(ranked[:n]), strategy)
        if language is not None:
            notes.insert(
                0,
                f"{language_name(language)} question: {mode} first stage"
                + (f", reranker {reranker.name}" if rerank and reranker is not None else "")
                + (
                    f", not reranked (no reranker is configured for {language_name(language)}: "
                    "the first stage's order is kept)"
                    if unranked
                    else ""
                ),
            )
        return Trace(
            question=asked,
            rerank=rerank,
            retrieval=mode,
            retrieved=retrieved,
            reranked=tuple(ranked) if rerank else (),
            context=tuple(context),
            timings=timings,
            models=self.model_names(reranker if rerank else None, mode),
            notes=tuple(notes),
            language=language,
            searched=question if question != asked else None,
        )

    def standalone(self, question: str, history: Sequence[tuple[str, str]]) -> str:
        """What ``question`` searches for, given the earlier turns (itself when it needs none)."""
        if not history or self.follow_ups == "off":
            return question
        if self.follow_ups == "llm" and self.generator is not None:
            key = (question, tuple(history))
            if self.rewrites is not None and key in self.rewrites:
                return self.rewrites[key]  # the other side of a comparison rewrote it already

            def ask(messages: list[dict[str, str]]) -> str:
                return "".join(self.generator.stream(messages))

            try:
                rewritten = check_question(llm_query(question, history, ask))
                if self.rewrites is not None:
                    self.rewrites[key] = rewritten
                return rewritten
            # the answer will name the endpoint's failure
            except (GenerationError, ValueError) as exc:
                logger.info(
                    "the follow-up could not be rewritten (%s); the previous question is prepended",
                    exc,
                )
        return concat_query(question, history)

    def answer(
        self,
        trace: Trace,
        *,
        history: Sequence[tuple[str, str]] = (),
        on_token: Callable[[str], None] | None = None,
    ) -> Answer:
        """Generate from the trace's context; raises GenerationError naming the endpoint on
        failure.
        """
        if self.generator is None:
            raise ValueError("this pipeline was built without a generator")
        timings = dict(trace.timings)
        found = None
        if self.min_support > 0 or self.min_rerank_score > 0:
            with _timed(timings, "grounding"):
                found = grounding(trace.question, trace.context)
            reason = found.reason(self.min_support, self.min_rerank_score, len(trace.context))
            if reason is not None:
                return self.decline(trace, found, reason, timings, on_token)
        messages = build_messages(trace.question, trace.context, history)
        shaped = AnswerStream(len(trace.context))
        started = time.perf_counter()

        def show(text: str) -> None:
            if text and "first_token" not in timings:
                timings["first_token"] = time.perf_counter() - started
            if text and on_token is not None:
                on_token(text)

        pieces = self.generator.stream(messages)
        while True:
            try:
                show(shaped.feed(next(pieces)))
            except StopIteration as end:
                show(shaped.finish(cut=end.value == LENGTH))
                break
            if self.max_sentences and shaped.sentences() >= self.max_sentences:
                pieces.close()  # the local model stops generating; an endpoint's stream is closed
                shaped.stop()
                break
        timings["generate"] = time.perf_counter() - started
        text = shaped.shown.strip()
        notes = list(trace.notes) + answer_notes(shaped, len(trace.context))
        scorer = scorer_for(
            self.evidence,
            embedder=self.retriever.embedder,
            reranker=self.reranker if trace.rerank else None,
        )
        with _timed(timings, "evidence"):
            evidence = find_evidence(text, trace.context, scorer) if scorer is not None else ()
        return Answer(
            text=text,
            citations=parse_citations(text, trace.context),
            model=self.generator.name,
            trace=dataclasses.replace(trace, timings=timings, notes=tuple(notes)),
            unsupported_citations=tuple(shaped.removed),
            cut=shaped.dropped != "",
            evidence=evidence,
            support=None if found is None else round(found.support.score, 4),
        )

    def decline(
        self,
        trace: Trace,
        found: Grounding,
        reason: str,
        timings: dict[str, float],
        on_token: Callable[[str], None] | None,
    ) -> Answer:
        """The answer when the grounding check finds no place in the context that answers the
        question: "not in the documents" (in the question's language), the LLM not asked, the reason
        in the notes."""
        text = NO_ANSWER_KO if question_language(trace.question) == "ko" else NO_ANSWER
        if on_token is not None:
            on_token(text)
        return Answer(
            text=text,
            citations=(),
            model=self.generator.name,
            trace=dataclasses.replace(trace, timings=timings, notes=(*trace.notes, reason)),
            support=round(found.support.score, 4),
        )

    def ask(
        self,
        question: str,
        *,
        rerank: bool = True,
        on_token: Callable[[str], None] | None = None,
        **options: int | str | None,
    ) -> Answer:
        return self.answer(self.search(question, rerank=rerank, **options), on_token=on_token)

    def model_names(self, reranker: Reranker | None, mode: str) -> dict[str, str]:
        """What the trace shows as the models that ran: the embedder (unless BM25 alone retrieved),
        ``reranker`` (if one ran), the LLM."""
        names = self.retriever.models(mode)
        if reranker is not None:
            names["reranker"] = reranker.describe()
        if self.generator is not None:
            names["llm"] = self.generator.name
        return names


def build_pipeline(
    settings: Settings,
    *,
    reranker: bool = True,
    generator: bool = True,
    environ: Mapping[str, str] | None = None,
    create_store: bool = False,
) -> Pipeline:
    """Load every model once. ``reranker=False`` skips loading it (e.g. for ``--no-rerank``);
    ``create_store=True`` creates a missing collection instead of refusing it."""
    check_store_files(settings)
    embedder = load_embedder(settings)
    store = open_store(settings, embedder, create=create_store, environ=environ)
    wanted = reranker and settings.reranker.enabled
    return Pipeline.from_settings(
        settings,
        retriever=Retriever.from_settings(settings, embedder, store),
        reranker=load_configured_reranker(settings).with_cache(ScoreCache()) if wanted else None,
        rerankers_by_language=load_language_rerankers(settings) if wanted else {},
        generator=load_generator(settings, environ) if generator else None,
    )


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - started


# about 1,000 tokens; an embedder reads its own max (MiniLM the first 256, bge-m3 8,192)
MAX_QUESTION_CHARS = 4000


def check_question(question: str) -> str:
    """The question stripped; ValueError naming the problem when it is empty or over
    MAX_QUESTION_CHARS.

    Checked before any model runs (the command line checks it before loading them).
    """
    text = question.strip()
    if not text:
        raise ValueError("the question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise ValueError(
            f"the question is {len(text)} characters long; the limit is {MAX_QUESTION_CHARS} "
            "characters: shorten it, or ask about one part at a time"
        )
    return text


def answer_notes(shaped: AnswerStream, n_sources: int) -> list[str]:
    """What the trace says about the answer's text: citations that named no source, a cut ending."""
    notes = []
    if shaped.removed:
        cited = ", ".join(f"[{n}]" for n in shaped.removed)
        notes.append(
            f"the answer cited {cited}, but there {'is' if n_sources == 1 else 'are'} only "
            f"{n_sources} "
            f"source{'' if n_sources == 1 else 's'}: removed from the text (an invented citation)"
        )
    if shaped.dropped:
        notes.append(
            "the answer reached the token limit (llm.max_tokens); its unfinished last "
            f"sentence was left out: {shaped.dropped[:80]!r}"
        )
    return notes


def _half_written_note(hidden: Mapping[str, int]) -> str:
    names = ", ".join(Path(source).name for source in sorted(hidden)[:3]) + (
        ", ..." if len(hidden) > 3 else ""
    )
    files = "1 file is" if len(hidden) == 1 else f"{len(hidden)} files are"
    return (
        f"{files} half-written in the store ({names}): an ingest stopped before finishing, so "
        "their chunks are left "
        f"out of this answer; run python -m ingest again to finish"
    )


def _check_options(top_k: int, top_n: int, strategy: str, mode: str) -> None:
    """Per-call options are checked before any model runs, like the config's own values."""
    check_int("top_k", top_k, 1)
    check_int("top_n", top_n, 1)
    check_strategy(strategy)
    check_mode(mode)
