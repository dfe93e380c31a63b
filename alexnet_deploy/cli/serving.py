"""The serving commands: ``predict`` (in process or against a server), ``repository``
(a Triton model repository), ``serve`` (a local Triton server) and ``loadtest``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import DEFAULT_LAYOUT, MODEL_REPOSITORY_DIR, Precision
from ..choices import (
    PredictBackend,
    Protocol,
    RepositoryFlavour,
    ServedBackend,
)
from ..serve.config import (
    ONNX_MODEL,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
    LoadConfig,
    RepositoryConfig,
    ServerConfig,
)
from .console import console, error_console, one_line_errors, table
from .options import (
    Checkpoint,
    EnginePrecision,
    Engines,
    JsonReport,
    Onnx,
    ReportFiles,
    ServerProtocol,
)


@one_line_errors
def predict(
    images: Annotated[list[str], typer.Argument(help="Image files, directories or glob patterns.")],
    backend: Annotated[
        PredictBackend | None,
        typer.Option(
            help="The runner, in process (ignored with --url). Default: the fastest here: tensorrt if its engine "
            "exists and TensorRT runs, else openvino if installed, else onnxruntime.",
            show_default=False,
        ),
    ] = None,
    precision: EnginePrecision = Precision.FP32,
    top: Annotated[int, typer.Option(help="How many classes to show per image.")] = 5,
    json_path: JsonReport = None,
    url: Annotated[
        str | None, typer.Option(help="Ask a running Triton server (host:port) instead of running in process.")
    ] = None,
    protocol: ServerProtocol = Protocol.HTTP,
    onnx: Onnx = DEFAULT_LAYOUT.export_onnx,
    engines: Engines = DEFAULT_LAYOUT.engines_dir,
    checkpoint: Checkpoint = DEFAULT_LAYOUT.checkpoint,
) -> None:
    """Classify images: top-k class names and probabilities."""
    from ..runners.registry import ModelFiles, fastest_backend, read_files
    from ..serve.predict import image_inputs, local_classifier, open_runner, predict_files

    files = ModelFiles(onnx, engines, checkpoint)
    named, folders = image_inputs(images)
    outputs = ReportFiles(json_path)
    outputs.check((read_files(files) if url is None else {}) | named, folders)
    if url is not None:
        from ..serve.client import TritonClassifier

        with TritonClassifier(url, protocol) as client:
            report = predict_files(images, client.logits, client.classes(), top, f"triton {protocol}://{url}")
    else:
        chosen = backend.value if backend is not None else fastest_backend(precision, files)
        runner, info = open_runner(chosen, precision, files)
        with runner:
            report = predict_files(images, local_classifier(runner, info.preprocessing), info.classes, top, runner.name)
    for prediction in report.predictions:
        ranked = "  ".join(f"{name} {probability:.4f}" for name, probability in prediction.top)
        console.print(f"{prediction.source}: {ranked}", soft_wrap=True, highlight=False)
    for message in report.errors:
        error_console.print(f"error: {message}", soft_wrap=True, highlight=False)
    outputs.write(report)
    if report.errors:
        raise typer.Exit(1)


@one_line_errors
def repository(
    output: Annotated[Path, typer.Option(help="Model repository folder (replaced as a whole).")] = MODEL_REPOSITORY_DIR,
    onnx: Annotated[
        Path, typer.Option(help="FP32 export; its standard-op twin becomes alexnet_onnx.")
    ] = DEFAULT_LAYOUT.export_onnx,
    engines: Annotated[
        Path, typer.Option(help="Each alexnet.<precision>.plan here becomes alexnet_tensorrt_<precision>.")
    ] = DEFAULT_LAYOUT.engines_dir,
    target: Annotated[str, typer.Option(help="The model the `alexnet` ensemble classifies with.")] = ONNX_MODEL,
    max_batch: Annotated[
        int, typer.Option(help="alexnet_onnx's max_batch_size (engines take their profile's).")
    ] = RepositoryConfig.max_batch,
    queue_delay_us: Annotated[
        int, typer.Option(help="Dynamic batching: longest wait to grow a batch (µs).")
    ] = RepositoryConfig.queue_delay_us,
    instances: Annotated[
        int, typer.Option(help="Instances of each classification model.")
    ] = RepositoryConfig.instances,
    flavour: Annotated[
        RepositoryFlavour,
        typer.Option(
            help="stock: Triton's onnxruntime/openvino/tensorrt_plan backends; local: python backend only, for `serve`."
        ),
    ] = RepositoryFlavour(RepositoryConfig.flavour),
) -> None:
    """Write a Triton Inference Server model repository."""
    from ..serve.repository import write_repository

    config = RepositoryConfig(max_batch=max_batch, queue_delay_us=queue_delay_us, instances=instances, flavour=flavour)
    result = write_repository(onnx, output, engines, config, target)
    console.print(f"wrote {result.path}: {', '.join(result.models)}")
    for reason in result.skipped:
        console.print(f"skipped {reason}")


@one_line_errors
def serve(
    repository: Annotated[
        Path | None,
        typer.Option(
            help="A repository for the local server; default: one written from --onnx into a temporary folder."
        ),
    ] = None,
    onnx: Annotated[
        Path, typer.Option(help="FP32 export served when no --repository is given.")
    ] = DEFAULT_LAYOUT.export_onnx,
    backend: Annotated[
        ServedBackend | None,
        typer.Option(
            help="Runner behind the `alexnet` ensemble when no --repository is given. Default: the fastest here "
            "(tensorrt with its engine, else openvino, else onnxruntime).",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        Precision, typer.Option(help="Precision with --backend tensorrt (an engine) or openvino (fp32 or int8).")
    ] = Precision.FP32,
    engines: Engines = DEFAULT_LAYOUT.engines_dir,
    http_port: Annotated[int, typer.Option(help="HTTP port on 127.0.0.1 (0: any free port).")] = TRITON_HTTP_PORT,
    grpc_port: Annotated[int, typer.Option(help="gRPC port on 127.0.0.1 (0: any free port).")] = TRITON_GRPC_PORT,
    metrics_port: Annotated[
        int, typer.Option(help="Prometheus metrics port on 127.0.0.1 (0: any free port).")
    ] = TRITON_METRICS_PORT,
    log: Annotated[Path | None, typer.Option(help="Write the server's log here.")] = None,
) -> None:
    """Run a Triton Inference Server on 127.0.0.1 until Ctrl-C or SIGTERM."""
    from ..serve.server import serve_until_signal

    config = ServerConfig(repository, http_port, grpc_port, metrics_port, log=log)
    announce = lambda line: console.print(line, soft_wrap=True, highlight=False)  # noqa: E731
    from ..errors import DeployError
    from ..runners.registry import BACKENDS, ModelFiles, fastest_backend, unserved_reason

    files = ModelFiles(onnx, engines, DEFAULT_LAYOUT.checkpoint)
    chosen = backend.value if backend is not None else fastest_backend(precision, files, served=True)
    if backend is None and precision not in BACKENDS[chosen].served:
        raise DeployError(f"--precision {precision}: {unserved_reason(precision, files)}")
    serve_until_signal(config, onnx, announce, backend=chosen, precision=precision, engines_dir=engines)


@one_line_errors
def loadtest(
    url: Annotated[str, typer.Option(help="The Triton server, host:port (HTTP or gRPC port to match --protocol).")],
    protocol: ServerProtocol = Protocol(LoadConfig.protocol),
    concurrency: Annotated[str, typer.Option(help="Client threads per level, comma list.")] = ",".join(
        map(str, LoadConfig.concurrency)
    ),
    duration: Annotated[
        float | None, typer.Option(help=f"Seconds per level (default {LoadConfig.duration_s:g} unless --requests).")
    ] = None,
    requests: Annotated[int | None, typer.Option(help="Requests per level instead of a duration.")] = None,
    batch: Annotated[
        int, typer.Option(help="Images per request (needs --model alexnet_onnx above 1).")
    ] = LoadConfig.batch,
    model: Annotated[
        str, typer.Option(help="alexnet (ensemble: encoded images) or a classification model (tensors).")
    ] = LoadConfig.model,
    json_path: JsonReport = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw images/s and latency p50/p90/p99 per concurrency level (PNG).")
    ] = None,
) -> None:
    """Load a running Triton server: throughput, latency, errors, server batch sizes."""
    from ..serve.loadtest import parse_levels, run_loadtest

    outputs = ReportFiles(json_path, plot)
    outputs.check()
    config = LoadConfig(
        url,
        protocol,
        parse_levels(concurrency),
        None if requests is not None and duration is None else (duration or LoadConfig.duration_s),
        requests,
        batch,
        model,
    )
    report = run_loadtest(config)
    title = f"{model} over {protocol} at {url} (batching seen on {report.measured_model})"
    console.print(table(title, LOADTEST_COLUMNS, [_loadtest_row(row) for row in report.rows]))
    for row in report.rows:
        if row.first_error:
            error_console.print(
                f"concurrency {row.concurrency}: {row.errors} errors, first: {row.first_error}",
                soft_wrap=True,
                highlight=False,
            )
    from ..plots import save_loadtest_figure

    outputs.write(
        report,
        lambda path: save_loadtest_figure(report, f"{model} over {protocol} ({report.measured_model} batching)", path),
    )
    if any(row.errors for row in report.rows):
        raise typer.Exit(1)


LOADTEST_COLUMNS = (
    "concurrency", "requests", "errors", "req/s", "img/s", "p50 ms", "p90 ms", "p99 ms", "mean batch",
    "server batches (size×executions)",
)  # fmt: skip


def _loadtest_row(row) -> tuple:
    latency = (row.latency_ms.p50, row.latency_ms.p90, row.latency_ms.p99) if row.latency_ms else (None, None, None)
    batches = " ".join(f"{b}×{n}" for b, n in row.server_batches.items())
    return (
        row.concurrency,
        row.requests,
        row.errors,
        row.throughput_rps,
        row.images_per_s,
        *latency,
        row.mean_server_batch,
        batches,
    )
