"""A real Triton Inference Server (nvidia-pytriton's tritonserver binary) on
127.0.0.1 with ephemeral ports, serving the tiny export: served logits equal the
in-process runner's, dynamic batching batches, bad requests fail alone, SIGTERM stops it."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, bomb_png_bytes, invoke
from typer.testing import CliRunner

from alexnet_deploy.cli import app
from alexnet_deploy.errors import DeployError
from alexnet_deploy.serve.client import TritonClassifier
from alexnet_deploy.serve.config import RepositoryConfig, ServerConfig
from alexnet_deploy.serve.repository import write_repository
from alexnet_deploy.serve.server import TritonServer


def start_server(served_onnx, root) -> TritonServer:
    repository = write_repository(
        served_onnx, root / "repo", config=RepositoryConfig(flavour="local", preprocess_instances=1)
    ).path
    return TritonServer(ServerConfig(repository, startup_timeout_s=180, log=root / "server.log")).start()


@pytest.fixture(scope="module")
def server(served_onnx, tmp_path_factory):
    running = start_server(served_onnx, tmp_path_factory.mktemp("triton"))
    yield running
    running.stop()


def url(server, protocol: str) -> str:
    return server.http_url if protocol == "http" else server.grpc_url


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_logits_equal_the_in_process_onnxruntime_runner(server, protocol, held_out_pngs, reference_logits):
    with TritonClassifier(url(server, protocol), protocol) as client:
        served = np.stack([client.logits(f"digit{i}", data) for i, data in enumerate(held_out_pngs)])
        assert client.classes() == [str(c) for c in range(10)]
    assert np.abs(served - reference_logits).max() <= 1e-5
    assert (served.argmax(1) == reference_logits.argmax(1)).all()


def test_concurrent_requests_are_dynamically_batched(server, held_out_pngs, reference_logits):
    def executions_and_inferences() -> tuple[int, int]:
        with TritonClassifier(server.grpc_url, "grpc") as client:
            stats = client.statistics("alexnet_onnx")
        return int(stats.get("execution_count", 0)), int(stats.get("inference_count", 0))

    def worker(offset: int) -> list[tuple[int, np.ndarray]]:
        protocol = "grpc" if offset % 2 else "http"
        with TritonClassifier(url(server, protocol), protocol) as client:
            return [
                (i, client.logits(str(i), held_out_pngs[i]))
                for _ in range(2)
                for i in range(offset, len(held_out_pngs), 2)
            ]

    before = executions_and_inferences()
    with ThreadPoolExecutor(8) as pool:
        results = [item for batch in pool.map(worker, [0, 1] * 4) for item in batch]
    # Triton counts an execution after sending its responses, so the last answers can
    # arrive before the statistics include them: poll briefly for the full count.
    deadline = time.perf_counter() + 5.0
    after = executions_and_inferences()
    while after[1] - before[1] < 128 and time.perf_counter() < deadline:
        time.sleep(0.02)
        after = executions_and_inferences()
    assert len(results) == 8 * 16
    for index, logits in results:
        assert np.abs(logits - reference_logits[index]).max() <= 1e-5
    executions, inferences = after[0] - before[0], after[1] - before[1]
    assert inferences == 128
    assert executions < inferences, f"{executions} executions for {inferences} requests: no batching happened"


def good_request_still_served(server, held_out_pngs, reference_logits) -> None:
    with TritonClassifier(server.http_url) as client:
        assert np.abs(client.logits("digit0", held_out_pngs[0]) - reference_logits[0]).max() <= 1e-5


@pytest.mark.parametrize(
    "model, inputs, message",
    [
        ("alexnet_onnx", {"images": np.zeros((1, 3, 10, 10), np.float32)}, "unexpected shape for input 'images'"),
        (
            "alexnet_onnx",
            {"images": np.zeros((1, 3, 57, 57), np.float64)},
            "inference input 'images' data-type is 'FP64'",
        ),
        ("alexnet", {"IMAGE": np.zeros(8, np.float32)}, "inference input 'IMAGE' data-type is 'FP32'"),
        ("alexnet", {"IMAGE": np.frombuffer(b"definitely not a png", np.uint8)}, "IMAGE: not a readable image"),
        ("alexnet", {"IMAGE": np.zeros(0, np.uint8)}, "IMAGE: empty image (0 bytes)"),
        (
            "alexnet",
            {"IMAGE": np.frombuffer(bomb_png_bytes(), np.uint8)},
            "IMAGE: not a readable image: its header claims 400,000,000 pixels",
        ),
        ("resnet50", {"IMAGE": np.zeros(4, np.uint8)}, "resnet50"),
    ],
    ids=[
        "wrong-shape",
        "wrong-dtype",
        "wrong-dtype-ensemble",
        "corrupt-image",
        "empty-image",
        "decompression-bomb",
        "unknown-model",
    ],
)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_get_a_clear_error_and_the_server_keeps_serving(
    server,
    protocol,
    model,
    inputs,
    message,
    held_out_pngs,
    reference_logits,
):
    with TritonClassifier(url(server, protocol), protocol) as client, pytest.raises(DeployError) as caught:
        client.infer_raw(inputs, model=model)
    assert message in str(caught.value), str(caught.value)
    assert str(caught.value).startswith(f"model {model}: ")
    assert "Traceback" not in str(caught.value), str(caught.value)
    good_request_still_served(server, held_out_pngs, reference_logits)


def test_predict_url_prints_what_in_process_predict_prints(server, served_onnx, held_out_pngs, tmp_path):
    for index, data in enumerate(held_out_pngs[:4]):
        (tmp_path / f"digit{index}.png").write_bytes(data)
    local = CliRunner().invoke(app, ["predict", str(tmp_path), "--onnx", str(served_onnx), "--top", "3"])
    for protocol in ("http", "grpc"):
        served = CliRunner().invoke(
            app,
            [
                "predict",
                str(tmp_path),
                "--url",
                f"{protocol}://{url(server, protocol)}",
                "--protocol",
                protocol,
                "--top",
                "3",
            ],
        )
        assert served.exit_code == 0 == local.exit_code, served.output
        assert served.stdout == local.stdout


def test_metrics_endpoint_serves_prometheus_text(server):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'nv_inference_request_success{model="alexnet"' in text


@pytest.mark.parametrize("protocol, model, batch", [("http", "alexnet", 1), ("grpc", "alexnet_onnx", 3)])
def test_loadtest_counts_every_request_and_the_servers_batches_add_up(server, protocol, model, batch):
    from alexnet_deploy.serve.config import LoadConfig
    from alexnet_deploy.serve.loadtest import run_loadtest

    config = LoadConfig(url(server, protocol), protocol, (1, 6), duration_s=None, requests=18, batch=batch, model=model)
    report = run_loadtest(config)
    assert report.measured_model == "alexnet_onnx"
    for row in report.rows:
        assert (row.requests, row.errors) == (18, 0)
        assert sum(size * count for size, count in row.server_batches.items()) == 18 * batch  # every image, once
        assert row.latency_ms.p50 <= row.latency_ms.p90 <= row.latency_ms.p99
        assert row.images_per_s == pytest.approx(18 * batch / row.seconds)
    assert report.rows[0].server_batches == {batch: 18}  # one client: nothing to batch together


def test_loadtest_cli_writes_json_and_rejects_bad_options(server, tmp_path):
    import json

    from PIL import Image

    from alexnet_deploy.plots import CURVES_DPI, CURVES_SIZE_INCHES

    path, plot = tmp_path / "load.json", tmp_path / "load.png"
    args = [
        "loadtest",
        "--url",
        server.http_url,
        "--concurrency",
        "1,2",
        "--requests",
        "4",
        "--json",
        str(path),
        "--plot",
        str(plot),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [row["requests"] for row in json.loads(path.read_text())["rows"]] == [4, 4]
    with Image.open(plot) as picture:  # a real PNG of the figure's size
        assert picture.format == "PNG"
        assert picture.size == tuple(round(side * CURVES_DPI) for side in CURVES_SIZE_INCHES)
    result = CliRunner().invoke(app, ["loadtest", "--url", server.http_url, "--json", str(path), "--plot", str(path)])
    assert result.exit_code == 1 and "same file" in result.stderr
    result = CliRunner().invoke(app, ["loadtest", "--url", server.http_url, "--batch", "4"])
    assert result.exit_code == 1 and "one encoded image per request" in result.stderr
    result = CliRunner().invoke(app, ["loadtest", "--url", server.http_url, "--concurrency", "1,x"])
    assert (
        result.exit_code == 1
        and result.stderr.strip() == "error: --concurrency takes positive integers such as 1,4,16; got '1,x'"
    )


def test_the_served_openvino_model_gives_onnxruntimes_answers(served_onnx, tmp_path, held_out_pngs, reference_logits):
    """The local flavour's alexnet_openvino_fp32 (our OpenVINO runner inside Triton's
    python backend) behind the ensemble, on a real server."""
    repository = write_repository(
        served_onnx,
        tmp_path / "repo",
        config=RepositoryConfig(flavour="local", preprocess_instances=1),
        target="alexnet_openvino_fp32",
    ).path
    server = TritonServer(ServerConfig(repository, startup_timeout_s=180, log=tmp_path / "server.log")).start()
    try:
        with TritonClassifier(server.http_url) as client:
            served = np.stack([client.logits(f"digit{i}", data) for i, data in enumerate(held_out_pngs)])
    finally:
        server.stop()
    assert np.abs(served - reference_logits).max() <= 1e-4
    assert (served.argmax(1) == reference_logits.argmax(1)).all()


def test_sigterm_stops_the_server_cleanly(served_onnx, tmp_path):
    """Its own server, so stopping it leaves the module's server to the other tests
    whatever order they run in."""
    server = start_server(served_onnx, tmp_path)
    log = server.config.log
    started = time.perf_counter()
    assert server.stop() == 0
    assert time.perf_counter() - started < 30
    assert "Signal (15) received" in log.read_text()
    with pytest.raises(DeployError, match="cannot reach Triton"):
        TritonClassifier(server.http_url, timeout_s=2).logits("x", b"\x89PNG")


def test_serve_refuses_a_stock_repository_this_triton_cannot_run(served_onnx, tmp_path):
    write_repository(served_onnx, tmp_path / "stock")
    result = CliRunner().invoke(app, ["serve", "--repository", str(tmp_path / "stock"), "--http-port", "0"])
    assert result.exit_code == 1
    assert "alexnet_onnx needs the onnxruntime backend" in result.stderr and len(result.stderr.splitlines()) == 1


@contextlib.contextmanager
def serve_command(output: Path, *options: str):
    """``alexnet-deploy serve OPTIONS`` in a child process on ephemeral ports, its stdout
    and stderr in ``output``; yields (the process, its HTTP host:port) once it is ready,
    and kills it if the caller has not stopped it."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-c", "from alexnet_deploy.cli import app; app()", "serve", *options]
    command += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    with open(output, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while "ready in" not in output.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        text = output.read_text()
        address = re.search(r"HTTP (127\.0\.0\.1:\d+)", text)
        assert address, text
        yield process, address.group(1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_serve_command_runs_until_sigterm_then_exits_cleanly(served_onnx, tmp_path, held_out_pngs, reference_logits):
    output = tmp_path / "serve.out"
    with serve_command(output, "--onnx", str(served_onnx)) as (process, address):
        with TritonClassifier(address) as client:
            # the default backend is the fastest here (openvino where installed): FP32 parity, not bit-equality
            assert np.abs(client.logits("digit0", held_out_pngs[0]) - reference_logits[0]).max() <= 1e-4
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert output.read_text().splitlines()[-2:] == ["stopping: draining in-flight requests", "stopped"]
    with pytest.raises(DeployError, match="cannot reach Triton"):
        TritonClassifier(address, timeout_s=2).logits("x", b"\x89PNG")


def test_serve_precision_int8_serves_the_int8_graph(tiny_precisions, tmp_path, held_out_pngs, reference_logits):
    """Without an engine (an empty --engines), ``--precision int8`` is OpenVINO running the
    onnxruntime-layout INT8 graph that ``build`` wrote beside the export: its answers,
    not the FP32 export's."""
    pytest.importorskip("openvino")
    from PIL import Image

    from alexnet_deploy.artifacts import ORT_INT8, ArtifactLayout
    from alexnet_deploy.metadata import export_metadata
    from alexnet_deploy.runners.openvino import OpenVinoRunner

    fp32, _ = tiny_precisions
    output = tmp_path / "serve.out"
    options = ("--onnx", str(fp32), "--precision", "int8", "--engines", str(tmp_path / "no-engines"))
    with serve_command(output, *options) as (process, address):
        with TritonClassifier(address) as client:
            served = np.stack([client.logits(f"digit{i}", data) for i, data in enumerate(held_out_pngs)])
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert "the alexnet ensemble uses alexnet_openvino_int8" in output.read_text()
    preprocessing = export_metadata(onnx.load(str(fp32)), str(fp32)).preprocessing
    batch = np.stack([preprocessing(Image.open(io.BytesIO(data))) for data in held_out_pngs])
    with OpenVinoRunner(ArtifactLayout.from_onnx(fp32).onnx(ORT_INT8), "int8") as runner:
        in_process = runner.infer(batch)
    scale = np.abs(reference_logits).max()
    assert np.abs(served - in_process).max() <= 1e-3 * scale  # the same graph, runtime and preprocessing
    assert np.abs(served - reference_logits).max() > 1e-4 * scale  # quantised: not the FP32 export
    assert (served.argmax(1) == reference_logits.argmax(1)).mean() >= 15 / 16


@pytest.mark.parametrize(
    "options, fragment",
    [
        (("--precision", "fp16"), "--precision fp16: no backend here serves fp16 (tensorrt: "),
        (
            ("--backend", "onnxruntime", "--precision", "int8"),
            "serves fp32, not int8; serve int8 with --backend tensorrt or openvino",
        ),
        (("--backend", "openvino", "--precision", "fp16"), "--backend openvino serves fp32 or int8, not fp16"),
    ],
    ids=["fp16-without-an-engine", "onnxruntime-int8", "openvino-fp16"],
)
def test_serve_refuses_a_precision_it_would_not_serve(served_onnx, tmp_path, options, fragment):
    """No engine here (an empty --engines), so fp16 has no runner; onnxruntime's served
    model is the FP32 export: one line, not an FP32 server answering for another precision."""
    if options[:2] == ("--backend", "openvino"):
        pytest.importorskip("openvino")
    with socket.socket() as taken:  # should the refusal regress, Triton fails on this port instead of serving on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = invoke(
            "serve", "--onnx", str(served_onnx), "--engines", str(tmp_path / "none"), "--http-port", port, *options
        )
    assert_one_line_error(result, fragment)
