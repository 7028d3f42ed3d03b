"""Text -> chunks the embedder can read whole: token-aware, sentence-aware, Korean- and CJK-aware.

Sizes are counted in tokens of the embedder's own tokenizer (without special
tokens), because that is what gets truncated. Chunks are filled with whole
paragraphs, then whole sentences; only a sentence longer than a chunk is cut,
at token boundaries that fall between characters of the original text. Each
chunk is an exact substring of the text it came from, so what a user sees
quoted is what the document says. Everything here is a pure function.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag.sentences import sentence_spans
from rag.types import Document

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- token-aware packing


@dataclass(frozen=True)
class _Sentence:
    start: int
    end: int
    n_tokens: int
    # absolute character spans; only for sentences cut by tokens
    offsets: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class _Span:
    """Tokens [lo, hi) of one sentence; the whole sentence when lo == 0 and hi == n_tokens."""

    sentence: _Sentence
    lo: int
    hi: int

    @property
    def n_tokens(self) -> int:
        return self.hi - self.lo

    @property
    def whole(self) -> bool:
        return self.lo == 0 and self.hi == self.sentence.n_tokens

    @property
    def start(self) -> int:
        return self.sentence.start if self.lo == 0 else self.sentence.offsets[self.lo][0]

    @property
    def end(self) -> int:
        if self.hi == self.sentence.n_tokens:
            return self.sentence.end
        return self.sentence.offsets[self.hi - 1][1]


def _can_cut(offsets: Sequence[tuple[int, int]], j: int) -> bool:
    """A cut before token j falls between characters: the tokens around it share no character.

    (BERT's uncased tokenizer splits one Hangul syllable into several jamo
    tokens that all map to the same character; cutting there would split it.)
    """
    return j <= 0 or j >= len(offsets) or offsets[j - 1][1] <= offsets[j][0]


def _cut_end(offsets: Sequence[tuple[int, int]], lo: int, floor: int, limit: int) -> int | None:
    """Where a window starting at token ``lo`` ends: the furthest cut in (floor, limit].

    A cut at a space (a gap between tokens) is preferred when it keeps at
    least half the window, so words stay whole where possible.
    """
    if limit >= len(offsets):
        return len(offsets)
    first_valid = None
    for j in range(limit, floor, -1):
        if not _can_cut(offsets, j):
            continue
        if first_valid is None:
            first_valid = j
        if (j - lo) * 2 < limit - lo:
            break
        if _gap(offsets, j):
            return j
    return first_valid


def _gap(offsets: Sequence[tuple[int, int]], k: int) -> bool:
    """A space (or the start) before token k: cutting there keeps words whole."""
    return k == 0 or offsets[k - 1][1] < offsets[k][0]


def _cut_start(offsets: Sequence[tuple[int, int]], lo: int, j: int, hi: int) -> int:
    """Where an overlap taken from tokens [lo, hi) starts: at token j or later, hi meaning none.

    The first space at or after j keeps words whole. In spaced text with no
    space left there, no overlap beats one that starts mid-word (". Last
    one"); text without spaces (CJK, one long word) starts at the first cut
    between characters.
    """
    for k in range(j, hi):
        if _gap(offsets, k):
            return k
    if any(_gap(offsets, k) for k in range(lo + 1, j)):
        return hi
    while j < hi and not _can_cut(offsets, j):
        j += 1
    return j


def _carry(spans: list[_Span], budget: int) -> list[_Span]:
    """The overlap that starts the next chunk: whole trailing sentences within ``budget`` tokens,
    or, when the chunk ends inside a cut sentence, that sentence's last ``budget`` tokens."""
    taken: list[_Span] = []
    used = 0
    for span in reversed(spans):
        if span.whole:
            if used + span.n_tokens > budget:
                break
            taken.append(span)
            used += span.n_tokens
            continue
        if not taken and budget > 0:
            lo = _cut_start(span.sentence.offsets, span.lo, max(span.lo, span.hi - budget), span.hi)
            if lo < span.hi:
                taken.append(_Span(span.sentence, lo, span.hi))
        break
    return taken[::-1]


class _Packer:
    """Greedy packing of one text's sentences into chunks (a fresh instance per text)."""

    def __init__(self, size: int, overlap: int) -> None:
        self.size, self.overlap = size, overlap
        self.chunks: list[list[_Span]] = []
        self.current: list[_Span] = []
        self.carried = 0  # how many spans at the front of ``current`` repeat the previous chunk

    @property
    def used(self) -> int:
        return sum(span.n_tokens for span in self.current)

    def close(self, room: int) -> None:
        """End the current chunk if it has new content; the next starts with an overlap
        leaving ``room``.
        """
        if len(self.current) > self.carried:
            self.chunks.append(self.current)
        self.current = _carry(self.current, min(self.overlap, self.size - room))
        self.carried = len(self.current)

    def finish(self) -> list[list[_Span]]:
        if len(self.current) > self.carried:
            self.chunks.append(self.current)
        return self.chunks

    def add_paragraph(self, sentences: list[_Sentence]) -> None:
        """Whole paragraph if it fits (in this chunk or a fresh one), else sentence by sentence.

        A paragraph that fits a fresh chunk starts one rather than being split,
        even when that leaves less room for the overlap: a chunk that holds a
        whole paragraph retrieves and reads better than one cut across two.
        """
        total = sum(s.n_tokens for s in sentences)
        if total <= self.size:
            if self.used + total > self.size:
                self.close(total)
            self.current.extend(_Span(s, 0, s.n_tokens) for s in sentences)
            return
        for sentence in sentences:
            if sentence.n_tokens > self.size:
                self.add_long(sentence)
                continue
            if self.used + sentence.n_tokens > self.size:
                self.close(sentence.n_tokens)
            self.current.append(_Span(sentence, 0, sentence.n_tokens))

    def add_long(self, sentence: _Sentence) -> None:
        """Cut a sentence longer than a chunk into token windows overlapping by ``overlap``
        tokens.
        """
        offsets = sentence.offsets
        if len(self.current) > self.carried:
            self.close(0)
        end = _cut_end(offsets, 0, 0, self.size - self.used)
        if end is None:  # the carried overlap leaves no room for a whole character: drop it
            self.current, self.carried = [], 0
            end = self._window_end(offsets, 0, 0)
        self.current.append(_Span(sentence, 0, end))
        lo = 0
        while end < sentence.n_tokens:
            self.chunks.append(self.current)
            lo = _cut_start(offsets, lo, max(end - self.overlap, lo + 1), end)
            new_end = _cut_end(offsets, lo, end, lo + self.size)
            if new_end is None:  # overlap leaves no room for a whole character: no overlap here
                lo, new_end = end, self._window_end(offsets, end, end)
            self.current, self.carried, end = [_Span(sentence, lo, new_end)], 0, new_end

    def _window_end(self, offsets: Sequence[tuple[int, int]], lo: int, floor: int) -> int:
        end = _cut_end(offsets, lo, floor, lo + self.size)
        if end is None:
            raise ValueError(
                f"size={self.size} is too small: one character of the text needs more tokens"
            )
        return end


def _validate(size: int, overlap: int, tokenizer: Any) -> None:
    if size <= 0:
        raise ValueError(f"chunk size must be > 0 tokens, got size={size!r}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be >= 0 and < size={size}, got overlap={overlap!r}")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"chunking needs a fast tokenizer (offset mappings); got {type(tokenizer).__name__}"
        )


def _encode(tokenizer: Any, texts: list[str], *, offsets: bool) -> list[Any]:
    """Token ids (or offset mappings) of many texts in one batched call, without special tokens."""
    if not texts:
        return []
    key = "offset_mapping" if offsets else "input_ids"
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=offsets,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return list(encoded[key])


def _sentences(tokenizer: Any, texts: Sequence[str], size: int) -> list[list[list[_Sentence]]]:
    """For each text, its paragraphs of tokenised sentences (offsets only where a sentence must
    be cut).
    """
    layouts = [sentence_spans(text) for text in texts]
    flat = [
        (t, s, e) for t, paragraphs in enumerate(layouts) for para in paragraphs for s, e in para
    ]
    strings = [texts[t][s:e] for t, s, e in flat]
    counts = [len(ids) for ids in _encode(tokenizer, strings, offsets=False)]
    long = [i for i, n in enumerate(counts) if n > size]
    long_offsets = dict(zip(long, _encode(tokenizer, [strings[i] for i in long], offsets=True)))
    result: list[list[list[_Sentence]]] = []
    i = 0
    for paragraphs in layouts:
        result.append([])
        for para in paragraphs:
            sentences = []
            for start, end in para:
                shifted = tuple((start + a, start + b) for a, b in long_offsets.get(i, ()))
                sentences.append(_Sentence(start, end, counts[i], shifted))
                i += 1
            result[-1].append(sentences)
    return result


def _pack(text: str, paragraphs: list[list[_Sentence]], size: int, overlap: int) -> list[str]:
    packer = _Packer(size, overlap)
    for sentences in paragraphs:
        packer.add_paragraph(sentences)
    return [text[spans[0].start : spans[-1].end] for spans in packer.finish()]


def _fit(
    tokenizer: Any, pieces: list[tuple[int, str]], size: int, overlap: int
) -> list[tuple[int, str]]:
    """Re-cut the rare (owner, chunk) whose real token count exceeds ``size``.

    Counts are summed per sentence; with WordPiece that is exact at spaces,
    but a text cut inside a word, or a BPE tokenizer across a sentence
    boundary, can tokenise differently on its own. Checking every chunk in
    one batched call keeps the size guarantee for any tokenizer.
    """
    for _ in range(3):
        counts = [
            len(ids) for ids in _encode(tokenizer, [chunk for _, chunk in pieces], offsets=False)
        ]
        if all(n <= size for n in counts):
            return pieces
        fitted: list[tuple[int, str]] = []
        for (owner, chunk), n in zip(pieces, counts):
            if n <= size:
                fitted.append((owner, chunk))
                continue
            logger.debug("re-cutting a chunk of %d tokens (size %d)", n, size)
            offsets = tuple(tuple(o) for o in _encode(tokenizer, [chunk], offsets=True)[0])
            whole = _Sentence(0, len(chunk), len(offsets), offsets)
            fitted.extend((owner, piece) for piece in _pack(chunk, [[whole]], size, overlap))
        pieces = fitted
    raise ValueError(f"could not fit chunks into size={size} tokens with this tokenizer")


def _chunk_texts(
    texts: Sequence[str], *, tokenizer: Any, size: int, overlap: int
) -> list[tuple[int, str]]:
    """(index of the text, chunk) for many texts, with one batched tokenizer call for all their
    sentences.
    """
    _validate(size, overlap, tokenizer)
    layouts = _sentences(tokenizer, texts, size)
    pieces = [
        (t, chunk)
        for t, (text, paragraphs) in enumerate(zip(texts, layouts))
        for chunk in _pack(text, paragraphs, size, overlap)
    ]
    return _fit(tokenizer, pieces, size, overlap)


def chunk_text(text: str, *, tokenizer: Any, size: int, overlap: int) -> list[str]:
    """Chunks of at most ``size`` tokens, consecutive ones sharing about ``overlap`` tokens.

    Whole paragraphs first, then whole sentences; a sentence longer than
    ``size`` is cut at token boundaries between characters. Every chunk is a
    non-empty substring of ``text``; the result is deterministic.
    """
    return [
        chunk for _, chunk in _chunk_texts([text], tokenizer=tokenizer, size=size, overlap=overlap)
    ]


def chunk_document(
    doc: Document, *, tokenizer: Any, size: int, overlap: int
) -> list[tuple[int | None, str]]:
    """(page number, chunk) in document order; pages are chunked separately so citations keep a
    page.
    """
    texts = [page.text for page in doc.pages]
    pieces = _chunk_texts(texts, tokenizer=tokenizer, size=size, overlap=overlap)
    return [(doc.pages[t].number, chunk) for t, chunk in pieces]
