"""python -m ingest PATH... [--config PATH] [--reset]: add documents to the store."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ingest.runner import FAILED, IngestReport, ingest
from rag.cli import run_cli, setup_logging
from rag.config import Settings, load_settings
from rag.languages import coverage_warning, format_shares
from rag.pipeline import load_embedder, open_store


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ingest", description=__doc__)
    parser.add_argument("paths", nargs="+", help="files or folders (folders are walked recursively)")
    parser.add_argument("--config", help="config file (default: $RAG_CONFIG or ./config.toml)")
    parser.add_argument("--reset", action="store_true", help="drop the collection and rebuild it from PATHs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens per file")
    return parser.parse_args(argv)


class Interrupts:
    """Ctrl-C raises KeyboardInterrupt as always, and is also remembered.

    Native code that checks for signals while it runs (Chroma's Rust core does) can take
    the KeyboardInterrupt and drop it; the run then went on to the end and exited 0 as if
    never interrupted (seen in some full test runs). Remembered, the interrupt is
    honoured at the next file boundary, where the store is consistent.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None

    def __enter__(self) -> "Interrupts":
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    settings = load_settings(args.config)
    console = Console(stderr=True)
    console.print(f"embedder: {settings.embedder.model} · store: {_describe_store(settings)}")
    embedder = load_embedder(settings)
    store = open_store(settings, embedder, create=True, reset=args.reset)
    with Interrupts() as interrupts, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     TextColumn("{task.fields[current]}"), console=console, transient=True) as bar:
        files = bar.add_task("files", total=None, current="")
        chunks = bar.add_task("chunks embedded", total=None, current="")
        report = ingest(
            args.paths, embedder=embedder, store=store, chunk_size=settings.chunking.size,
            chunk_overlap=settings.chunking.overlap, extensions=settings.ingest.extensions,
            max_file_bytes=int(settings.ingest.max_file_mb * 1e6), min_chars=settings.ingest.min_chars,
            on_start=lambda total: bar.update(files, total=total),
            on_file=lambda source, status: bar.update(files, advance=1, current=f"{status} {Path(source).name}"),
            on_chunks=lambda source, n: bar.update(chunks, advance=n, current=_rate(bar, chunks, source)),
            stop_requested=lambda: interrupts.requested,
        )
    out = Console()
    print_report(out, report, store.count())
    print_language_warning(out, report, settings)
    return 1 if report.count(FAILED) and report.count(FAILED) == report.files_seen else 0


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
        ("files seen", report.files_seen), ("added", report.count("added")), ("updated", report.count("updated")),
        ("unchanged", report.count("unchanged")), ("removed", report.count("removed")),
        ("failed", report.count(FAILED)), ("chunks written", report.chunks_written),
        ("chunks in collection", total_chunks),
        ("time", f"{report.seconds:.2f} s" if report.seconds < 10 else f"{report.seconds:.1f} s"),
    ]:
        summary.add_row(label, str(value))
    if report.skipped:
        summary.add_row("ignored (unsupported type)", str(report.skipped))
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
    """A yellow warning when the chunks just written are in languages the embedder does not cover."""
    warning = coverage_warning(settings.embedder.model, report.languages(), settings.embedder.languages,
                               subject="the documents written are", routes=settings.retrieval.modes_by_language)
    if warning is not None:
        console.print(f"[yellow]warning[/] languages: {warning}")


if __name__ == "__main__":
    run_cli(main, interrupted_note="The store is consistent; run the same command again to finish.")
