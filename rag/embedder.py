"""Bi-encoders: sentence-transformers in this process (``embedder.kind = "local"``) or an
embedding server (``"remote"``, :mod:`rag.remote_embedder`), with the right query/passage
prefixes.

Some model families were trained with instructions in front of the text (e5:
"query: " / "passage: "; bge v1.5: an instruction on queries only). Using them
wrongly costs retrieval quality silently, so the prefixes come from, in order:
an explicit value in config.toml, the model's own saved prompts, the table of
known families below, and otherwise none.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from rag.common import check_int
from rag.models import load_error, resolve_model

logger = logging.getLogger(__name__)

AUTO = "auto"
QUERY_CACHE = 1024  # query vectors kept (384-1024 floats each: at most 4 MB)
_BGE_V15_QUERY = "Represent this sentence for searching relevant passages: "
# (glob on the lower-cased model id, query prefix, passage prefix)
KNOWN_PREFIXES: tuple[tuple[str, str, str], ...] = (
    (
        "*multilingual-e5-*-instruct*",
        "Instruct: Given a question, retrieve passages that answer it\nQuery: ",
        "",
    ),
    ("*e5-*", "query: ", "passage: "),
    ("*bge-*-en-v1.5*", _BGE_V15_QUERY, ""),
    ("*bge-*-zh-v1.5*", "为这个句子生成表示以用于检索相关文章：", ""),
)


def known_prefixes(model_id: str) -> tuple[str, str]:
    """(query, passage) prefixes of a known model family, or ("", "")."""
    name = model_id.lower()
    for pattern, query, passage in KNOWN_PREFIXES:
        if fnmatch.fnmatch(name, pattern):
            return query, passage
    return "", ""


class EmbedError(RuntimeError):
    """Embedding failed at inference time (a remote embedder's server refused or went away)."""


def auto_prefixes(
    spec: str, saved: dict[str, str], query_prefix: str, passage_prefix: str
) -> tuple[str, str]:
    """The (query, passage) prefixes: explicit values, else the model's saved prompts, else its
    known family's, else none."""
    family_q, family_p = known_prefixes(spec)
    query = query_prefix if query_prefix != AUTO else saved.get("query", family_q)
    passage = (
        passage_prefix
        if passage_prefix != AUTO
        else saved.get("document", saved.get("passage", family_p))
    )
    return query, passage


class Embedder(ABC):
    """Embeds queries and passages into normalised vectors (cosine = dot product).

    The shape every embedder shares: prefixes, the query cache and the chunking budget; a kind
    writes only :meth:`_encode` and says what it runs on (:class:`LocalEmbedder` in this
    process, :class:`rag.remote_embedder.RemoteEmbedder` on a server).
    """

    kind = "base"

    def __init__(
        self, *, name: str, query_prefix: str, passage_prefix: str, batch_size: int
    ) -> None:
        self.name = name
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.batch_size = check_int("embedder.batch_size", batch_size, 1)
        # Recent query vectors: the app embeds the same question again for the Compare view, another
        # top-k or reranker, or a question asked twice. Keyed by the text as embedded (prefix
        # included). Set once, when built (with_query_cache); 0 turns it off.
        self.query_cache = QUERY_CACHE
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._queries_lock = threading.Lock()

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of each vector."""

    @property
    @abstractmethod
    def max_seq_length(self) -> int:
        """Tokens of one input the model reads."""

    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The model's fast tokenizer: chunk sizes are counted in its tokens."""

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the model runs: a torch device, or a server's host:port."""

    def close(self) -> None:
        """Release what the embedder holds open (a remote one's connections)."""
        return None

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 vectors, one row per text, in order."""

    def passage_budget(self) -> int:
        """How many tokens of chunk text fit once the prefix and special tokens are added."""
        prefix = (
            len(self.tokenizer(self.passage_prefix, add_special_tokens=False)["input_ids"])
            if self.passage_prefix
            else 0
        )
        specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        return self.max_seq_length - prefix - specials

    def with_query_cache(self, size: int) -> Embedder:
        """This embedder, keeping the vectors of its last ``size`` queries (0: none; lab.evaluate
        and the benchmark time every query as asked for the first time); set once, when built,
        like a reranker's ``with_cache``."""
        self.query_cache = check_int("query_cache", size, 0)
        with self._queries_lock:
            self._queries.clear()
        return self

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        """One query's vector (read-only); the last ``query_cache`` queries are not embedded
        again.
        """
        key = self.query_prefix + text
        if self.query_cache <= 0:
            return self._encode([key])[0]
        with self._queries_lock:
            vector = self._queries.get(key)
            if vector is not None:
                self._queries.move_to_end(key)
                return vector
        vector = self._encode([key])[0]
        vector.flags.writeable = False
        with self._queries_lock:
            self._queries[key] = vector
            while len(self._queries) > self.query_cache:
                self._queries.popitem(last=False)
        return vector

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts])


class LocalEmbedder(Embedder):
    """A sentence-transformers bi-encoder in this process."""

    kind = "local"

    def __init__(
        self, model: Any, *, name: str, query_prefix: str, passage_prefix: str, batch_size: int
    ) -> None:
        super().__init__(
            name=name,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            batch_size=batch_size,
        )
        self.model = model

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        device: str,
        batch_size: int,
        query_prefix: str = AUTO,
        passage_prefix: str = AUTO,
    ) -> LocalEmbedder:
        from sentence_transformers import SentenceTransformer

        location = resolve_model(spec).location
        try:
            model = SentenceTransformer(location, device=device)
        except (OSError, ValueError) as exc:
            raise load_error(f"embedding model {spec!r}", location, exc) from exc
        saved = getattr(model, "prompts", None) or {}
        query, passage = auto_prefixes(spec, saved, query_prefix, passage_prefix)
        logger.info(
            "embedder %s on %s (query prefix %r, passage prefix %r)", spec, device, query, passage
        )
        return cls(
            model, name=spec, query_prefix=query, passage_prefix=passage, batch_size=batch_size
        )

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def device(self) -> str:
        return str(self.model.device)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
