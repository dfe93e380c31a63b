"""The ``alexnet-deploy`` command line. Commands are thin: parse, call one library
function, render. Errors the user can fix come back as one line on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from . import __version__
from .artifacts import ORT_INT8, ArtifactLayout, Precision
from .bench.config import DEFAULT_ITERATIONS, BenchConfig
from .choices import BenchBackend, BenchPrecision, DeviceChoice
from .console import RichProgress, console, error_console, one_line_errors, table
from .errors import DeployError

try:  # typer >= 0.24 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:
    from click.exceptions import ClickException, NoArgsIsHelpError


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Usage errors (unknown option, a value Typer cannot parse) as one ``error:`` line
    and exit code 2, like every other error, instead of rich's multi-line box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as error:
            error.show()  # bare `alexnet-deploy`: the help text, as before
            sys.exit(error.exit_code)
        except ClickException as error:
            message = " ".join(error.format_message().split())
            command = error.ctx.command_path if getattr(error, "ctx", None) is not None else "alexnet-deploy"
            print(f"error: {message} (see `{command} --help`)", file=sys.stderr)
            sys.exit(error.exit_code)
        except typer.Abort:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    help="AlexNet from training to verified FP16/INT8 TensorRT inference.\n\n"
    "Pipeline: train -> export -> build (quantize + engine) -> bench.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"alexnet-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Typer calls this before any command; it exists to carry the --version option."""


@app.command()
@one_line_errors
def train(
    data: Annotated[str, typer.Option(help="'digits' (embedded, no download) or an ImageFolder directory.")] = "digits",
    epochs: Annotated[int, typer.Option(help="Total epochs (with --resume: up to this many).")] = 3,
    batch_size: Annotated[int, typer.Option(help="Images per SGD step and process (32 gives enough steps for the 3-epoch default on digits); under torchrun the effective batch is this x world size.")] = 32,
    lr: Annotated[float, typer.Option(help="Initial learning rate (SGD, momentum 0.9).")] = 0.01,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay (paper: 5e-4).")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="'plateau' (divide lr by 10 when val loss stalls, as the paper) or 'step'.")] = "plateau",
    step_size: Annotated[int, typer.Option(help="Epochs between lr drops with --schedule step.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    output: Annotated[Path, typer.Option(help="Checkpoint path; metrics go beside it.")] = Path("export/alexnet.pt"),
    seed: Annotated[int, typer.Option(help="Seed for weights, shuffling and augmentation.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use at most this many images (smoke runs); the split is made among them.")] = None,
    groups: Annotated[int | None, typer.Option(help="2 = the paper's two-GPU split of conv2/4/5 (default); 1 = dense.")] = None,
    width: Annotated[float | None, typer.Option(help="Channel multiplier in (0, 1] (default 1); below 1 only for quick experiments.")] = None,
    augment: Annotated[bool, typer.Option(help="Random crops, flips and PCA colour jitter (paper, Section 4.1).")] = True,
    dropout: Annotated[float | None, typer.Option(help="Dropout before fc6 and fc7 (default 0.5, the paper's; with --resume the run's own).", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(help="Data-loading worker processes per training process (unset: 0 for the in-memory digits, min(4, cores) for an ImageFolder).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run saved at --output (same --data; --limit, --groups, --width, --dropout default to the run's).")] = False,
    precision: Annotated[str, typer.Option(help="fp32, bf16 (autocast; CPU or CUDA) or fp16 (autocast + gradient scaler; CUDA only). Weights stay fp32.")] = "fp32",
    dist_timeout: Annotated[float, typer.Option(help="Under torchrun: seconds to wait for the rendezvous and for any collective before failing.")] = 600.0,
) -> None:
    """Train AlexNet and write the checkpoint (weights + classes + preprocessing).

    Under torchrun (`torchrun --nproc-per-node N $(which alexnet-deploy) train ...`)
    it trains data-parallel with DistributedDataParallel; rank 0 writes the files.
    """
    from .data.augmentation import Augmentation
    from .plots import curves_writer
    from .train.config import TrainConfig
    from .train.loop import train as run_training

    config = TrainConfig(
        data=data,
        output=output,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        step_size=step_size,
        device=device,
        seed=seed,
        limit=limit,
        groups=groups,
        width=width,
        augment=Augmentation() if augment else Augmentation(False, False, 0.0),
        dropout=dropout,
        workers=workers,
        resume=resume,
        precision=precision,
        dist_timeout_s=dist_timeout,
    )
    # the curves are drawn beside the checkpoint after every epoch (rank 0)
    result = run_training(config, RichProgress(), on_epoch=curves_writer(ArtifactLayout.from_checkpoint(output).curves))
    if not result.is_main:
        return  # rank 0 reports for every rank
    rows = [
        (m.epoch, m.lr, m.train_loss, m.train_top1, m.val_loss, m.val_top1, m.val_top5, f"{m.train_images_per_s:.1f}")
        for m in result.history
    ]
    console.print(
        table("training", ["epoch", "lr", "train loss", "train top-1", "val loss", "val top-1", "val top-5", "img/s"], rows)
    )
    last = result.history[-1]
    console.print(
        f"checkpoint {result.checkpoint}  val top-1 {last.val_top1:.2%} (chance {1 / result.num_classes:.0%})  "
        f"top-5 {last.val_top5:.2%}  metrics {result.metrics_log}"
        + (f"  ({result.world_size} processes, effective batch {batch_size * result.world_size})" if result.world_size > 1 else ""),
        soft_wrap=True,
    )


@app.command()
@one_line_errors
def export(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint written by `train`.")] = Path("export/alexnet.pt"),
    output: Annotated[Path, typer.Option(help="ONNX file to write (only after it validates).")] = Path("export/alexnet.onnx"),
    opset: Annotated[int, typer.Option(help="ONNX opset (18-23).")] = 18,
    lrn: Annotated[str, typer.Option(help="'plugin': LRN as our TensorRT plugin's custom op; 'native': ONNX LRN.")] = "plugin",
) -> None:
    """Export FP32 ONNX (dynamic batch) and validate it against the torch model."""
    from .export.run import export as run_export

    with console.status("exporting to ONNX and validating against torch"):
        result = run_export(checkpoint, output, opset=opset, lrn=lrn)
    console.print(f"wrote {result.path} (opset {result.opset}, LRN as {result.lrn})")
    console.print(result.validation.summary(), soft_wrap=True)


@app.command()
@one_line_errors
def build(
    fp32: Annotated[bool, typer.Option("--fp32", help="FP32 (the exported ONNX as is).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 ONNX (FP32 I/O) and engine.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="INT8 Q/DQ ONNX calibrated on the calibration set, and engine.")] = False,
    onnx_path: Annotated[Path, typer.Option("--onnx", help="FP32 ONNX written by `export`.")] = Path("export/alexnet.onnx"),
    calibration: Annotated[Path, typer.Option(help="Calibration images (flat or one folder per class) and scale cache.")] = Path("calibration"),
    calib_from_data: Annotated[bool, typer.Option(help="Fill --calibration from the training data's held-out calibration split.")] = False,
    calib_images: Annotated[int | None, typer.Option(help="Calibration images to use (default: up to 500).")] = None,
    calib_method: Annotated[str, typer.Option(help="Activation ranges: entropy (KL, as TensorRT's legacy calibrator), max or percentile.")] = "entropy",
    percentile: Annotated[float, typer.Option(help="Percentile of |x| for --calib-method percentile.")] = 99.99,
    recalibrate: Annotated[bool, typer.Option(help="Ignore the scale cache and calibrate again.")] = False,
    compare_methods: Annotated[bool, typer.Option(help="Also evaluate every method and onnxruntime's quantize_static, with img/s beside accuracy.")] = False,
    engines: Annotated[Path, typer.Option(help="Where TensorRT plans, sidecars and the timing cache go.")] = Path("engines"),
    opt_batch: Annotated[int, typer.Option(help="Optimization-profile batch TensorRT tunes for.")] = 128,
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine accepts.")] = 256,
    workspace_gib: Annotated[float, typer.Option(help="TensorRT workspace limit (GiB).")] = 4.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON.")] = None,
) -> None:
    """Write FP16/INT8 ONNX, report their accuracy (onnxruntime), build TensorRT engines.

    With no precision flag, all three are built. Precision is carried by the ONNX
    (strongly typed networks: TensorRT 11 has no FP16/INT8 builder flags).
    """
    from dataclasses import asdict

    from .build.config import THROUGHPUT_BATCH, BuildConfig
    from .build.run import build as run_build
    from .build.run import check_outputs
    from .files import write_text_atomic

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
        engines_dir=engines,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_gib=workspace_gib,
    )
    check_outputs(config, {"--json": json_path})
    report = run_build(config, RichProgress())
    for line in report.calibration:
        console.print(line, soft_wrap=True)
    for precision, path in report.onnx.items():
        console.print(f"{precision} ONNX: {path}", soft_wrap=True)
    if report.onnxruntime_int8 is not None:
        console.print(f"int8 ONNX for onnxruntime: {report.onnxruntime_int8}", soft_wrap=True)
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
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(asdict(report), indent=2, default=str) + "\n")


@app.command()
@one_line_errors
def doctor(
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Versions of the toolchain, the GPU, and which pipeline steps can run here."""
    from dataclasses import asdict

    from .doctor import diagnose

    report = diagnose()
    if json_output:
        console.print_json(json.dumps(asdict(report)))
        raise typer.Exit(1 if report.problems else 0)
    console.print(table("packages", ["package", "version"], [(k, v or "not installed") for k, v in report.versions.items()]))
    console.print(f"CUDA GPU: {report.gpu or 'none'}")
    console.print(table("pipeline steps on this machine", ["step", "can run"], list(report.steps.items())))
    for problem in report.problems:
        error_console.print(f"problem: {problem}", highlight=False)
    if report.problems:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def info(
    checkpoint: Annotated[Path | None, typer.Option(help="Describe this checkpoint's model; show its metadata.")] = None,
    groups: Annotated[int | None, typer.Option(help="No checkpoint: 2 = the paper's split (default), 1 = dense.")] = None,
    classes: Annotated[int | None, typer.Option(help="No checkpoint: output classes (default 1000).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write table, totals, metadata as JSON.")] = None,
    filters: Annotated[Path | None, typer.Option(help="Write conv1's kernels as a PNG grid (paper's Figure 3).")] = None,
) -> None:
    """The layer table (shapes, parameters, MACs, activations), measured from the model."""
    from .files import check_distinct_paths, check_png_path, check_writable_destination
    from .info import COLUMNS, inspect_model, write_info_json
    from .plots import save_filter_grid

    if filters is not None:
        check_png_path(filters, "--filters")
    check_distinct_paths({"--checkpoint": checkpoint}, {"--json": json_path, "--filters": filters})
    for path in (json_path, filters):
        if path is not None:
            check_writable_destination(path)
    report = inspect_model(checkpoint, groups=groups, classes=classes)
    shape = "×".join(str(v) for v in report.table.input_shape)
    config = report.config
    title = f"AlexNet at {shape} float32 (groups {config.groups}, {config.num_classes} classes, width {config.width})"
    console.print(table(title, COLUMNS, report.table.display_rows()))
    console.print(
        f"parameters {report.table.parameters:,}  GMACs {report.table.gmacs:.3f}  "
        f"activations {report.table.activation_bytes / 2**20:.2f} MiB at batch 1"
    )
    if report.checkpoint is not None:
        for field, value in report.checkpoint.rows():
            # markup off: the LRN convention and paths hold [brackets] rich would eat as tags
            console.print(f"{field + ':':<16}{value}", markup=False, highlight=False, soft_wrap=True)
    if json_path is not None:
        write_info_json(report, json_path)
        console.print(f"wrote {json_path}")
    if filters is not None:
        weight = report.model.features.conv1.weight
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


# ------------------------------------------------------------------ bench options


def parse_batches(text: str) -> tuple[int, ...]:
    """``"128"`` or ``"1,8,32,128"`` -> positive batch sizes, in the given order."""
    batches = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise DeployError(f"--batch takes positive integers such as 128 or 1,8,32,128; got {part or text!r}")
        batches.append(int(part))
    if len(set(batches)) != len(batches):
        raise DeployError(f"--batch lists a size twice: {text!r}")
    return tuple(batches)


def parse_choices(text: str, allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """A comma-separated subset of ``allowed``, order kept."""
    from .bench.config import check_choices

    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    check_choices(chosen, allowed, option)
    return chosen


@app.command()
@one_line_errors
def bench(
    batch: Annotated[str, typer.Option(help="Batch size, or a comma list for a sweep: 1,8,32,128.")] = "128",
    backends: Annotated[str, typer.Option(help=f"Comma list of {', '.join(BenchBackend.values())}.")] = ",".join(
        BenchBackend.values()
    ),
    precisions: Annotated[
        str | None,
        typer.Option(help=f"Comma list of {', '.join(BenchPrecision.values())} (bf16: torch rows, bf16-capable CPU or GPU). "
        "Default: all, listing those not built yet as skipped; a named precision whose ONNX or engine is missing is an error."),
    ] = None,
    iterations: Annotated[int | None, typer.Option(help=f"Timed iterations per row (default {DEFAULT_ITERATIONS} unless --duration).")] = None,
    duration: Annotated[float | None, typer.Option(help="Time each row for this many seconds instead.")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed iterations before timing.")] = BenchConfig.warmup,
    cuda_graphs: Annotated[bool, typer.Option("--cuda-graphs", help="Replay CUDA graphs: TensorRT captures execute_async_v3 per batch size (trtexec --useCudaGraph); torch on CUDA.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every row as JSON (plot goes beside it unless --plot).")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG: throughput vs batch for a sweep, else top-1 vs throughput.")] = None,
    onnx: Annotated[Path, typer.Option(help="FP32 export (the reference); its fp16/int8 twins are read from beside it.")] = BenchConfig.onnx,
    engines: Annotated[Path, typer.Option(help="Where the TensorRT plans alexnet.<precision>.plan are.")] = BenchConfig.engines_dir,
    onnx_dir: Annotated[Path | None, typer.Option(hidden=True, help="Old spelling: --onnx DIR/alexnet.onnx.")] = None,
    engines_dir: Annotated[Path | None, typer.Option(hidden=True, help="Old spelling of --engines.")] = None,
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint for the torch rows (the one the ONNX came from).")] = BenchConfig.checkpoint,
    device: Annotated[DeviceChoice, typer.Option(help="Torch rows' device; onnxruntime's too where onnxruntime-gpu is installed.")] = DeviceChoice.AUTO,
    max_images: Annotated[int, typer.Option(help="Held-out val images to rotate through and to judge accuracy on.")] = BenchConfig.max_images,
) -> None:
    """Speed and accuracy of every backend x precision against the onnxruntime FP32 reference."""
    from .bench.run import run_bench
    from .console import bench_table
    from .files import (
        check_distinct_paths,
        check_png_path,
        check_writable_destination,
        is_special_file,
        write_text_atomic,
    )
    from .plots import save_bench_plot

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
    )
    config.check()
    if plot is None and json_path is not None and not is_special_file(json_path):
        plot = json_path.with_suffix(".png")  # beside the JSON; a device such as /dev/null has no "beside"
    if plot is not None:
        check_png_path(plot, "--plot")
    layout = config.layout
    inputs = {"--checkpoint": checkpoint} | {f"the {p} ONNX": layout.onnx(p) for p in (*Precision, ORT_INT8)}
    check_distinct_paths(inputs, {"--json": json_path, "--plot": plot})
    for path in (json_path, plot):
        if path is not None:
            check_writable_destination(path)  # before minutes of timing, not after
    report = run_bench(config, RichProgress())
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
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if plot is not None:
        save_bench_plot(report, plot)
        console.print(f"wrote {plot}")


@app.command()
@one_line_errors
def predict(
    images: Annotated[list[str], typer.Argument(help="Image files, directories or glob patterns.")],
    backend: Annotated[str, typer.Option(help="onnxruntime, torch or tensorrt (in process; ignored with --url).")] = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8.")] = "fp32",
    top: Annotated[int, typer.Option(help="How many classes to show per image.")] = 5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the predictions as JSON.")] = None,
    url: Annotated[str | None, typer.Option(help="Ask a running Triton server (host:port) instead of running in process.")] = None,
    protocol: Annotated[str, typer.Option(help="http or grpc (with --url).")] = "http",
    onnx: Annotated[Path, typer.Option(help="FP32 export: preprocessing and classes come from its metadata.")] = Path("export/alexnet.onnx"),
    engines: Annotated[Path, typer.Option(help="Folder of TensorRT engines (--backend tensorrt).")] = Path("engines"),
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint for --backend torch.")] = Path("export/alexnet.pt"),
) -> None:
    """Classify images: top-k class names and probabilities."""
    from .files import write_text_atomic
    from .serve.predict import local_classifier, open_runner, predict_files

    if json_path is not None:
        from .files import check_writable_destination

        check_writable_destination(json_path)
    if url is not None:
        from .serve.client import TritonClassifier

        with TritonClassifier(url, protocol) as client:
            report = predict_files(images, client.logits, client.classes(), top, f"triton {protocol}://{url}")
    else:
        runner, info = open_runner(backend, precision, onnx, engines, checkpoint)
        with runner:
            report = predict_files(images, local_classifier(runner, info.preprocessing), info.classes, top, runner.name)
    for prediction in report.predictions:
        ranked = "  ".join(f"{name} {probability:.4f}" for name, probability in prediction.top)
        console.print(f"{prediction.source}: {ranked}", soft_wrap=True, highlight=False)
    for message in report.errors:
        error_console.print(f"error: {message}", soft_wrap=True, highlight=False)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2))
        console.print(f"wrote {json_path}")
    if report.errors:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def repository(
    output: Annotated[Path, typer.Option(help="Model repository folder (replaced as a whole).")] = Path("model_repository"),
    onnx: Annotated[Path, typer.Option(help="FP32 export; its standard-op twin becomes alexnet_onnx.")] = Path("export/alexnet.onnx"),
    engines: Annotated[Path, typer.Option(help="Each alexnet.<precision>.plan here becomes alexnet_tensorrt_<precision>.")] = Path(
        "engines"
    ),
    target: Annotated[str, typer.Option(help="The model the `alexnet` ensemble classifies with.")] = "alexnet_onnx",
    max_batch: Annotated[int, typer.Option(help="alexnet_onnx's max_batch_size (engines take their profile's).")] = 64,
    queue_delay_us: Annotated[int, typer.Option(help="Dynamic batching: longest wait to grow a batch (µs).")] = 2000,
    instances: Annotated[int, typer.Option(help="Instances of each classification model.")] = 1,
    flavour: Annotated[
        str, typer.Option(help="'stock': Triton's onnxruntime/tensorrt_plan backends; 'local': python backend only, for `serve`.")
    ] = "stock",
) -> None:
    """Write a Triton Inference Server model repository."""
    from .serve.repository import RepositoryConfig, write_repository

    config = RepositoryConfig(max_batch=max_batch, queue_delay_us=queue_delay_us, instances=instances, flavour=flavour)
    result = write_repository(onnx, output, engines, config, target)
    console.print(f"wrote {result.path}: {', '.join(result.models)}")
    for reason in result.skipped:
        console.print(f"skipped {reason}")


@app.command()
@one_line_errors
def serve(
    repository: Annotated[
        Path | None, typer.Option(help="A repository for the local server; default: one written from --onnx into a temporary folder.")
    ] = None,
    onnx: Annotated[Path, typer.Option(help="FP32 export served when no --repository is given.")] = Path("export/alexnet.onnx"),
    backend: Annotated[
        str, typer.Option(help="Runner behind the `alexnet` ensemble when no --repository is given: onnxruntime or tensorrt.")
    ] = "onnxruntime",
    precision: Annotated[str, typer.Option(help="Engine precision with --backend tensorrt: fp32, fp16 or int8.")] = "fp32",
    engines: Annotated[Path, typer.Option(help="Folder of TensorRT engines (--backend tensorrt).")] = Path("engines"),
    http_port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1 (0: any free port).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port on 127.0.0.1 (0: any free port).")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port on 127.0.0.1 (0: any free port).")] = 8002,
    log: Annotated[Path | None, typer.Option(help="Write the server's log here.")] = None,
) -> None:
    """Run a Triton Inference Server on 127.0.0.1 until Ctrl-C or SIGTERM."""
    from .serve.server import ServerConfig, serve_until_signal

    config = ServerConfig(repository, http_port, grpc_port, metrics_port, log=log)
    announce = lambda line: console.print(line, soft_wrap=True, highlight=False)  # noqa: E731
    serve_until_signal(config, onnx, announce, backend=backend, precision=precision, engines_dir=engines)


@app.command()
@one_line_errors
def loadtest(
    url: Annotated[str, typer.Option(help="The Triton server, host:port (HTTP or gRPC port to match --protocol).")],
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    concurrency: Annotated[str, typer.Option(help="Client threads per level, comma list.")] = "1,4,16",
    duration: Annotated[float | None, typer.Option(help="Seconds per level (default 10 unless --requests).")] = None,
    requests: Annotated[int | None, typer.Option(help="Requests per level instead of a duration.")] = None,
    batch: Annotated[int, typer.Option(help="Images per request (needs --model alexnet_onnx above 1).")] = 1,
    model: Annotated[str, typer.Option(help="alexnet (ensemble: encoded images) or a classification model (tensors).")] = "alexnet",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write every level as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw images/s and latency p50/p90/p99 per concurrency level (PNG).")] = None,
) -> None:
    """Load a running Triton server: throughput, latency, errors, server batch sizes."""
    from .files import check_distinct_paths, check_png_path, check_writable_destination, write_text_atomic
    from .serve.loadtest import LoadConfig, parse_levels, run_loadtest

    check_distinct_paths({}, {"--json": json_path, "--plot": plot})
    for path in (json_path, plot):
        if path is not None:
            check_writable_destination(path)
    if plot is not None:
        check_png_path(plot, "--plot")
    config = LoadConfig(
        url, protocol, parse_levels(concurrency), None if requests is not None and duration is None else (duration or 10.0), requests, batch, model
    )
    report = run_loadtest(config)
    rows = [
        (
            row.concurrency,
            row.requests,
            row.errors,
            row.throughput_rps,
            row.images_per_s,
            *(
                (row.latency_ms.p50, row.latency_ms.p90, row.latency_ms.p99)
                if row.latency_ms
                else (None, None, None)
            ),
            row.mean_server_batch,
            " ".join(f"{b}×{n}" for b, n in row.server_batches.items()),
        )
        for row in report.rows
    ]
    columns = ["concurrency", "requests", "errors", "req/s", "img/s", "p50 ms", "p90 ms", "p99 ms", "mean batch", "server batches (size×executions)"]
    console.print(table(f"{model} over {protocol} at {url} (batching seen on {report.measured_model})", columns, rows))
    for row in report.rows:
        if row.first_error:
            error_console.print(f"concurrency {row.concurrency}: {row.errors} errors, first: {row.first_error}", soft_wrap=True, highlight=False)
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        console.print(f"wrote {json_path}")
    if plot is not None:
        from .plots import save_loadtest_figure

        save_loadtest_figure(report, f"{model} over {protocol} ({report.measured_model} batching)", plot)
        console.print(f"wrote {plot}")
    if any(row.errors for row in report.rows):
        raise typer.Exit(1)
