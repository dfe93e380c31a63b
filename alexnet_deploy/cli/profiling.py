"""``alexnet-deploy profile``: parse, call ``profile.run.run_profile``, render."""

from __future__ import annotations

from typing import Annotated

import typer

from ..profile.config import BACKENDS, PRECISIONS, ProfileConfig
from .console import RichProgress, console, one_line_errors, table
from .options import (
    Checkpoint,
    Engines,
    JsonReport,
    Onnx,
    PlotReport,
    ReportFiles,
    choice_list,
    parse_batches,
    parse_choices,
)


@one_line_errors
def profile(
    backends: Annotated[str, typer.Option(help=f"Comma list of {choice_list(BACKENDS)}.")] = ",".join(
        ProfileConfig.backends
    ),
    precisions: Annotated[str, typer.Option(help=f"Comma list of {choice_list(PRECISIONS)}.")] = ",".join(
        ProfileConfig.precisions
    ),
    batch: Annotated[str, typer.Option(help="Batch size, or a comma list: 1,128.")] = ",".join(
        map(str, ProfileConfig.batches)
    ),
    runs: Annotated[int, typer.Option(help="Profiled calls per row, after one warm-up.")] = ProfileConfig.runs,
    iterations: Annotated[
        int, typer.Option(help="Unprofiled end-to-end calls per row, split around the profiled run.")
    ] = ProfileConfig.iterations,
    limit_size: Annotated[
        int, typer.Option(help="Size of the GEMMs (size³) among the kernels that measure the FP32 and INT8 limits.")
    ] = ProfileConfig.limit_size,
    limit_rounds: Annotated[int, typer.Option(help="Interleaved rounds of the limits.")] = ProfileConfig.limit_rounds,
    onnx: Onnx = ProfileConfig.onnx,
    engines: Engines = ProfileConfig.engines_dir,
    checkpoint: Checkpoint = ProfileConfig.checkpoint,
    json_path: JsonReport = None,
    plot: PlotReport = None,
) -> None:
    """Where the time goes: each layer's time from the backend's own profiler, against this machine's limits."""
    from ..plots import save_profile_plot
    from ..profile.run import run_profile

    config = ProfileConfig(
        batches=parse_batches(batch),
        backends=parse_choices(backends, BACKENDS, "--backends"),
        precisions=parse_choices(precisions, PRECISIONS, "--precisions"),
        runs=runs,
        iterations=iterations,
        limit_size=limit_size,
        limit_rounds=limit_rounds,
        onnx=onnx,
        engines_dir=engines,
        checkpoint=checkpoint,
    )
    config.check()
    from ..runners.registry import ModelFiles, read_files

    outputs = ReportFiles(json_path, plot)
    outputs.check(read_files(ModelFiles(onnx, engines, checkpoint)))  # before minutes of profiling, not after
    report = run_profile(config, RichProgress())
    from .console import profile_table

    for row in report.rows:
        title, columns, rows = profile_table(row)
        console.print(table(title, columns, rows))
        if row.limits:
            limits = row.limits
            fastest = limits.get("fastest", {})
            console.print(
                f"limits measured before this row: FP32 {limits['fp32_gflops']:.0f} GFLOP/s "
                f"({fastest.get('fp32', '?')}), INT8 {limits['int8_gops']:.0f} GOP/s ({fastest.get('int8', '?')}), "
                f"copy {limits['copy_gbps']:.1f} GB/s (read + write)",
                markup=False,
                soft_wrap=True,
            )
        console.print(f"profiler: {row.profiler}; it leaves out {row.left_out}", markup=False, soft_wrap=True)
    for backend, precision, reason in report.skipped:
        console.print(f"{backend}/{precision} skipped: {reason}", markup=False, soft_wrap=True)
    outputs.write(report, lambda path: save_profile_plot(report, path))
