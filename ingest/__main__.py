"""python -m ingest PATH... [--config PATH] [--collection NAME] [--reset] [--ray ADDRESS]: add
documents to the store. python -m ingest --check [--config PATH] [--collection NAME]: check the
store against its ledger (read-only)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ingest.check import check_store
from ingest.distributed import RayUnavailableError, ray_stages
from ingest.runner import FAILED, IngestOptions, IngestReport, discover, ingest
from rag.cli import Terminated, run_cli, setup_logging
from rag.config import Settings, load_settings, with_collection
from rag.languages import coverage_warning, format_shares
from rag.store import StoreDamagedError, set_aside


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ingest", description=__doc__)
    parser.add_argument(
        "paths", nargs="*", help="files or folders (folders are walked recursively)"
    )
    parser.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    parser.add_argument(
        "--collection",
        help="the collection to write (default: store.collection); a new name "
        "starts a new collection",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="drop the collection and rebuild it from PATHs "
        "(a damaged store folder is moved aside)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the store against its ledger and exit (0: sound, 1: findings); changes nothing",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        default="",
        help="read, load, chunk and embed on the Ray cluster at ADDRESS (ray://HOST:10001, or "
        "HOST:6379 from a node; default: ingest.ray_address); this process writes the store",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens per file")
    args = parser.parse_args(argv)
    if args.check and (args.paths or args.reset):
        parser.error("--check takes no PATHs and no --reset: it only reads the store")
    if args.check and args.ray:
        parser.error("--check takes no --ray: it only reads the store")
    if not args.check and not args.paths:
        parser.error("give the files or folders to ingest (or --check)")
    return args


class Interrupts:
    """Ctrl-C and SIGTERM (docker stop, systemd, Kubernetes) stop the run the same way, and are
    remembered.

    Each raises KeyboardInterrupt (``Terminated`` for SIGTERM: exit 143 instead of 130), so
    the run stops where it is and the ledger's order keeps the store consistent. Native code
    that checks for signals while it runs (Chroma's Rust core does) can take the exception
    and drop it; the run then went on to the end and exited 0 as if never interrupted (seen
    in some full test runs). Remembered, the signal is honoured at the next file boundary.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: KeyboardInterrupt | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupts:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt()
        raise self.requested

    def stop_now(self) -> bool:
        if self.requested is not None:
            raise self.requested
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    settings = with_collection(load_settings(args.config), args.collection)
    # imported here, not at the top: a bad config is named in a fraction of a second, before torch
    from rag.pipeline import load_embedder, open_store

    console = Console(stderr=True)
    console.print(f"embedder: {settings.embedder.model} · store: {_describe_store(settings)}")
    if args.check:
        return check(settings, Console())
    _check_or_set_aside(settings, args.reset, console)
    # a path that is not there: say so before any model loads
    discover(args.paths, settings.ingest.extensions)
    embedder = load_embedder(settings)
    store = open_store(settings, embedder, create=True, reset=args.reset)
    address = args.ray or settings.ingest.ray_address
    if address:
        console.print(f"read, load, chunk and embed on the Ray cluster at {address}")
    with (
        Interrupts() as interrupts,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[current]}"),
            console=console,
            transient=True,
        ) as bar,
    ):
        files = bar.add_task("files", total=None, current="")
        chunks = bar.add_task("chunks embedded", total=None, current="")

        def on_chunks(source: str, n: int) -> None:
            bar.update(chunks, advance=n, current=_rate(bar, chunks, source))

        report = ingest(
            args.paths,
            embedder=embedder,
            store=store,
            options=IngestOptions.from_settings(settings),
            on_start=lambda total: bar.update(files, total=total),
            on_file=lambda source, status: bar.update(
                files, advance=1, current=f"{status} {Path(source).name}"
            ),
            on_chunks=on_chunks,
            stop_requested=interrupts.stop_now,
            stages=ray_stages(address, settings, on_chunks=on_chunks) if address else None,
        )
    out = Console()
    print_report(out, report, store.count())
    print_language_warning(out, report, settings)
    return 1 if report.count(FAILED) and report.count(FAILED) == report.files_seen else 0


def _check_or_set_aside(settings: Settings, reset: bool, console: Console) -> None:
    """Before any model loads: a damaged embedded store stops the run, or with ``--reset`` is moved
    aside (never deleted: a recovery may still want it) so that a new one is built."""
    from rag.pipeline import check_store_files

    try:
        check_store_files(settings)
    except StoreDamagedError:
        if not reset:
            raise
        moved = set_aside(settings.resolve_path(settings.store.path))
        console.print(f"[yellow]the damaged store was moved to {moved}[/]; building a new one")


def check(settings: Settings, out: Console) -> int:
    """``--check``: read the store, print what is wrong per file; 0 when sound, 1 when not."""
    from rag.pipeline import check_store_files, load_embedder, open_store

    check_store_files(settings)
    # the collection must be the configured embedder's, as for ingest
    embedder = load_embedder(settings)
    result = check_store(open_store(settings, embedder, create=False), embedder.dimension)
    if result.ok:
        out.print(
            f"store OK: {result.files} files, {result.chunks} chunks; every ledger entry complete "
            "and "
            f"matching its chunks, {result.vectors} vectors present, {result.looked_up} found by "
            "the index"
        )
        return 0
    table = Table(title=f"store check: {len(result.findings)} findings")
    table.add_column("file", overflow="fold")
    table.add_column("problem", overflow="fold")
    for finding in result.findings:
        table.add_row(finding.source or "(collection)", finding.problem)
    out.print(table)
    out.print(
        f"{result.files} files, {result.chunks} chunks checked; ingest the files listed again "
        "(python -m ingest PATH), or rebuild with --reset"
    )
    return 1


def _rate(bar: Progress, task: TaskID, source: str) -> str:
    speed = bar.tasks[task].speed
    return f"{Path(source).name}" + (f" · {speed:.0f} chunks/s" if speed else "")


def _describe_store(settings) -> str:
    s = settings.store
    if s.mode == "embedded":
        return f"{settings.resolve_path(s.path)} (collection '{s.collection}')"
    return f"{'https' if s.ssl else 'http'}://{s.host}:{s.port} (collection '{s.collection}')"


def print_report(console: Console, report: IngestReport, total_chunks: int) -> None:
    summary = Table(title="ingest summary", show_header=False)
    for label, value in [
        ("files seen", report.files_seen),
        ("added", report.count("added")),
        ("updated", report.count("updated")),
        ("unchanged", report.count("unchanged")),
        ("removed", report.count("removed")),
        ("failed", report.count(FAILED)),
        ("chunks written", report.chunks_written),
        ("chunks in collection", total_chunks),
        ("time", f"{report.seconds:.2f} s" if report.seconds < 10 else f"{report.seconds:.1f} s"),
    ]:
        summary.add_row(label, str(value))
    if report.skipped:
        summary.add_row("ignored (unsupported type)", str(report.skipped))
    if report.special:
        summary.add_row("ignored (not a regular file)", str(report.special))
    languages = report.languages()
    if languages:
        summary.add_row("languages written", format_shares(languages))
    console.print(summary)
    failed = [o for o in report.outcomes if o.status == FAILED]
    if failed:
        table = Table(title="failed files")
        table.add_column("file", overflow="fold")
        table.add_column("reason", overflow="fold")
        for o in failed:
            table.add_row(o.source, o.reason)
        console.print(table)
    warned = [o for o in report.outcomes if o.warnings]
    for o in warned:
        for w in o.warnings:
            console.print(f"[yellow]warning[/] {Path(o.source).name}: {w}")


def print_language_warning(console: Console, report: IngestReport, settings: Settings) -> None:
    """A yellow warning when the chunks just written are in languages the embedder does not
    cover.
    """
    warning = coverage_warning(
        settings.embedder.model,
        report.languages(),
        settings.embedder.languages,
        subject="the documents written are",
        routes=settings.retrieval.modes_by_language,
    )
    if warning is not None:
        console.print(f"[yellow]warning[/] languages: {warning}")


INTERRUPTED_NOTE = "The store is consistent; run the same command again to finish."


def stop_outside_the_run(signum: int, frame: object) -> None:
    """SIGTERM while no file is being written (models loading, or the report after the last file):
    stop at once, with the run's own exit code (143) and line, not the bare -15 of the default
    action. ``Interrupts`` takes over while files are written, and gives this back after."""
    sys.stderr.write(f"\nstopped by SIGTERM. {INTERRUPTED_NOTE}\n")
    sys.stderr.flush()
    os._exit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_outside_the_run)
    run_cli(main, interrupted_note=INTERRUPTED_NOTE, errors=(RayUnavailableError,))
