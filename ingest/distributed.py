"""Distributed ingestion: read, load, chunk and embed as a Ray Data pipeline on a Ray cluster.

``python -m ingest PATH --ray ADDRESS`` (or ``ingest.ray_address``) connects to the cluster at
ADDRESS and hands it the files the plan says to write: a ``map`` reads each file once, hashes
those bytes, loads and chunks them (:func:`ingest.prepare.prepare_file`, the same code as on
one machine), and a ``map_batches`` over a pool of embedding actors
(``ingest.ray_embedders`` of them, ``ingest.ray_gpus`` GPUs each) embeds the chunks with the
configured embedder (local weights on the actor, or a remote embedding server). The results
come back in the order given (``preserve_order``), and this process writes them into the
store file by file with the ledger rules of :func:`ingest.runner.ingest`: the cluster never
writes, so crash safety, idempotence and "old chunks stay until the new ones are embedded"
hold as on one machine.

The cluster must see the files at the same paths (a shared file system) and run the same
code and models (the same image or virtual environment). Ray is an optional extra:
``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ingest.prepare import Chunking, Failure, Prepared, prepare_file
from ingest.runner import ChunkProgress, Embedded, Stages
from rag.config import Settings

logger = logging.getLogger(__name__)

FILES_PER_BATCH = 8  # files handed to an embedding actor at a time


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def _prepare_row(row: dict[str, Any], how: Chunking) -> dict[str, Any]:
    """One file, read and chunked on a cluster node: a row of plain columns."""
    item = prepare_file(Path(row["source"]), how)
    if isinstance(item, Failure):
        return {
            "source": item.source,
            "ok": False,
            "reason": item.reason,
            "digest": "",
            "pages": [],
            "texts": [],
            "warnings": list(item.warnings),
        }
    return {
        "source": item.source,
        "ok": True,
        "reason": "",
        "digest": item.digest,
        "pages": [-1 if page is None else page for page, _ in item.pieces],
        "texts": [text for _, text in item.pieces],
        "warnings": list(item.warnings),
    }


class _EmbedActor:
    """An embedding actor: loads the configured embedder once, embeds batches of files."""

    def __init__(self, settings: Settings) -> None:
        from rag.pipeline import load_embedder  # torch: only where the embedding runs

        self.embedder = load_embedder(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts_per_file = [list(t) for t in batch["texts"]]
        flat = [t for texts in texts_per_file for t in texts]
        vectors = self.embedder.embed_passages(flat) if flat else np.zeros((0, 0), dtype=np.float32)
        out, start = [], 0
        for texts in texts_per_file:
            part = vectors[start : start + len(texts)].astype(np.float32)
            out.append(part.tobytes())
            start += len(texts)
        dims = np.full(len(texts_per_file), vectors.shape[1] if flat else 0, dtype=np.int64)
        return {**batch, "vectors": np.array(out, dtype=object), "dim": dims}


def _as_item(row: dict[str, Any]) -> tuple[Prepared | Failure, np.ndarray | None]:
    warnings = tuple(str(w) for w in row["warnings"])
    if not row["ok"]:
        return Failure(row["source"], row["reason"], warnings), None
    pages = [None if int(p) < 0 else int(p) for p in row["pages"]]
    pieces = tuple(zip(pages, (str(t) for t in row["texts"])))
    dim = int(row["dim"])
    vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(pieces), dim)
    return Prepared(row["source"], row["digest"], pieces, warnings), vectors


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that nothing answers on fails at once: ray.init would
    retry for minutes first. ("auto" and other forms are left to Ray.)"""
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return
    if not host or port is None:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise RayUnavailableError(
            f"cannot connect to the Ray cluster at {address} (ingest.ray_address / --ray): "
            f"{exc.strerror or exc}; is `ray start --head` running there?"
        ) from None


def ray_stages(
    address: str,
    settings: Settings,
    *,
    on_chunks: ChunkProgress | None = None,
    init: Callable[..., Any] | None = None,
) -> Stages:
    """The stages of :func:`ingest.runner.ingest` as a Ray Data pipeline on the cluster at
    ``address`` (``ray://HOST:10001`` through Ray Client, or ``HOST:6379`` from a node)."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(
            f'--ray {address}: Ray is not installed here ({exc}); pip install -e ".[ray]"'
        ) from exc
    i = settings.ingest

    def run(work: list[Path], how: Chunking) -> Generator[Embedded, None, None]:
        if not work:
            return
        _check_reachable(address)
        connect = init or ray.init
        try:
            connect(address=address, ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailableError(
                f"cannot connect to the Ray cluster at {address} (ingest.ray_address / --ray): "
                f"{' '.join(str(exc).split())[:300]}"
            ) from exc
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        dataset = ray.data.from_items(
            [{"source": str(p)} for p in work], override_num_blocks=min(len(work), 64)
        )
        dataset = dataset.map(_prepare_row, fn_kwargs={"how": how})
        dataset = dataset.map_batches(
            _EmbedActor,
            fn_constructor_kwargs={"settings": settings},
            batch_size=FILES_PER_BATCH,
            batch_format="numpy",
            concurrency=i.ray_embedders,
            num_gpus=i.ray_gpus,
        )
        logger.info(
            "ray: %d files on %s, %d embedding actor(s), %g GPU each",
            len(work),
            address,
            i.ray_embedders,
            i.ray_gpus,
        )
        for row in dataset.iter_rows():
            item, vectors = _as_item(row)
            if vectors is None:
                yield [item], {}
                continue
            if on_chunks is not None:
                on_chunks(item.source, len(vectors))
            yield [item], {item.source: vectors}

    return run
