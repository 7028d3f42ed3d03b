"""Labelled data for evaluation and fine-tuning, read from the three formats users bring.

* SQuAD v1.1 JSON: one passage per paragraph; each question's gold passage is the
  paragraph it was written on; its answers are the gold answers.
* CSV with columns question, answer, doc_id, doc (the ko-reranker evaluation
  format): the row's doc is the question's gold passage; rows sharing a doc_id
  share one passage.
* JSONL of {"query": ..., "pos": [...], "neg": [...]} groups (the FlagEmbedding
  format): ranking-only data, no corpus; one JSON object per line.

Every problem is reported as ``DatasetError`` naming the file (and line or row)
and what is wrong, before any model is loaded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CSV_COLUMNS = ("question", "answer", "doc_id", "doc")
T = TypeVar("T")


class DatasetError(ValueError):
    """A data file is missing or not in the expected format."""


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    gold: frozenset[str]
    answers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """A query with passages that answer it (pos) and passages that do not (neg)."""

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"query": self.query, "pos": list(self.pos), "neg": list(self.neg)}, ensure_ascii=False
        )


@dataclass(frozen=True)
class Corpus:
    """Passages plus questions whose gold ids point into them."""

    passages: list[Passage]
    queries: list[Query]
    name: str  # the format, used in the evaluation collection's name

    def groups(self, *, negatives: int, seed: int) -> list[Group]:
        """Training groups: the gold passage as pos, ``negatives`` random other passages as neg.

        Negatives come from the same title first (they share vocabulary with the
        question, so they are harder than random ones), topped up from the rest.
        """
        if negatives < 0:
            raise ValueError(f"negatives = {negatives}: must be 0 or more")
        rng = random.Random(seed)
        by_id = {p.id: p for p in self.passages}
        by_title: dict[str, list[Passage]] = {}
        for p in self.passages:
            by_title.setdefault(p.title, []).append(p)
        groups = []
        for query in self.queries:
            pos = [by_id[g] for g in sorted(query.gold)]
            near = [p for p in by_title[pos[0].title] if p.id not in query.gold]
            picked = rng.sample(near, min(negatives, len(near)))
            if len(picked) < negatives:
                far = [
                    p for p in self.passages if p.id not in query.gold and p.title != pos[0].title
                ]
                picked += rng.sample(far, min(negatives - len(picked), len(far)))
            groups.append(
                Group(query.text, tuple(p.text for p in pos), tuple(p.text for p in picked))
            )
        return groups


def passage_id(title: str, index: int | str, text: str) -> str:
    return hashlib.sha256(f"{title}\n{index}\n{text}".encode()).hexdigest()[:32]


def parse_span(value: str) -> slice:
    """'N' (the first N) or 'A:B' (A inclusive, B exclusive, 0-based; either side may be empty)."""
    text = value.strip()
    try:
        if ":" not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return slice(0, count)
        start_text, end_text = text.split(":", 1)
        start = int(start_text) if start_text.strip() else 0
        end = int(end_text) if end_text.strip() else None
        if start < 0 or (end is not None and end <= start):
            raise ValueError
        return slice(start, end)
    except ValueError:
        raise ValueError(
            f"{value!r}: expected N (the first N) or A:B (from A up to, not including, B)"
        ) from None


def load_squad(path: Path, *, articles: slice | None = None) -> Corpus:
    """Passages (one per paragraph) and questions (gold = the paragraph each was written on)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        selected = data[articles] if articles is not None else data
        passages: list[Passage] = []
        queries: list[Query] = []
        for article in selected:
            for index, paragraph in enumerate(article["paragraphs"]):
                pid = passage_id(article["title"], index, paragraph["context"])
                passages.append(Passage(pid, article["title"], paragraph["context"]))
                queries += [
                    Query(
                        qa["id"],
                        qa["question"],
                        frozenset({pid}),
                        tuple(a["text"] for a in qa.get("answers", ())),
                    )
                    for qa in paragraph["qas"]
                ]
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not SQuAD v1.1 JSON ({type(exc).__name__}: {exc})") from None
    if not queries:
        where = (
            f" in articles {articles.start}:{articles.stop if articles.stop is not None else ''}"
            if articles
            else ""
        )
        raise DatasetError(f"{path}: no questions found{where} (the file has {len(data)} articles)")
    return Corpus(passages, queries, "squad")


def load_csv(path: Path) -> Corpus:
    """The evaluation CSV: question, answer, doc_id, doc (extra columns are ignored)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise DatasetError(
                    f"{path}: missing column(s) {', '.join(missing)}; expected "
                    f"{', '.join(CSV_COLUMNS)}"
                    f" (found: {', '.join(reader.fieldnames or ()) or 'no header'})"
                )
            passages: dict[str, Passage] = {}
            queries: list[Query] = []
            for row_number, row in enumerate(reader, start=2):
                question, doc_id, doc = (
                    (row["question"] or "").strip(),
                    (row["doc_id"] or "").strip(),
                    row["doc"] or "",
                )
                if not question or not doc_id or not doc.strip():
                    raise DatasetError(
                        f"{path}, row {row_number}: question, doc_id and doc must not be empty"
                    )
                pid = passage_id("csv", doc_id, "")
                known = passages.get(pid)
                if known is not None and known.text != doc:
                    raise DatasetError(
                        f"{path}, row {row_number}: doc_id {doc_id!r} has two different docs"
                    )
                passages[pid] = Passage(pid, doc_id, doc)
                answer = (row["answer"] or "").strip()
                queries.append(
                    Query(
                        f"row-{row_number}", question, frozenset({pid}), (answer,) if answer else ()
                    )
                )
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    if not queries:
        raise DatasetError(f"{path}: no rows")
    return Corpus(list(passages.values()), queries, "csv")


def load_groups(path: Path) -> list[Group]:
    """JSONL groups: every line an object with a query string, a non-empty pos list and a neg
    list.
    """
    groups: list[Group] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}, line {number}: expected an object with query, pos and neg")
        query, pos, neg = record.get("query"), record.get("pos"), record.get("neg", [])
        if not isinstance(query, str) or not query.strip():
            raise DatasetError(f"{path}, line {number}: 'query' must be a non-empty string")
        for key, value in (("pos", pos), ("neg", neg)):
            if not isinstance(value, list) or not all(
                isinstance(v, str) and v.strip() for v in value
            ):
                raise DatasetError(
                    f"{path}, line {number}: {key!r} must be a list of non-empty strings"
                )
        if not pos:
            raise DatasetError(
                f"{path}, line {number}: 'pos' is empty; each query needs a passage that answers it"
            )
        groups.append(Group(query, tuple(pos), tuple(neg)))
    if not groups:
        raise DatasetError(f"{path}: no groups (expected one JSON object per line)")
    return groups


def corpus_from_groups(groups: Sequence[Group]) -> Corpus:
    """Groups as a retrieval set: every pos and neg text is a passage, each query's gold are its
    pos.

    Turns a reranking set into a small first-stage benchmark (e.g. dense vs BM25 on Korean).
    """
    passages: dict[str, Passage] = {}
    queries = []
    for number, group in enumerate(groups, start=1):
        for text in (*group.pos, *group.neg):
            pid = passage_id("groups", 0, text)
            passages.setdefault(pid, Passage(pid, "groups", text))
        queries.append(
            Query(
                f"group-{number}",
                group.query,
                frozenset(passage_id("groups", 0, t) for t in group.pos),
            )
        )
    return Corpus(list(passages.values()), queries, "groups")


def write_groups(path: Path, groups: Iterable[Group]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for group in groups:
            handle.write(group.to_json() + "\n")
            count += 1
    return count


def split(items: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded (rest, held-out) split with round(fraction * n) held out (at least one, never
    all).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction = {fraction}: must be between 0 and 1")
    if len(items) < 2:
        raise ValueError(f"cannot split {len(items)} item(s): need at least 2")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = min(max(1, round(fraction * len(items))), len(items) - 1)
    held_ids = set(order[:held])
    return (
        [x for i, x in enumerate(items) if i not in held_ids],
        [x for i, x in enumerate(items) if i in held_ids],
    )


def sample(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """A seeded random sample of ``limit`` items, queries or groups (all of them when limit is
    None).
    """
    if limit is None or limit >= len(items):
        return list(items)
    return random.Random(seed).sample(list(items), limit)
