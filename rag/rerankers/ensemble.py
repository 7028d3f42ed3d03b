"""A reranker that adds the logits of other rerankers, each times its weight.

A small cross-encoder and the lexical reranker (:mod:`rag.rerankers.lexical`) are wrong in
different places: the first reads meaning and misses a sentence that repeats the question's
words, the second the other way round. Both give a logit per (question, passage), so their
weighted sum is a logit too, and its sigmoid is the shown score. The members and their weights
are a model folder's ``ensemble.json``::

    {"format": "rag-ensemble-1",
     "members": [{"kind": "cross-encoder", "model": "shipped:minilm-en", "weight": 1.0},
                 {"kind": "lexical", "model": "shipped:lexical-en", "weight": 1.0}]}

Each member loads with the ensemble's options (batch size, max_length, device...) and its
kind's default backend. The weights of the shipped one were chosen on validation articles
(guides/evaluation.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from rag.choices import KINDS
from rag.models import ModelLoadError, resolve_model
from rag.rerankers.base import Reranker
from rag.rerankers.options import RerankerOptions
from rag.rerankers.reading import read_format_file

KIND = "ensemble"
TABLE_FILE = "ensemble.json"
FORMAT = "rag-ensemble-1"


class EnsembleReranker(Reranker):
    """Scores each pair by the weighted sum of its members' raw scores."""

    kind = KIND

    def __init__(
        self,
        members: Sequence[tuple[Reranker, float]],
        *,
        name: str,
        batch_size: int,
        max_length: int,
        normalize: str,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0][0]
        super().__init__(
            name=name,
            device=first.device,
            dtype=first.dtype,
            backend="python",  # its own code; each member's is in describe()
            batch_size=batch_size,
            max_length=max_length,
            normalize=normalize,
        )
        self.members = list(members)
        self.long_passages = first.long_passages

    def describe(self) -> str:
        parts = " + ".join(f"{w:g} x {m.kind} {m.name}" for m, w in self.members)
        return f"{self.kind}: {self.name} ({self.device}: {parts})"

    def score_pairs(self, query: str, passages: Sequence[str]) -> tuple[list[float], list[bool]]:
        total = [0.0] * len(passages)
        cut = [False] * len(passages)
        for member, weight in self.members:
            raw, truncated = member.score_pairs(query, passages)
            total = [t + weight * float(r) for t, r in zip(total, raw)]
            cut = [a or bool(b) for a, b in zip(cut, truncated)]
        return total, cut


def read_members(path: Path) -> list[tuple[str, str, float]]:
    """(kind, model, weight) of each member in ``path``; ValueError names the file and the
    problem."""
    data = read_format_file(path, FORMAT, "an ensemble")
    members = data.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError(f"{path}: members must be a non-empty list")
    found = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or set(m) != {"kind", "model", "weight"}:
            raise ValueError(f"{path}: member {i} must have exactly kind, model and weight")
        if m["kind"] not in KINDS or m["kind"] == KIND:
            valid = ", ".join(k for k in KINDS if k != KIND)
            raise ValueError(f"{path}: member {i} kind {m['kind']!r}; valid: {valid}")
        if not isinstance(m["weight"], int | float) or isinstance(m["weight"], bool):
            raise ValueError(f"{path}: member {i} weight {m['weight']!r} is not a number")
        found.append((m["kind"], str(m["model"]), float(m["weight"])))
    return found


def load_ensemble_reranker(
    options: RerankerOptions, load_member: Callable[[str, RerankerOptions], Reranker]
) -> EnsembleReranker:
    """The folder ``options.model`` names; ``load_member(kind, options)`` loads each member
    (the registry's ``load_reranker``)."""
    location = Path(resolve_model(options.model).location)
    path = location / TABLE_FILE
    if not path.is_file():
        raise ModelLoadError(f"{options.model}: no {TABLE_FILE} in {location}")
    try:
        members = read_members(path)
    except ValueError as exc:
        raise ModelLoadError(f"{options.model}: {exc}") from None
    loaded = [
        (load_member(kind, dataclasses.replace(options, model=model)), weight)
        for kind, model, weight in members
    ]
    return EnsembleReranker(
        loaded,
        name=options.model,
        batch_size=options.batch_size,
        max_length=options.max_length,
        normalize=options.normalize,
    )
