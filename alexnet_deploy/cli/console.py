"""Terminal rendering for the CLI: rich progress bars, tables (the bench report's
among them), and the one-line error convention. Library modules never import this."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..errors import BackendUnavailable, DeployError, Skipped

if TYPE_CHECKING:
    from ..bench.report import BenchReport
    from ..profile.report import ProfileRow

# Messages contain brackets (extras, shapes), so no markup. Output that is not a
# terminal (a log, CI, a pipe) gets a wide page: rich's 80-column default would
# truncate every cell of the bench table.
console = Console(markup=False, width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True, markup=False)

F = TypeVar("F", bound=Callable)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so the same
    clean-up runs (temporary files removed) instead of the process dying mid-write.
    A BaseException, so no ``except Exception`` on the way swallows it."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_exception():
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _skipped_as_warning_lines():
    """Each :class:`~alexnet_deploy.errors.Skipped` the command issues (an input left
    out) becomes one ``warning:`` line on stderr, every time; other warnings keep
    Python's own rendering."""
    with warnings.catch_warnings():  # restores showwarning and the filters afterwards
        warnings.simplefilter("always", Skipped)
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, Skipped):
                error_console.print(f"warning: {message}", soft_wrap=True, markup=False, highlight=False)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def one_line_errors(command: F) -> F:
    """Turn a DeployError (or a BackendUnavailable), Ctrl-C and SIGTERM into one line on stderr and exit code
    1, 130 or 143 (128 + the signal number, as a shell reports a killed command), and
    a Skipped warning into one ``warning:`` line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _sigterm_as_exception(), _skipped_as_warning_lines():
                return command(*args, **kwargs)
        except (DeployError, BackendUnavailable) as error:  # a runner that cannot run here is one line too
            # soft_wrap keeps the message on one line however narrow the terminal is
            error_console.print(f"error: {error}", soft_wrap=True, markup=False, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None
        except Terminated:
            print("terminated", file=sys.stderr)
            raise typer.Exit(128 + signal.SIGTERM) from None

    return wrapper  # type: ignore[return-value]


class RichProgress:
    """A :class:`~alexnet_deploy.progress.ProgressReporter` drawing a rich progress bar."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def begin(self, description: str, total: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=error_console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, status="")

    def advance(self, steps: int = 1, **status: object) -> None:
        if self._progress is None or self._task is None:
            return
        text = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in status.items())
        self._progress.update(self._task, advance=steps, status=text)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    rendered = Table(title=title, title_justify="left")
    for column in columns:
        rendered.add_column(column, justify="right" if column not in columns[:1] else "left")
    for row in rows:
        rendered.add_row(*(format_cell(v) for v in row))
    return rendered


def format_cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)


# ------------------------------------------------------------------ bench report

TABLE_COLUMNS = ("backend", "precision", "device", "batch", "img/s", "p50 ms", "p90 ms", "p99 ms", "mean ms")
GPU_COLUMNS = ("GPU compute ms", "H2D ms", "D2H ms")
ACCURACY_COLUMNS = ("top-1", "top-5", "agree", "max |Δ|", "note")


def _fixed(value: float | None, decimals: int) -> str | None:
    return None if value is None else f"{value:.{decimals}f}"


def bench_table(report: BenchReport) -> tuple[tuple[str, ...], list[tuple], list[str]]:
    """A bench report as columns, rows and footnotes for :func:`table`. Notes and skip reasons are numbered
    footnotes, so the table stays narrow; GPU stage columns appear only when some
    row has them; a row skipped at every batch is shown once, its batch as "all"."""
    gpu = any(r.gpu_compute_ms is not None for r in report.rows)
    columns = TABLE_COLUMNS + (GPU_COLUMNS if gpu else ()) + ACCURACY_COLUMNS
    rows: list[tuple] = []
    footnotes: list[str] = []
    shown_skips: set[tuple[str, str, str]] = set()
    for r in report.rows:
        if r.skipped is not None:
            if (r.backend, r.precision, r.skipped) in shown_skips:
                continue
            shown_skips.add((r.backend, r.precision, r.skipped))
        texts = [f"skipped: {r.skipped}"] if r.skipped else r.notes
        for text in texts:
            if text not in footnotes:
                footnotes.append(text)
        refs = ", ".join(str(footnotes.index(t) + 1) for t in texts) or None
        lat = r.latency_ms
        latencies = (lat.p50, lat.p90, lat.p99, lat.mean) if lat else (None,) * 4
        speed = (_fixed(r.throughput_ips, 1), *(_fixed(v, 2) for v in latencies))
        stages = tuple(_fixed(v, 3) for v in (r.gpu_compute_ms, r.h2d_ms, r.d2h_ms)) if gpu else ()
        accuracy = tuple(None if v is None else f"{v:.2%}" for v in (r.top1, r.top5, r.top1_agreement))
        diff = None if r.max_abs_diff is None else f"{r.max_abs_diff:.2g}"
        batch = "all" if r.skipped is not None and len(report.config.batches) > 1 else r.batch
        rows.append((r.backend, r.precision, r.device, batch, *speed, *stages, *accuracy, diff, refs))
    return columns, rows, [f"{i}. {text}" for i, text in enumerate(footnotes, 1)]


# ------------------------------------------------------------------ profile report

PROFILE_COLUMNS = (
    "layer",
    "ms",
    "share",
    "MACs/image",
    "GMAC/s",
    "of limit",
    "GB/s",
    "of copy",
    "bound",
    "counted with it",
)


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.1%}"


def profile_table(row: ProfileRow) -> tuple[str, tuple[str, ...], list[tuple]]:
    """One profile row as a title, columns and rows for :func:`table`."""
    limit = (
        f"share of the {row.limit} limit (the fastest dense kernel measured)"
        if row.limit
        else "no limit measured for this device"
    )
    title = (
        f"{row.backend} {row.precision}, batch {row.batch} ({row.device}): layers sum to {row.profiled_ms:.2f} ms "
        f"= {row.coverage:.0%} of {row.end_to_end_ms:.2f} ms end to end; {limit}"
    )
    rows = [
        (
            layer.layer,
            _fixed(layer.ms, 3),
            _percent(layer.share),
            f"{layer.macs:,}" if layer.macs else None,
            _fixed(layer.gmacs_per_s, 1),
            _percent(layer.limit_share),
            _fixed(layer.gbps, 1),
            _percent(layer.bandwidth_share),
            layer.bound,
            "; ".join(layer.counted_with_it) or None,
        )
        for layer in row.layers
    ]
    return title, PROFILE_COLUMNS, rows
