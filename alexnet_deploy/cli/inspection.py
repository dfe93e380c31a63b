"""The commands that describe rather than produce: ``info`` (the model's layer table,
a checkpoint's metadata, conv1's filters) and ``doctor`` (what this machine can run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..choices import Variant
from .console import console, error_console, one_line_errors, table
from .options import ReportFiles


@one_line_errors
def info(
    checkpoint: Annotated[
        Path | None, typer.Option(help="Describe this checkpoint's model; show its metadata.")
    ] = None,
    groups: Annotated[
        int | None, typer.Option(help="No checkpoint: 2 = the paper's split (default), 1 = dense.")
    ] = None,
    classes: Annotated[int | None, typer.Option(help="No checkpoint: output classes (default 1000).")] = None,
    variant: Annotated[
        Variant | None,
        typer.Option(help="No checkpoint: paper = the 2012 network (default), torchvision = torchvision's alexnet."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write table, totals, metadata as JSON.")
    ] = None,
    filters: Annotated[
        Path | None, typer.Option(help="Write conv1's kernels as a PNG grid (paper's Figure 3).")
    ] = None,
    onnx: Annotated[
        Path | None, typer.Option(help="Also show an ONNX file's metadata (INT8: calibration, layers out of INT8).")
    ] = None,
) -> None:
    """The layer table (shapes, parameters, MACs, activations), measured from the model."""
    from ..info import COLUMNS, inspect_model, onnx_rows, write_info_json
    from ..plots import save_filter_grid

    ReportFiles(json_path, extra={"--filters": filters}).check({"--checkpoint": checkpoint, "--onnx": onnx})
    report = inspect_model(checkpoint, groups=groups, classes=classes, variant=variant)
    report.onnx = [] if onnx is None else onnx_rows(onnx)
    shape = "×".join(str(v) for v in report.table.input_shape)
    config = report.config
    title = (
        f"AlexNet ({config.variant}) at {shape} float32 "
        f"(groups {config.groups}, {config.num_classes} classes, width {config.width})"
    )
    console.print(table(title, COLUMNS, report.table.display_rows()))
    console.print(
        f"parameters {report.table.parameters:,}  GMACs {report.table.gmacs:.3f}  "
        f"activations {report.table.activation_bytes / 2**20:.2f} MiB at batch 1"
    )
    if report.checkpoint is not None:
        for field, value in report.checkpoint.rows():
            # markup off: the LRN convention and paths hold [brackets] rich would eat as tags
            console.print(f"{field + ':':<16}{value}", markup=False, highlight=False, soft_wrap=True)
    for field, value in report.onnx:
        console.print(f"{field + ':':<16}{value}", markup=False, highlight=False, soft_wrap=True)
    if json_path is not None:
        write_info_json(report, json_path)
        console.print(f"wrote {json_path}")
    if filters is not None:
        weight = report.model.conv1.weight
        image = save_filter_grid(weight, filters)
        count, channels, height, width = weight.shape
        source = (
            f"the trained weights in {checkpoint}"
            if report.trained
            else "a freshly initialised model (no --checkpoint), so random, not learned features"
        )
        console.print(
            f"wrote {filters} ({image.width}×{image.height} px): "
            f"conv1's {count} kernels ({height}×{width}×{channels}) from {source}"
        )


@one_line_errors
def doctor(
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Versions of the toolchain, the GPU, and which pipeline steps can run here."""
    from dataclasses import asdict

    from ..doctor import diagnose

    report = diagnose()
    if json_output:
        console.print_json(json.dumps(asdict(report)))
        raise typer.Exit(1 if report.problems else 0)
    console.print(
        table("packages", ["package", "version"], [(k, v or "not installed") for k, v in report.versions.items()])
    )
    console.print(f"CPU: {report.cpu}; ISA features: {', '.join(report.cpu_features) or 'unknown'}")
    console.print(f"CUDA GPU: {report.gpu or 'none'}")
    console.print(table("pipeline steps on this machine", ["step", "can run"], list(report.steps.items())))
    for problem in report.problems:
        error_console.print(f"problem: {problem}", highlight=False)
    if report.problems:
        raise typer.Exit(1)
