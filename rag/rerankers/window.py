"""Which part of a long passage a reranker reads: its beginning, or the window that matches the
question best.

A reranker reads at most ``max_length`` tokens of question + passage. Cutting the
passage after its first tokens ("head", what every cross-encoder library does) loses
the sentence that answers the question whenever it comes later, and for text a
tokenizer splits finely (Korean read by an English WordPiece vocabulary becomes
about three tokens a syllable) a 400-token budget holds only the first hundred
syllables of a paragraph. "best-window" reads instead the run of passage tokens,
as many as fit, that shares the most character bigrams with the question: a cheap
lexical look (no model, no language resources) that works the same for every
script. Training (``lab.finetune --long-passages``) and use (``reranker.long_passages``)
call the same function, so a model reads in use what it read when it learnt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rag.choices import LONG_PASSAGES

MODES = LONG_PASSAGES
# Below this many tokens of room the window is no better a read than the head; keep the head.
MIN_ROOM = 16


def check_mode(value: str) -> None:
    if value not in MODES:
        raise ValueError(f"long_passages must be one of {', '.join(MODES)}, got {value!r}")


def bigrams(text: str) -> list[str]:
    """Lower-cased character bigrams inside each alphanumeric run (a one-character run counts as
    itself).
    """
    grams: list[str] = []
    run: list[str] = []
    for ch in text.lower() + " ":
        if ch.isalnum():
            run.append(ch)
            continue
        if len(run) == 1:
            grams.append(run[0])
        grams.extend(run[i] + run[i + 1] for i in range(len(run) - 1))
        run = []
    return grams


def _gram_starts(text: str, wanted: set[str]) -> list[tuple[int, str]]:
    """(character position, gram) of every occurrence in ``text`` of a gram in ``wanted``."""
    low = text.lower()
    found = []
    for i, ch in enumerate(low):
        if not ch.isalnum():
            continue
        nxt = low[i + 1] if i + 1 < len(low) else ""
        if nxt.isalnum():
            if ch + nxt in wanted:
                found.append((i, ch + nxt))
        elif (i == 0 or not low[i - 1].isalnum()) and ch in wanted:
            found.append((i, ch))
    return found


def best_span(
    query: str, offsets: Sequence[tuple[int, int]], text: str, room: int
) -> tuple[int, int]:
    """Token indices [start, start + room) of the window of ``text`` sharing the most distinct
    bigrams with ``query``.

    ``offsets`` are the (start, end) characters of each token of ``text``. Of the
    windows that tie, the middle one of the first run of tied windows is taken, so
    the matched words sit inside the window rather than at its edge; a query that
    shares nothing keeps the head.
    """
    n = len(offsets)
    if n <= room:
        return 0, n
    wanted = set(bigrams(query))
    hits = _gram_starts(text, wanted) if wanted else []
    if not hits:
        return 0, room
    counts: Counter[str] = Counter()
    add = drop = 0  # next hit to enter / to leave the window
    best, best_starts = -1, [0]
    for start in range(n - room + 1):
        lo, hi = offsets[start][0], offsets[start + room - 1][1]
        while add < len(hits) and hits[add][0] + len(hits[add][1]) <= hi:
            counts[hits[add][1]] += 1
            add += 1
        while drop < add and hits[drop][0] < lo:
            counts[hits[drop][1]] -= 1
            if not counts[hits[drop][1]]:
                del counts[hits[drop][1]]
            drop += 1
        score = len(counts)
        if score > best:
            best, best_starts = score, [start]
        elif score == best and best_starts[-1] == start - 1:
            best_starts.append(start)
    start = best_starts[len(best_starts) // 2]
    return start, start + room


def fit_passage(tokenizer: Any, query: str, passage: str, *, max_length: int, mode: str) -> str:
    """``passage`` itself if the pair fits ``max_length`` or ``mode`` is "head"; else its best
    window as text.

    The window is cut at token boundaries of ``tokenizer`` and sized to the room the
    question and the special tokens leave, so the pair tokenised again fits (give or
    take a token at the cut, which the caller's truncation then trims).
    """
    return fit_passages(tokenizer, query, [passage], max_length=max_length, mode=mode)[0]


def fit_passages(
    tokenizer: Any, query: str, passages: Sequence[str], *, max_length: int, mode: str
) -> list[str]:
    """``fit_passage`` for each passage; the question is tokenised once."""
    if mode == "head" or not passages:
        return list(passages)
    query_len = len(tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
    room = max_length - query_len - tokenizer.num_special_tokens_to_add(pair=True)
    if room < MIN_ROOM:
        return list(passages)
    return [_window(tokenizer, query, passage, room) for passage in passages]


def _window(tokenizer: Any, query: str, passage: str, room: int) -> str:
    offsets = tokenizer(
        passage, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )["offset_mapping"]
    if len(offsets) <= room:
        return passage
    start, end = best_span(query, offsets, passage, room)
    return passage[offsets[start][0] : offsets[end - 1][1]]
