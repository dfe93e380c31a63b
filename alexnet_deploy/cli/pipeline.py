"""The pipeline's commands after training, in its order: ``export``, ``build``, ``bench``
(``train`` is in ``training``). Each parses, calls its stage's one library function, and
renders the result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import DEFAULT_LAYOUT, ArtifactLayout
from ..bench.config import DEFAULT_MIN_ITERATIONS, DEFAULT_ROW_SECONDS, BenchConfig
from ..build.config import BuildConfig
from ..choices import (
    BenchBackend,
    BenchPrecision,
    CalibrationMethod,
    DeviceChoice,
    LrnExport,
)
from ..export.config import MAX_OPSET, MIN_OPSET
from .console import RichProgress, console, one_line_errors, table
from .options import (
    CalibFromData,
    CalibImages,
    CalibMethodOption,
    CalibrationDir,
    Checkpoint,
    Engines,
    JsonReport,
    Onnx,
    Percentile,
    ReportFiles,
    choice_list,
    parse_batches,
    parse_choices,
)


@one_line_errors
def export(
    checkpoint: Checkpoint = DEFAULT_LAYOUT.checkpoint,
    output: Annotated[
        Path, typer.Option(help="ONNX file to write (only after it validates).")
    ] = DEFAULT_LAYOUT.export_onnx,
    opset: Annotated[int, typer.Option(help=f"ONNX opset ({MIN_OPSET}-{MAX_OPSET}).")] = MIN_OPSET,
    lrn: Annotated[
        LrnExport, typer.Option(help="plugin: LRN as our TensorRT plugin's custom op; native: ONNX's LRN.")
    ] = LrnExport.PLUGIN,
) -> None:
    """Export FP32 ONNX (dynamic batch) and validate it against the torch model."""
    from ..export.run import export as run_export

    with console.status("exporting to ONNX and validating against torch"):
        result = run_export(checkpoint, output, opset=opset, lrn=lrn)
    console.print(f"wrote {result.path} (opset {result.opset}, LRN as {result.lrn})")
    console.print(result.validation.summary(), soft_wrap=True)


@one_line_errors
def build(
    fp32: Annotated[bool, typer.Option("--fp32", help="FP32 (the exported ONNX as is).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 ONNX (FP32 I/O) and engine.")] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="INT8 Q/DQ ONNX calibrated on the calibration set, and engine.")
    ] = False,
    onnx_path: Onnx = BuildConfig.onnx,
    calibration: CalibrationDir = BuildConfig.calibration_dir,
    calib_from_data: CalibFromData = False,
    calib_images: CalibImages = None,
    calib_method: CalibMethodOption = CalibrationMethod(BuildConfig.calib_method),
    percentile: Percentile = BuildConfig.percentile,
    recalibrate: Annotated[bool, typer.Option(help="Ignore the scale cache and calibrate again.")] = False,
    compare_methods: Annotated[
        bool,
        typer.Option(help="Also evaluate every method and onnxruntime's quantize_static, with img/s beside accuracy."),
    ] = False,
    min_agreement: Annotated[
        float | None,
        typer.Option(
            help="INT8 budget: top-1 agreement with FP32 on the held-out val images (0.99 = 99%); layers leave "
            "INT8, most sensitive first, until both INT8 files meet it."
        ),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(help="INT8 budget: top-1 drop against the val labels, in percentage points (0.5)."),
    ] = None,
    engines: Engines = BuildConfig.engines_dir,
    opt_batch: Annotated[
        int, typer.Option(help="Optimization-profile batch TensorRT tunes for.")
    ] = BuildConfig.opt_batch,
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine accepts.")] = BuildConfig.max_batch,
    workspace_gib: Annotated[float, typer.Option(help="TensorRT workspace limit (GiB).")] = BuildConfig.workspace_gib,
    json_path: JsonReport = None,
) -> None:
    """Write FP16/INT8 ONNX, report their accuracy (onnxruntime), build TensorRT engines.

    With no precision flag, all three are built. Precision is carried by the ONNX
    (strongly typed networks: TensorRT 11 has no FP16/INT8 builder flags).
    """
    from dataclasses import asdict

    from ..build.run import build as run_build
    from ..build.run import check_outputs

    chosen = tuple(p for p, on in (("fp32", fp32), ("fp16", fp16), ("int8", int8)) if on) or ("fp32", "fp16", "int8")
    config = BuildConfig(
        onnx=onnx_path,
        precisions=chosen,
        calibration_dir=calibration,
        calib_from_data=calib_from_data,
        calib_images=calib_images,
        calib_method=calib_method,
        percentile=percentile,
        recalibrate=recalibrate,
        compare_methods=compare_methods,
        min_agreement=min_agreement,
        max_drop=max_drop,
        engines_dir=engines,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_gib=workspace_gib,
    )
    check_outputs(config, {"--json": json_path})
    report = run_build(config, RichProgress())
    _print_build_report(report)
    ReportFiles(json_path).write(asdict(report))


def _print_build_report(report) -> None:
    """The files build wrote, the INT8 budget's choice, the accuracy table, the engines."""
    from ..build.config import THROUGHPUT_BATCH

    for line in report.calibration:
        console.print(line, soft_wrap=True)
    for precision, path in report.onnx.items():
        console.print(f"{precision} ONNX: {path}", soft_wrap=True)
    if report.onnxruntime_int8 is not None:
        console.print(f"int8 ONNX for onnxruntime: {report.onnxruntime_int8}", soft_wrap=True)
    if report.mixed is not None:
        out = ", ".join(f"{layer} in {precision}" for layer, precision in report.mixed.fallback.items())
        console.print(
            f"INT8 budget {report.mixed.budget.describe()}: {out or 'every layer stays INT8'} "
            f"({report.mixed.evaluations} evaluations, {report.mixed.seconds:.1f} s"
            + (f"; ranking {', '.join(report.mixed.ranking)})" if report.mixed.ranking else ")"),
            soft_wrap=True,
        )
    timed = any(r.throughput_ips is not None for r in report.accuracy)
    rows = [
        (r.name, f"{r.top1:.2%}", f"{r.top5:.2%}", f"{r.top1_agreement:.2%}", f"{r.max_abs_diff:.3g}")
        + (("—" if r.throughput_ips is None else f"{r.throughput_ips:.1f}",) if timed else ())
        for r in report.accuracy
    ]
    speed_column = [f"img/s (onnxruntime CPU, batch {THROUGHPUT_BATCH}, interleaved)"] if timed else []
    console.print(
        table(
            f"accuracy on {report.val_images} held-out val images (onnxruntime; agreement and Δ vs FP32)",
            ["model", "top-1", "top-5", "top-1 agreement", "max |Δ logits|", *speed_column],
            rows,
        )
    )
    for precision, plan in report.engines.items():
        console.print(f"engine {precision}: {plan}")
    if report.engine_note:
        console.print(report.engine_note, soft_wrap=True)


# bench's timing options: how long each row is timed, and when it counts as stable
BenchIterations = Annotated[
    int | None,
    typer.Option(
        help="Timed iterations per row. Default, without --duration: timing windows until the last three "
        f"agree within --stability (at least {DEFAULT_MIN_ITERATIONS} iterations), for at most "
        f"{DEFAULT_ROW_SECONDS:g} s.",
        show_default=False,
    ),
]
BenchDuration = Annotated[
    float | None,
    typer.Option(help="Time each row for at most this many seconds instead (less once it is stable)."),
]
BenchStability = Annotated[
    float,
    typer.Option(
        help="A row is stable when its last three timing windows' img/s agree within this fraction "
        "(perf_analyzer's -s); 0: time the whole budget. A row that never settles says 'unstable (±x%)'."
    ),
]
BenchWindow = Annotated[float, typer.Option(help="Seconds per timing window (at least one call).")]


@one_line_errors
def bench(
    batch: Annotated[str, typer.Option(help="Batch size, or a comma list for a sweep: 1,8,32,128.")] = ",".join(
        map(str, BenchConfig.batches)
    ),
    backends: Annotated[
        str,
        typer.Option(
            help=f"Comma list of {choice_list(BenchBackend.values())}; torch-compile only when named "
            "(it compiles for ~30 s per precision on 2 CPU cores)."
        ),
    ] = ",".join(BenchConfig.backends),
    precisions: Annotated[
        str | None,
        typer.Option(
            help=f"Comma list of {choice_list(BenchPrecision.values())} (bf16: torch rows, bf16-capable CPU or GPU). "
            "Default: all, listing those not built yet as skipped; a named precision whose ONNX or engine is missing is an error."
        ),
    ] = None,
    iterations: BenchIterations = None,
    duration: BenchDuration = None,
    stability: BenchStability = BenchConfig.stability,
    window: BenchWindow = BenchConfig.window_s,
    warmup: Annotated[int, typer.Option(help="Untimed iterations before timing.")] = BenchConfig.warmup,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs",
            help="Replay CUDA graphs: TensorRT captures execute_async_v3 per batch size (trtexec --useCudaGraph); torch on CUDA.",
        ),
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every row as JSON (plot goes beside it unless --plot).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG: throughput vs batch for a sweep, else top-1 vs throughput.")
    ] = None,
    onnx: Onnx = BenchConfig.onnx,
    engines: Engines = BenchConfig.engines_dir,
    onnx_dir: Annotated[Path | None, typer.Option(hidden=True, help="Old spelling: --onnx DIR/alexnet.onnx.")] = None,
    engines_dir: Annotated[Path | None, typer.Option(hidden=True, help="Old spelling of --engines.")] = None,
    checkpoint: Annotated[
        Path, typer.Option(help="Checkpoint for the torch rows (the one the ONNX came from).")
    ] = BenchConfig.checkpoint,
    device: Annotated[
        DeviceChoice, typer.Option(help="Torch rows' device; onnxruntime's too where onnxruntime-gpu is installed.")
    ] = DeviceChoice(BenchConfig.device),
    max_images: Annotated[
        int, typer.Option(help="Held-out val images to rotate through and to judge accuracy on.")
    ] = BenchConfig.max_images,
) -> None:
    """Speed and accuracy of every backend x precision against the onnxruntime FP32 reference."""
    from ..bench.run import run_bench
    from ..files import is_special_file
    from ..plots import save_bench_plot
    from ..runners.registry import ModelFiles, read_files

    config = BenchConfig(
        batches=parse_batches(batch),
        backends=parse_choices(backends, BenchBackend.values(), "--backends"),
        precisions=None if precisions is None else parse_choices(precisions, BenchPrecision.values(), "--precisions"),
        iterations=iterations,
        duration_s=duration,
        warmup=warmup,
        cuda_graphs=cuda_graphs,
        onnx=onnx if onnx_dir is None else ArtifactLayout(export_dir=onnx_dir).onnx(),  # --onnx-dir: one release
        engines_dir=engines if engines_dir is None else engines_dir,
        checkpoint=checkpoint,
        device=device,
        max_images=max_images,
        stability=stability,
        window_s=window,
    )
    config.check()
    if plot is None and json_path is not None and not is_special_file(json_path):
        plot = json_path.with_suffix(".png")  # beside the JSON; a device such as /dev/null has no "beside"
    outputs = ReportFiles(json_path, plot)
    outputs.check(read_files(ModelFiles(config.onnx, config.layout.engines_dir, checkpoint)))  # before any timing
    report = run_bench(config, RichProgress())
    _print_bench_report(report, config)
    outputs.write(report, lambda path: save_bench_plot(report, path))


def _print_bench_report(report, config: BenchConfig) -> None:
    """The bench table with its footnotes and the harness-overhead verdicts."""
    from .console import bench_table

    if config.defaults_bound_rows:
        timed = f"{config.window_s:g} s windows until three agree within {config.stability:.0%}, at most {config.timed_duration_s:g} s"
    else:
        timed = f"{config.duration_s:g} s" if config.duration_s else f"{config.timed_iterations} iterations"
    title = (
        f"bench: {timed} after {config.warmup} warm-up per row, {report.images} {report.image_source} "
        f"(rotated); parity vs {report.reference}"
    )
    columns, rows, footnotes = bench_table(report)
    console.print(table(title, columns, rows))
    for footnote in footnotes:  # unmarked: they quote hints such as alexnet-deploy[gpu], not rich markup
        console.print(footnote, markup=False, highlight=False, soft_wrap=True)
    for check in report.harness:
        console.print(check.summary(), markup=False, highlight=False, soft_wrap=True)
    if not report.harness:
        console.print("harness overhead: not checked (needs the onnxruntime fp32 row)")
