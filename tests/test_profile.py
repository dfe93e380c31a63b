"""``alexnet-deploy profile``: the layers it names are AlexNet's with info's MACs; every
backend's ops land on the right layer, fused ops included and said so; the layer times
add up to the end-to-end time; and a layer made nine times more expensive takes a
correspondingly larger share in every backend's profile."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, invoke
from torch import nn

from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.export.run import export_model
from alexnet_deploy.inference import OpTime
from alexnet_deploy.info import layer_table
from alexnet_deploy.layer_names import LAYERS, WEIGHTED, layer_of, name_nodes, node_layers, output_layers
from alexnet_deploy.model import AlexNet, AlexNetConfig
from alexnet_deploy.profile.config import ProfileConfig
from alexnet_deploy.profile.layers import CONVERSIONS, layer_profiles, layer_work
from alexnet_deploy.profile.limits import Limits
from alexnet_deploy.profile.run import profile_row
from alexnet_deploy.runners import registry
from alexnet_deploy.runners.registry import open_model

# How far the tiny model's layer sum may stray from its end-to-end time, at batch
# COVERAGE_BATCH: the tiny network runs for ~15 ms, in which a backend's work outside the
# ops (below 1) and the profiler's own cost per op (above 1: torch.profiler records every
# aten op, OpenVINO's PERF_COUNT clock has its bookkeeping) weigh more than in the real
# model, where docs/bench.md reports 95-114%. At batch 8 (~3 ms) OpenVINO FP32 read
# 1.23-2.37 on an idle machine, so the batch is 32 (1.14-1.17 there). A layer counted
# twice, or half the layers lost, falls outside; the full-width test below holds 80-120%.
COVERAGE_BOUNDS = (0.4, 1.8)
COVERAGE_BATCH = 32
ROW = ProfileConfig(runs=3, iterations=6)
LIMITS = Limits(fp32_gflops=100.0, int8_gops=400.0, copy_gbps=20.0, size=0)
# (backend, precision) pairs that run here on the shared tiny model
CPU_ROWS = (
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "int8"),
    ("torch", "fp32"),
)


@pytest.fixture(scope="module")
def tiny_files(tiny_precisions, tiny_checkpoint) -> registry.ModelFiles:
    fp32, _ = tiny_precisions
    return registry.ModelFiles(fp32, fp32.parent / "engines", tiny_checkpoint)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((8, 3, 227, 227)).astype(np.float32)


def test_layer_names_and_macs_match_info(tiny_files, tiny_checkpoint):
    work = layer_work(onnx.load(str(tiny_files.onnx)))
    table = layer_table(load_checkpoint(tiny_checkpoint).build_model())
    assert [w.layer for w in work] == [row.name for row in table.rows] == list(LAYERS)
    assert [w.macs for w in work] == [row.macs for row in table.rows]
    assert [w.parameters for w in work] == [row.parameters for row in table.rows]


def test_the_full_model_has_the_papers_macs():
    """The figures the profile of the main job's model shows: info's, which the test
    above ties to the graph's (exporting the full model here would cost ~30 s)."""
    table = layer_table(AlexNet(AlexNetConfig(num_classes=1000)))
    assert table.row("conv1").macs == 105_415_200
    assert table.row("fc6").macs == 37_748_736


def test_every_node_of_the_int8_graph_is_counted_with_its_layer(tiny_files):
    model = onnx.load(str(tiny_files.layout.onnx("int8-ort")))
    layers = node_layers(model)
    nodes = list(model.graph.node)
    assert layers[0] == "conv1"  # the input's QuantizeLinear prepares conv1
    for node, layer in zip(nodes, layers, strict=True):
        if node.op_type == "Relu":
            producer = next(n for n in nodes if node.input[0] in n.output)
            assert layer == layers[nodes.index(producer)]  # a ReLU finishes its conv/fc
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("weight_int8"):
            consumer = next(n for n in nodes if node.output[0] in n.input)
            assert layer == layers[nodes.index(consumer)]  # weights belong to their layer
    named = name_nodes(model)
    assert [layer_of(n.name) for n in named.graph.node] == layers
    assert output_layers(named) == {"logits": "fc8"}


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("conv1/Relu_1:0_nchwc", "conv1"),  # onnxruntime's NCHWc rewrite, named after the output
        ("fused fc6", "fc6"),  # onnxruntime's Gemm+Relu fusion
        ("conv2_token_5", "conv2"),  # onnxruntime's QDQ fusion
        ("fc7/WithoutBiases/DequantizationMultiply", "fc7"),  # OpenVINO
        ("conv5 + conv5/Relu_13", "conv5"),  # TensorRT's fused layer name
        ("pool5:0_nchwc", "pool5"),
        ("logits", "fc8"),  # OpenVINO names the last layer after the graph output
        ("ReorderInput", None),
        ("fc60", None),
    ],
)
def test_layer_of_maps_what_backends_report(name, layer):
    assert layer_of(name, {"logits": "fc8"}) == layer


def test_fused_and_inserted_ops_are_counted_and_said_so(tiny_files):
    work = layer_work(onnx.load(str(tiny_files.onnx)))
    ops = [
        OpTime("conv1/WithoutBiases", "Convolution", 2.0, "i8", ("conv1/WithoutBiases", "conv1", "conv1/Relu_1")),
        OpTime("conv1/DequantizeLinear_1", "FakeQuantize", 0.5),
        OpTime("conv1/WithoutBiases_acdb_abcd_norm1", "Reorder", 0.25),
        OpTime("norm1", "LRN", 1.0),
        OpTime("mystery", "Subgraph", 0.25),
    ]
    profiles = {p.layer: p for p in layer_profiles(ops, work, 4, "int8", LIMITS, integer=True)}
    assert profiles["conv1"].ms == 2.5 and profiles[CONVERSIONS].ms == 0.25 and profiles["norm1"].ms == 1.0
    assert profiles["conv1"].counted_with_it == ["FakeQuantize 0.5 ms", "fused: conv1/Relu_1"]
    assert profiles["unmapped"].ms == 0.25
    assert profiles["conv2"].ms == 0 and profiles["conv2"].macs == work[3].macs
    conv1 = profiles["conv1"]
    assert conv1.gmacs_per_s == pytest.approx(work[0].macs * 4 / 2.5e-3 / 1e9)
    assert conv1.limit_share == pytest.approx(2 * conv1.gmacs_per_s / LIMITS.int8_gops)
    assert profiles["norm1"].bound == "memory" and profiles["norm1"].limit_share is None


def _profile(tiny_files, images, backend: str, precision: str):
    model = onnx.load(str(tiny_files.onnx))
    with registry.open_profiled(backend, precision, tiny_files) as runner:
        return profile_row(runner, images, ROW, layer_work(model), LIMITS, output_layers(model))


@pytest.mark.parametrize(("backend", "precision"), CPU_ROWS)
def test_layer_times_add_up_to_the_end_to_end_time(tiny_files, backend, precision):
    """Up to three tries, the one closest to 1 judged: on a shared 2-core machine one
    load spike during the profiled or the timed calls moves a few-ms network's ratio
    several-fold; a layer counted twice or lost moves it in every try."""
    images = np.random.default_rng(0).standard_normal((COVERAGE_BATCH, 3, 227, 227)).astype(np.float32)
    tries = []
    for _ in range(3):
        row = _profile(tiny_files, images, backend, precision)
        timed = {layer.layer for layer in row.layers if layer.ms > 0}
        assert set(WEIGHTED) <= timed, f"untimed weighted layers: {set(WEIGHTED) - timed}"
        assert "unmapped" not in timed, [layer.ops for layer in row.layers if layer.layer == "unmapped"]
        tries.append(row.coverage)
        if COVERAGE_BOUNDS[0] <= row.coverage <= COVERAGE_BOUNDS[1]:
            break
    best = min(tries, key=lambda c: abs(math.log(c)))
    low, high = COVERAGE_BOUNDS
    assert low <= best <= high, f"{backend} {precision}: layers / end to end in each try {tries}"


def _planted(checkpoint_path: Path, kernel: int) -> nn.Module:
    """The shared model with conv3 widened from 3x3 to ``kernel`` x ``kernel`` (same
    output shape): kernel² / 9 times its multiply-accumulates, nothing else changed."""
    model = load_checkpoint(checkpoint_path).build_model()
    old = model.features.conv3
    model.features.conv3 = nn.Conv2d(old.in_channels, old.out_channels, kernel, padding=kernel // 2)
    return model.eval()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_a_planted_expensive_layer_takes_its_share(tiny_checkpoint, images, backend):
    shares = {}
    for kernel in (3, 11):
        model = _planted(tiny_checkpoint, kernel)
        graph = export_model(model)
        work = layer_work(graph)
        assert {w.layer: w.macs for w in work}["conv3"] == layer_table(model).row("conv3").macs
        if backend == "torch":
            checkpoint = load_checkpoint(tiny_checkpoint)
            source = replace(checkpoint, state_dict=model.state_dict())
            source.build_model = lambda model=model: model  # type: ignore[method-assign]
        else:
            source = name_nodes(graph)
        with open_model(backend, source, "fp32") as runner:
            row = profile_row(runner, images, ROW, work, LIMITS, output_layers(graph))
        shares[kernel] = next(layer.share for layer in row.layers if layer.layer == "conv3")
    # 13x the MACs (11² / 3²): conv3 goes from a few percent of the time to a large part
    # of it; at least 3x its share on every backend (torch's per-op overhead dilutes it most)
    assert shares[3] > 0 and shares[11] >= 3 * shares[3], shares


def test_cli_writes_the_json_the_issue_names(tiny_files, tmp_path):
    out, plot = tmp_path / "profile.json", tmp_path / "profile.png"
    result = invoke(
        "profile",
        "--onnx",
        str(tiny_files.onnx),
        "--engines",
        str(tmp_path / "engines"),
        "--backends",
        "onnxruntime,tensorrt",
        "--precisions",
        "int8",
        "--batch",
        "1,4",
        "--runs",
        "1",
        "--iterations",
        "2",
        "--limit-size",
        "64",
        "--limit-rounds",
        "1",
        "--json",
        str(out),
        "--plot",
        str(plot),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [(r["backend"], r["precision"], r["batch"]) for r in report["rows"]] == [
        ("onnxruntime", "int8", 1),
        ("onnxruntime", "int8", 4),
    ]
    row = report["rows"][0]
    assert row["end_to_end_ms"] > 0 and row["limit"] == "INT8"
    assert [layer["layer"] for layer in row["layers"]][: len(LAYERS)] == list(LAYERS)
    assert {"layer", "ms", "macs", "gmacs_per_s", "limit_share", "bound", "ops"} <= set(row["layers"][0])
    assert report["skipped"][0]["backend"] == "tensorrt"
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert "conv1" in result.output and "end to end" in result.output


def test_cli_bad_input_is_one_line(tiny_files, tmp_path):
    assert_one_line_error(invoke("profile", "--onnx", str(tmp_path / "none.onnx")), "not found")
    assert_one_line_error(invoke("profile", "--onnx", str(tiny_files.onnx), "--backends", "cuda"), "unknown backend")
    assert_one_line_error(invoke("profile", "--onnx", str(tiny_files.onnx), "--runs", "0"), "--runs")


def test_each_limit_is_its_fastest_kernel_and_says_which(monkeypatch):
    """A limit set by a slow library is no limit (OpenVINO's conv layers once ran at 150%
    of torch's and onnxruntime's int8 GEMMs): each limit is the fastest of its kernels'
    medians, named in the report."""
    from alexnet_deploy.profile import limits as limits_module

    rates = {
        "FP32 GEMM (slow)": iter([100.0, 110.0, 90.0]),
        "FP32 conv (fast)": iter([500.0, 480.0, 520.0]),
        "INT8 GEMM (slow)": iter([1300.0, 1200.0, 1250.0]),
        "INT8 conv (fast)": iter([1900.0, 2000.0, 1800.0]),
        "copy": iter([30.0, 31.0, 29.0]),
    }
    monkeypatch.setattr(limits_module, "kernels", lambda size: {name: it.__next__ for name, it in rates.items()})
    limits = limits_module.measure_limits(size=64, rounds=3)
    assert (limits.fp32_gflops, limits.int8_gops, limits.copy_gbps) == (500.0, 1900.0, 30.0)
    assert limits.fastest == {"fp32": "FP32 conv (fast)", "int8": "INT8 conv (fast)"}
    assert limits.to_dict()["fastest"] == limits.fastest


def test_openvino_kernels_time_the_kernel_they_name():
    """Each of OpenVINO's four kernels compiles at a small size and reports a finite
    positive rate from its PERF_COUNT node time (a node type that matched nothing
    would divide by zero)."""
    pytest.importorskip("openvino")
    from alexnet_deploy.profile.limits import openvino_kernel

    rates = {(kind, integer): openvino_kernel(kind, integer, 256)() for kind in ("gemm", "conv") for integer in (0, 1)}
    assert all(math.isfinite(rate) and rate > 0 for rate in rates.values()), rates


@pytest.fixture(scope="module")
def full_size_graph() -> onnx.ModelProto:
    """The paper's full-width AlexNet (untrained: timing needs its shapes, not its
    weights), exported as the pipeline exports it."""
    import torch

    torch.manual_seed(0)
    return export_model(AlexNet(AlexNetConfig(num_classes=10)).eval())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_full_size_layer_times_add_up_within_the_issues_bound(full_size_graph, backend):
    """At full width the layers carry the time, so the issue's 80-120% applies (the
    main job's model measured 95-114% on every row, docs/bench.md). Up to three tries,
    the one closest to 1 judged, as for the tiny model."""
    images = np.random.default_rng(0).standard_normal((16, 3, 227, 227)).astype(np.float32)
    work = layer_work(full_size_graph)
    tries = []
    for _ in range(3):
        with open_model(backend, name_nodes(full_size_graph), "fp32") as runner:
            row = profile_row(runner, images, ROW, work, LIMITS, output_layers(full_size_graph))
        assert {layer.layer for layer in row.layers if layer.ms > 0} >= set(WEIGHTED)
        tries.append(row.coverage)
        if 0.8 <= row.coverage <= 1.2:
            break
    best = min(tries, key=lambda c: abs(math.log(c)))
    assert 0.8 <= best <= 1.2, f"{backend}: layers / end to end in each try {tries}"
