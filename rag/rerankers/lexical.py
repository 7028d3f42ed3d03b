"""A reranker that reads words, not a neural model: for languages no shipped model reads.

A question written from a paragraph repeats the words of one of its sentences. The first
stage (BM25) counts the question's words over the whole passage; this reranker also asks
whether one sentence holds them. Each (question, passage) pair gets three features, from the
same index terms BM25 uses (:func:`rag.lexical.tokenize`: Kiwi morphemes for Korean):

* ``sentence``: the largest share of the question's weight (the IDF of its distinct terms) that
  one sentence of the passage holds;
* ``bigrams``: the largest share of the question's adjacent term pairs that one sentence holds;
* ``passage``: BM25 of the whole passage, divided by the most the question could score, so that
  it lies in [0, 1).

The raw score is a logit, ``scale * (w_s * sentence + w_b * bigrams + w_p * passage) + bias``;
its sigmoid is the probability that the passage answers. The IDF table, the weights, the scale
and the bias are fitted on training data by ``python -m lab.finetune lexical`` and kept in a
model folder as ``lexical.json`` (``rag/shipped/lexical-ko``: KorQuAD 1.0 dev articles 0-89).
The weights were chosen on those articles; the result is measured on articles they never saw
(guides/evaluation.md). Scores depend on the pair alone, so the score cache holds for them.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag.lexical import tokenize
from rag.models import ModelLoadError, resolve_model
from rag.rerankers.base import Reranker
from rag.rerankers.options import RerankerOptions
from rag.rerankers.reading import read_format_file
from rag.sentences import split_sentences

KIND = "lexical"
TABLE_FILE = "lexical.json"
FORMAT = "rag-lexical-1"
FEATURES = ("sentence", "bigrams", "passage")


@dataclass(frozen=True)
class LexicalModel:
    """What ``lexical.json`` holds: term statistics of the training passages and the fitted
    weights."""

    document_frequency: dict[str, int]
    documents: int
    average_length: float
    weights: dict[str, float]
    scale: float = 1.0
    bias: float = 0.0
    korean: str = "morphemes"
    stemming: str = "english"
    k1: float = 1.5
    b: float = 0.75
    trained_on: str = ""
    _idf: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.documents < 1 or self.average_length <= 0:
            raise ValueError(
                f"documents = {self.documents} and average_length = {self.average_length}: "
                "both must be positive"
            )
        missing = [f for f in FEATURES if f not in self.weights]
        if missing or set(self.weights) - set(FEATURES):
            raise ValueError(f"weights must name exactly {', '.join(FEATURES)}, got {self.weights}")

    def idf(self, term: str) -> float:
        """BM25's IDF (bm25s' default, Lucene's): log(1 + (N - df + 0.5) / (df + 0.5)); a term no
        training passage held gets the largest."""
        value = self._idf.get(term)
        if value is None:
            df = self.document_frequency.get(term, 0)
            value = math.log(1 + (self.documents - df + 0.5) / (df + 0.5))
            self._idf[term] = value
        return value

    def tokens(self, text: str) -> list[str]:
        return tokenize(text, self.korean, self.stemming)

    def features(
        self, query_terms: Sequence[str], sentences: Sequence[Sequence[str]]
    ) -> list[float]:
        """The three features of one passage (its sentences' terms) for a question's terms."""
        distinct = list(dict.fromkeys(query_terms))
        if not distinct:
            return [0.0, 0.0, 0.0]
        weight = {t: self.idf(t) for t in distinct}
        total = sum(weight.values()) or 1.0
        pairs = set(zip(query_terms, query_terms[1:]))
        best_share = best_pairs = 0.0
        counts: Counter[str] = Counter()
        for terms in sentences:
            held = set(terms)
            best_share = max(best_share, sum(w for t, w in weight.items() if t in held) / total)
            if pairs:
                found = len(pairs & set(zip(terms, terms[1:])))
                best_pairs = max(best_pairs, found / len(pairs))
            counts.update(terms)
        length = sum(counts.values())
        norm = self.k1 * (1 - self.b + self.b * length / self.average_length)
        bm25 = sum(w * counts[t] * (self.k1 + 1) / (counts[t] + norm) for t, w in weight.items())
        return [best_share, best_pairs, bm25 / (total * (self.k1 + 1))]

    def combined(self, values: Sequence[float]) -> float:
        return sum(self.weights[f] * v for f, v in zip(FEATURES, values))

    def logit(self, values: Sequence[float]) -> float:
        return self.scale * self.combined(values) + self.bias

    def passage_terms(self, passage: str) -> tuple[tuple[str, ...], ...]:
        """The index terms of each sentence of ``passage``."""
        return _sentence_terms(passage, self.korean, self.stemming)

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "trained_on": self.trained_on,
            "tokens": {"korean": self.korean, "stemming": self.stemming},
            "bm25": {"k1": self.k1, "b": self.b},
            "weights": self.weights,
            "logit": {"scale": self.scale, "bias": self.bias},
            "documents": self.documents,
            "average_length": self.average_length,
            "document_frequency": dict(sorted(self.document_frequency.items())),
        }
        return json.dumps(data, ensure_ascii=False, indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> LexicalModel:
        """The model in ``path`` (a ``lexical.json``); ValueError names the file and what is
        wrong."""
        data = read_format_file(path, FORMAT, "a lexical reranker")
        try:
            df = data["document_frequency"]
            if not isinstance(df, dict) or not all(
                isinstance(v, int) and v >= 0 for v in df.values()
            ):
                raise TypeError("document_frequency must map terms to counts")
            return cls(
                document_frequency=df,
                documents=int(data["documents"]),
                average_length=float(data["average_length"]),
                weights={k: float(v) for k, v in data["weights"].items()},
                scale=float(data["logit"]["scale"]),
                bias=float(data["logit"]["bias"]),
                korean=str(data["tokens"]["korean"]),
                stemming=str(data["tokens"]["stemming"]),
                k1=float(data["bm25"]["k1"]),
                b=float(data["bm25"]["b"]),
                trained_on=str(data.get("trained_on", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: {type(exc).__name__}: {exc}") from None


# A passage comes back with many questions about its document: its terms are kept (Kiwi is
# most of the time a score takes).
@functools.lru_cache(maxsize=4096)
def _sentence_terms(passage: str, korean: str, stemming: str) -> tuple[tuple[str, ...], ...]:
    found = tuple(tuple(tokenize(s, korean, stemming)) for s in split_sentences(passage))
    return found or ((),)


class LexicalReranker(Reranker):
    """Scores each (question, passage) pair by :class:`LexicalModel`'s logit; runs in Python,
    no torch."""

    kind = KIND

    def __init__(
        self, model: LexicalModel, *, name: str, batch_size: int, max_length: int, normalize: str
    ) -> None:
        super().__init__(
            name=name,
            device="cpu",
            dtype="n/a",
            backend="python",
            batch_size=batch_size,
            max_length=max_length,
            normalize=normalize,
        )
        self.model = model

    def describe(self) -> str:
        return f"{self.kind}: {self.name} (cpu, python)"  # no weights, so no dtype

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        terms = self.model.tokens(query)
        scores = [
            self.model.logit(self.model.features(terms, self.model.passage_terms(p)))
            for p in passages
        ]
        # The whole passage is read, whatever its length: nothing is cut.
        return scores, [False] * len(passages)


def load_lexical_reranker(options: RerankerOptions) -> LexicalReranker:
    """The model folder ``options.model`` names (``shipped:lexical-ko`` or a directory with
    ``lexical.json``)."""
    location = Path(resolve_model(options.model).location)
    path = location / TABLE_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{options.model}: no {TABLE_FILE} in {location} (a lexical reranker is made by "
            "`python -m lab.finetune lexical`)"
        )
    try:
        model = LexicalModel.read(path)
    except ValueError as exc:
        raise ModelLoadError(f"{options.model}: {exc}") from None
    return LexicalReranker(
        model,
        name=options.model,
        batch_size=options.batch_size,
        max_length=options.max_length,
        normalize=options.normalize,
    )
