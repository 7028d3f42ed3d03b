"""Scores already computed are not computed again: a bounded cache any reranker can keep.

In the app the same (question, passage) pairs come back often: the question is
asked again with another top-n, chunk order or LLM, the Compare view is opened
after a plain answer, top-k grows from 20 to 30 (20 pairs known, 10 new). A
reranker's raw score for a pair depends on nothing else (not on the other
passages in the call), so it can be kept. The key is the question and a hash of
the passage text, so a chunk whose text changed on re-ingest is scored afresh;
one cache belongs to one loaded reranker, so model, max_length and backend are
fixed for it. Entries are evicted least recently used first.

Scores from a cache equal the fresh ones up to padding noise (a pair batched
with a longer one sees more pad positions: differences of ~1e-6 in the logit).
The rerankers hold a per-tokenizer lock while tokenising (``rag.models.tokenizer_lock``):
without it, sessions sharing one reranker set each other's truncation on the shared
fast tokenizer and could score a pair cut that should not be.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from rag.common import check_int

DEFAULT_PAIRS = 50_000  # about 10 MB of keys and floats


Compute = Callable[[str, Sequence[str]], tuple[list[float], list[bool]]]


class ScoreCache:
    """Raw scores and truncation flags per (question, passage text), least recently used out first.

    Thread-safe: the app shares one loaded reranker, and so its cache, between sessions.
    A :class:`~rag.rerankers.base.Reranker` given one (``with_cache``) asks its model only
    for the pairs the cache does not hold.
    """

    def __init__(self, *, max_pairs: int = DEFAULT_PAIRS) -> None:
        self.max_pairs = check_int("max_pairs", max_pairs, 1)
        self._scores: OrderedDict[tuple[str, bytes], tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._scores)

    def scores(
        self, query: str, passages: Sequence[str], compute: Compute
    ) -> tuple[list[float], list[bool], int]:
        """Raw scores and flags in passage order, and how many came from the cache;
        ``compute`` does the rest.
        """
        keys = [
            (query, hashlib.blake2b(p.encode("utf-8"), digest_size=16).digest()) for p in passages
        ]
        found: dict[int, tuple[float, bool]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._scores.get(key)
                if hit is not None:
                    self._scores.move_to_end(key)
                    found[i] = hit
        missing = [i for i in range(len(passages)) if i not in found]
        # each missing key -> its first passage: repeats are scored once
        first: dict[tuple[str, bytes], int] = {}
        for i in missing:
            first.setdefault(keys[i], i)
        if first:
            raw, flags = compute(query, [passages[i] for i in first.values()])
            fresh = {key: (float(r), bool(f)) for key, r, f in zip(first, raw, flags)}
            with self._lock:
                for key, value in fresh.items():
                    self._scores[key] = value
                    self._scores.move_to_end(key)
                while len(self._scores) > self.max_pairs:
                    self._scores.popitem(last=False)
            for i in missing:
                found[i] = fresh[keys[i]]
        reused = len(passages) - len(missing)
        return (
            [found[i][0] for i in range(len(passages))],
            [found[i][1] for i in range(len(passages))],
            reused,
        )
