"""The `convzoo` command: `classify` folders of photos against a running service, `models` its
comparison table, `serve` the service itself (docs/client.md)."""

from __future__ import annotations

import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from convzoo import files, journal, run
from convzoo.output import Format
from convzoo.sending import RetryPolicy
from convzoo.table import models_table

app = typer.Typer(
    help="Classify folders of photos with a convzoo service, list its models, or run it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"
Url = Annotated[str, typer.Option("--url", "-u", help="The service's base URL.")]


class OutputFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


def _format(output: Path | None, chosen: OutputFormat | None) -> Format:
    if chosen is not None:
        return "csv" if chosen is OutputFormat.csv else "jsonl"
    return "csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl"


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        # Each refresh builds the whole bar: 6 ms of CPU a second at rich's 10 per second. Where stderr
        # is no terminal nothing shows until the end, so nothing is refreshed before it.
        refresh_per_second=4,
        auto_refresh=err.is_terminal,
    )


@app.command()
def classify(
    inputs: Annotated[
        list[str], typer.Argument(help="Image files, folders (their images, recursively) or glob patterns.")
    ],
    url: Url = DEFAULT_URL,
    model: Annotated[str | None, typer.Option(help="Model name (default: the service's default).")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Predictions per image.")] = 5,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output file (.csv or .jsonl); a rerun skips the files it holds."
        ),
    ] = None,
    fmt: Annotated[
        OutputFormat | None, typer.Option("--format", help="Default: from the output's suffix, else jsonl.")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight.")] = 8,
    retries: Annotated[
        int, typer.Option(min=0, help="Tries after the first, on 503/429 (after Retry-After) or no answer.")
    ] = 5,
    max_wait: Annotated[float, typer.Option(min=0, help="Longest wait before a retry, in seconds.")] = 30.0,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for one answer.")] = 60.0,
    fresh: Annotated[bool, typer.Option(help="Overwrite the output instead of resuming from it.")] = False,
) -> None:
    """Classify images with the service, one request per image, into CSV or JSON lines.

    Files that fail (a broken image, a refused upload) are recorded with the error and the run goes on; the exit code is 1 when any did.

    An interrupted run (Ctrl-C) leaves a valid output: the same command again skips the files it holds.
    """
    form = _format(output, fmt)
    try:
        paths = files.expand(inputs)
        book = journal.open_file(output, form, fresh=fresh) if output else journal.to_stdout(form)
    except (files.NoSuchInput, journal.ForeignOutput) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except OSError as exc:  # the output's folder missing or not writable
        err.print(
            f"[red]error:[/] cannot write {escape(str(output))}: {exc.strerror or exc}", highlight=False
        )
        raise typer.Exit(2) from None
    todo = run.pending(paths, book)
    tally = run.Tally(total=len(paths), skipped=len(paths) - len(todo))
    if tally.skipped:
        err.print(f"{tally.skipped} of {len(paths)} files already in {escape(str(output))}: skipped")
    params = {"top_k": str(top_k), **({"model": model} if model else {})}
    target = run.Target(url.rstrip("/"), params, concurrency, timeout, RetryPolicy(retries, max_wait))
    started = time.perf_counter()
    interrupted = False
    try:
        with _progress() as progress:
            run.run(run.classify(todo, book, target, tally, progress))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        book.close()
    _summary(tally, time.perf_counter() - started, output, interrupted)
    if interrupted:
        raise typer.Exit(130)
    if tally.failed:
        raise typer.Exit(1)


def _summary(tally: run.Tally, seconds: float, output: Path | None, interrupted: bool) -> None:
    rate = tally.done / seconds if seconds > 0 else 0.0
    err.print(
        f"{tally.done} files sent in {seconds:.1f} s ({rate:.1f} files/s): {tally.ok} ok, "
        f"{len(tally.failed)} failed, {tally.skipped} skipped; {tally.retries} retries"
    )
    for record in tally.failed[:5]:
        status = "" if record.http_status is None else f"{record.http_status} "
        # paths and the service's words may hold brackets, which rich would read as markup
        err.print(
            f"  [red]failed[/] {escape(record.path)}: {status}{escape(record.error or '')}", highlight=False
        )
    if len(tally.failed) > 5:
        err.print(f"  ... and {len(tally.failed) - 5} more (see the output)")
    if interrupted:
        again = f" (same --output {output})" if output else " with --output to resume"
        err.print(
            f"[yellow]interrupted[/]: {tally.total - tally.skipped - tally.done} files left; rerun{again}"
        )


@app.command()
def models(url: Url = DEFAULT_URL) -> None:
    """The service's models: accuracy, size, cost and latency measured on the server (GET /models)."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/models", timeout=30)
    except httpx.TransportError as exc:
        err.print(f"[red]error:[/] no answer from {url}: {exc}")
        raise typer.Exit(1) from None
    if r.status_code != 200:
        err.print(f"[red]error:[/] GET /models answered {r.status_code}: {r.text[:300]}")
        raise typer.Exit(1)
    Console().print(models_table(r.json()))


class _ServeCommand(typer.core.TyperCommand):
    """`serve --help` with the service's settings, read from `Settings` only when the help is asked for
    (importing the service's settings costs the other commands' start-up 0.4 s)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:  # the types of the click typer bundles
        from service.usage import SUMMARY, settings_text

        self.help = f"Run the service, as `python -m service` does.\n\n{SUMMARY}\n\n{settings_text()}"
        super().format_help(ctx, formatter)


@app.command(cls=_ServeCommand, short_help="Run the service, as `python -m service` does.")
def serve(
    host: Annotated[str | None, typer.Option(help="Sets CONVZOO_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Sets CONVZOO_PORT.")] = None,
    registry: Annotated[Path | None, typer.Option(help="Sets CONVZOO_REGISTRY_PATH.")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Sets CONVZOO_MODELS_DIR.")] = None,
    preload: Annotated[str | None, typer.Option(help="Sets CONVZOO_PRELOAD (comma-separated).")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="Sets CONVZOO_GRPC_PORT.")] = None,
) -> None:
    given = {
        "CONVZOO_HOST": host,
        "CONVZOO_PORT": port,
        "CONVZOO_REGISTRY_PATH": registry,
        "CONVZOO_MODELS_DIR": models_dir,
        "CONVZOO_PRELOAD": preload,
        "CONVZOO_GRPC_PORT": grpc_port,
    }
    # The service reads its settings from the environment; an option wins over a variable already set.
    os.environ.update({k: str(v) for k, v in given.items() if v is not None})
    from service.__main__ import main

    main([])
