"""``alexnet-deploy sensitivity``: which layer an INT8 build loses accuracy in, ranked
most sensitive first, as a table, a PNG (--plot) and JSON (--json)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..build.config import BuildConfig
from ..choices import CalibrationMethod, QdqLayout
from .console import RichProgress, console, one_line_errors, table
from .options import (
    CalibFromData,
    CalibImages,
    CalibMethodOption,
    CalibrationDir,
    JsonReport,
    Onnx,
    Percentile,
    PlotReport,
    ReportFiles,
)


@one_line_errors
def sensitivity(
    onnx_path: Onnx = BuildConfig.onnx,
    calibration: CalibrationDir = BuildConfig.calibration_dir,
    calib_from_data: CalibFromData = False,
    calib_images: CalibImages = None,
    calib_method: CalibMethodOption = CalibrationMethod(BuildConfig.calib_method),
    percentile: Percentile = BuildConfig.percentile,
    layout: Annotated[
        QdqLayout,
        typer.Option(help="tensorrt: alexnet.int8.onnx's Q/DQ; onnxruntime: alexnet.int8-ort.onnx's; both."),
    ] = QdqLayout.BOTH,
    json_path: JsonReport = None,
    plot: PlotReport = None,
) -> None:
    """Per-layer INT8 sensitivity on the held-out val images: each layer alone in INT8,
    every layer but it in INT8, and the all-INT8 graph's per-layer SQNR; most sensitive first."""
    from ..build.sensitivity import SensitivityConfig, run_sensitivity
    from ..plots import save_sensitivity_plot

    outputs = ReportFiles(json_path, plot)
    outputs.check({"--onnx": onnx_path}, {"--calibration": calibration})
    config = SensitivityConfig(
        onnx=onnx_path,
        calibration_dir=calibration,
        calib_from_data=calib_from_data,
        calib_images=calib_images,
        calib_method=calib_method,
        percentile=percentile,
        layout=layout,
    )
    report = run_sensitivity(config, RichProgress())
    for note in report.notes:
        console.print(note, soft_wrap=True)
    rows = _ranking_rows(report)
    fp32 = "" if report.fp32_top1 is None else f"; FP32 top-1 {report.fp32_top1:.2%}"
    title = (
        f"INT8 sensitivity on {report.images} held-out val images ({report.method} calibration"
        f"{fp32}), most sensitive first; {report.evaluations} evaluations in {report.seconds:.1f} s"
    )
    columns = (
        "rank",
        "layer",
        "layout",
        "only it INT8: agree",
        "top-1",
        "mean |Δ|",
        "max |Δ|",
        "all but it INT8: agree",
        "top-1",
        "mean |Δ|",
        "all-INT8 SQNR dB",
    )
    console.print(table(title, columns, rows))
    for layout_name, result in report.all_int8.items():
        console.print(f"all-INT8 ({layout_name}): top-1 agreement {result.agreement:.2%}", soft_wrap=True)
    outputs.write(report, lambda path: save_sensitivity_plot(report, path))


def _ranking_rows(report) -> list[tuple]:
    """One table row per layer x layout, most sensitive layer first."""
    rows = []
    for rank, entry in enumerate(report.layers, 1):
        for layout_name in report.layouts:
            alone, all_but = entry.alone[layout_name], entry.all_but[layout_name]
            rows.append(
                (
                    rank,
                    entry.layer,
                    layout_name,
                    f"{alone.agreement:.2%}",
                    None if alone.top1 is None else f"{alone.top1:.2%}",
                    f"{alone.mean_abs_diff:.3g}",
                    f"{alone.max_abs_diff:.3g}",
                    f"{all_but.agreement:.2%}",
                    None if all_but.top1 is None else f"{all_but.top1:.2%}",
                    f"{all_but.mean_abs_diff:.3g}",
                    f"{entry.sqnr_db[layout_name]:.1f}",
                )
            )
    return rows
