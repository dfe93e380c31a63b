"""TensorRT engine build, LRN plugin and runner.

Tests marked ``tensorrt`` build a real engine from an ONNX graph holding our plugin
node and compare it with onnxruntime running the standard-op twin; they skip, with the
reason ``tensorrt_unavailable_reason()`` gives, where TensorRT or a GPU is missing.
Nothing stands in for TensorRT: the other tests cover the parts that do not need it
(sidecar, mismatch rules, inspector parsing, what happens when TensorRT is absent).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from alexnet_deploy.artifacts import sidecar_of
from alexnet_deploy.cuda_driver import CudaDevice, max_ptx_version
from alexnet_deploy.errors import BackendUnavailable, DeployError
from alexnet_deploy.graph import PLUGIN_LOOKUP_ATTRIBUTES, to_standard_lrn
from alexnet_deploy.lrn import LRNParams, lrn_reference
from alexnet_deploy.metadata import graph_precision
from alexnet_deploy.plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, parse_version
from alexnet_deploy.plugin.registration import register_lrn_plugin
from alexnet_deploy.tensorrt.availability import runner_unavailable_reason, tensorrt_unavailable_reason
from alexnet_deploy.tensorrt.config import EngineBuildConfig
from alexnet_deploy.tensorrt.engine import build_engine
from alexnet_deploy.tensorrt.inspector import datatype_of, layer_precisions
from alexnet_deploy.tensorrt.runner import TensorRTRunner
from alexnet_deploy.tensorrt.sidecar import (
    BatchProfile,
    EngineSidecar,
    LayerPrecision,
    read_sidecar,
    sidecar_mismatches,
)

REASON = tensorrt_unavailable_reason()
RUNNER_REASON = runner_unavailable_reason()
needs_tensorrt = pytest.mark.skipif(REASON is not None, reason=REASON or "")
needs_runner = pytest.mark.skipif(RUNNER_REASON is not None, reason=RUNNER_REASON or "")
without_tensorrt = pytest.mark.skipif(REASON is None, reason="TensorRT and a GPU are available here")

CHANNELS, HEIGHT, WIDTH = 12, 5, 7
LRN = LRNParams()  # the paper's LRN: size 5, alpha 5e-4 (ONNX convention), beta 0.75, k 2


def conv_lrn_model(half: bool = False) -> onnx.ModelProto:
    """x [batch, 3, 5, 7] -> 3x3 Conv (12 channels, pad 1) -> [Cast fp16] -> AlexNetLRN -> [Cast fp32] -> y.

    The Cast pair makes the plugin run in FP16 inside a strongly typed network, as it
    does in the FP16 AlexNet ONNX; I/O stays FP32 either way.
    """
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 8, (CHANNELS, 3, 3, 3)).astype(np.float32)  # large: the LRN term must matter
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1])]
    lrn_in, lrn_out = "conv", "y"
    if half:
        nodes.append(helper.make_node("Cast", ["conv"], ["conv16"], to=TensorProto.FLOAT16))
        lrn_in, lrn_out = "conv16", "y16"
    nodes.append(
        helper.make_node(
            PLUGIN_NAME,
            [lrn_in],
            [lrn_out],
            name=f"{PLUGIN_NAME}_0",  # TensorRT names the layer after the node
            domain=PLUGIN_NAMESPACE,
            **LRN.to_dict(),
            **PLUGIN_LOOKUP_ATTRIBUTES,
        )
    )
    if half:
        nodes.append(helper.make_node("Cast", ["y16"], ["y"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "conv_lrn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", CHANNELS, HEIGHT, WIDTH])],
        [numpy_helper.from_array(weight, "w")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_NAMESPACE, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def onnxruntime_twin(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(to_standard_lrn(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def images(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).normal(0, 1, (batch, 3, HEIGHT, WIDTH)).astype(np.float32)


def sample_sidecar(**changes) -> EngineSidecar:
    values = {
        "plan": "alexnet.fp16.plan",
        "precision": "fp16",
        "tensorrt_version": "10.13.0.35",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "profile": BatchProfile("images", [1, 3, 227, 227], [128, 3, 227, 227], [256, 3, 227, 227]),
        "onnx_path": "export/alexnet.fp16.onnx",
        "onnx_sha256": "ab" * 32,
        "build_seconds": 41.5,
        "workspace_gib": 4.0,
        "tf32": False,
        "plugin": "alexnet_deploy::AlexNetLRN v1",
        "built_at": "2026-01-01T00:00:00+00:00",
        "layers": [LayerPrecision("conv1", "CaskConvolution", "fp16", ["Row major linear FP16 format"])],
    }
    return EngineSidecar(**(values | changes))


H100 = CudaDevice("NVIDIA H100 80GB HBM3", (9, 0), (12, 8))


# --- without TensorRT: what runs everywhere -------------------------------------------------


def test_conv_lrn_fixture_means_conv_then_onnx_lrn():
    """The graph the TensorRT tests build from is what it claims: its onnxruntime twin
    equals a numpy convolution followed by the ONNX LRN specification."""
    model = conv_lrn_model()
    x = images(2)
    weight = numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n, c, h, w, kh, kw
    conv = np.einsum("nchwij,ocij->nohw", windows, weight)
    np.testing.assert_allclose(onnxruntime_twin(model, x), lrn_reference(conv, LRN), rtol=1e-4, atol=1e-4)


STANDIN_H100 = CudaDevice("NVIDIA H100 80GB HBM3", (9, 0), (12, 8))


@pytest.mark.parametrize("version", ["10.6.0", "10.9.0.34"])
def test_tensorrt_before_10_10_is_refused_with_the_reason(version):
    """The 10.9 parser looks Python plugins up by node name; our nodes are named node_lrn*."""
    reason = tensorrt_unavailable_reason(version, STANDIN_H100)
    assert reason is not None and "too old" in reason and ">= 10.10" in reason


@pytest.mark.parametrize("version", ["10.10.0.31", "10.16.1.11", "11.4.0.106"])
def test_supported_tensorrt_with_a_gpu_can_build(version):
    assert tensorrt_unavailable_reason(version, STANDIN_H100) is None


def test_runner_needs_pycuda_even_where_engines_can_be_built(monkeypatch):
    import alexnet_deploy.tensorrt.availability as availability

    monkeypatch.setattr(availability, "tensorrt_unavailable_reason", lambda: None)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pycuda" else real_find_spec(name, *a)
    )
    assert "pycuda is not installed" in availability.runner_unavailable_reason()


@without_tensorrt
def test_unavailable_reason_is_one_line():
    assert REASON and "\n" not in REASON


@without_tensorrt
def test_runner_load_says_why_tensorrt_cannot_run(tmp_path):
    with pytest.raises(BackendUnavailable, match=r"TensorRT|GPU"):
        TensorRTRunner(tmp_path / "alexnet.fp32.plan").load()


@without_tensorrt
def test_build_engine_raises_the_unavailable_reason(tmp_path):
    onnx_path = tmp_path / "conv_lrn.onnx"
    onnx.save(conv_lrn_model(), str(onnx_path))
    with pytest.raises(BackendUnavailable) as raised:
        build_engine(onnx_path, tmp_path / "alexnet.fp32.plan", EngineBuildConfig(opt_batch=2, max_batch=4))
    assert str(raised.value) == REASON
    assert not (tmp_path / "alexnet.fp32.plan").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_plugin_registration_says_tensorrt_is_missing():
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        register_lrn_plugin()


def test_sidecar_round_trips_through_json(tmp_path):
    sidecar = sample_sidecar()
    data = json.loads(sidecar.to_json())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "precision", "onnx_sha256", "build_seconds"):
        assert data[key] == getattr(sidecar, key)
    assert data["profile"] == {
        "input": "images",
        "min": [1, 3, 227, 227],
        "opt": [128, 3, 227, 227],
        "max": [256, 3, 227, 227],
    }
    assert data["layers"][0] == {
        "name": "conv1",
        "type": "CaskConvolution",
        "precision": "fp16",
        "outputs": ["Row major linear FP16 format"],
    }
    plan = tmp_path / "alexnet.fp16.plan"
    sidecar_of(plan).write_text(sidecar.to_json())
    assert sidecar_of(plan) == tmp_path / "alexnet.fp16.json"
    assert read_sidecar(plan) == sidecar


def test_missing_or_broken_sidecar_is_a_clear_error(tmp_path):
    plan = tmp_path / "alexnet.fp32.plan"
    with pytest.raises(DeployError, match="no sidecar"):
        read_sidecar(plan)
    sidecar_of(plan).write_text("{}")
    with pytest.raises(DeployError, match="not a valid engine sidecar"):
        read_sidecar(plan)


def test_sidecar_matches_the_machine_it_was_built_on():
    assert sidecar_mismatches(sample_sidecar(), "10.13.0.35", H100) == []


@pytest.mark.parametrize(
    ("installed", "device", "expected"),
    [
        ("10.14.1.48", H100, "built with TensorRT 10.13.0.35, this machine has TensorRT 10.14.1.48"),
        (None, H100, "this machine has no TensorRT"),
        (
            "10.13.0.35",
            CudaDevice("NVIDIA A100-SXM4-80GB", (8, 0), (12, 8)),
            "this machine has NVIDIA A100-SXM4-80GB (compute 8.0)",
        ),
        ("10.13.0.35", None, "this machine has no CUDA GPU"),
    ],
)
def test_sidecar_mismatch_names_what_differs(installed, device, expected):
    (problem,) = sidecar_mismatches(sample_sidecar(), installed, device)
    assert expected in problem


TRT10_LAYER = {  # DETAILED inspector output, TensorRT 10 spelling
    "Name": "/features/lrn1/AlexNetLRN",
    "LayerType": "PluginV3",
    "Inputs": [
        {
            "Name": "relu1",
            "Location": "Device",
            "Dimensions": [128, 96, 55, 55],
            "Format/Datatype": "Row major linear FP16 format",
        }
    ],
    "Outputs": [
        {
            "Name": "lrn1",
            "Location": "Device",
            "Dimensions": [128, 96, 55, 55],
            "Format/Datatype": "Row major linear FP16 format",
        }
    ],
}
TRT11_LAYER = {  # TensorRT 11 split "Format/Datatype" into "Datatype" and "Format"
    "Name": "/features/conv1/Conv",
    "LayerType": "CaskConvolution",
    "Inputs": [{"Name": "images_q", "Datatype": "Int8", "Format": "Channel major format where channel % 32 == 0"}],
    "Outputs": [{"Name": "conv1", "Datatype": "Int8", "Format": "Channel major format where channel % 32 == 0"}],
}


def test_layer_precision_reads_both_inspector_schemas():
    layers = layer_precisions({"Layers": [TRT10_LAYER, TRT11_LAYER, "Reformat_7"], "Bindings": ["images", "logits"]})
    assert [(layer.name, layer.type, layer.precision) for layer in layers] == [
        ("/features/lrn1/AlexNetLRN", "PluginV3", "fp16"),
        ("/features/conv1/Conv", "CaskConvolution", "int8"),
        ("Reformat_7", "unknown", "unknown"),  # LAYER_NAMES_ONLY verbosity: bare names
    ]
    assert layers[1].outputs == ["Int8 Channel major format where channel % 32 == 0"]
    sidecar = sample_sidecar(layers=layers)
    assert sidecar.precision_counts() == {"fp16": 1, "int8": 1, "unknown": 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Row major linear FP32 format", "fp32"),
        ("Float", "fp32"),
        ("Channel major FP16 format where channel % 8 == 0", "fp16"),
        ("Half", "fp16"),
        ("Row major Int8 format", "int8"),
        ("BFloat16", "bf16"),
        ("Int32", "int32"),
        ("N/A", "unknown"),
    ],
)
def test_datatype_names_are_normalised(text, expected):
    assert datatype_of(text) == expected


def test_precision_is_read_from_the_onnx():
    model = conv_lrn_model()
    assert graph_precision(model) == "fp32"
    half = onnx.ModelProto()
    half.CopyFrom(model)
    half.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.zeros((CHANNELS, 3, 3, 3), np.float16), "w"))
    assert graph_precision(half) == "fp16"
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    quantized.graph.node.insert(0, helper.make_node("QuantizeLinear", ["x", "s"], ["xq"]))
    assert graph_precision(quantized) == "int8"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"opt_batch": 512}, "min <= opt <= max"),
        ({"min_batch": 0}, "min <= opt <= max"),
        ({"precision": "int4"}, "unknown precision"),
        ({"workspace_gib": 0}, "workspace"),
    ],
)
def test_build_config_is_checked_before_any_work(changes, message):
    with pytest.raises(DeployError, match=message):
        EngineBuildConfig(**changes).check()


@pytest.mark.parametrize(
    ("driver", "isa"),
    [((12, 0), 80), ((12, 4), 84), ((12, 6), 85), ((12, 8), 87), ((12, 9), 88), ((13, 0), 90), ((13, 2), 92)],
)
def test_ptx_isa_follows_the_driver_version(driver, isa):
    assert max_ptx_version(driver) == isa


def test_versions_compare_numerically():
    assert parse_version("10.13.0.35") > parse_version("10.9.0") >= (10, 9)
    assert parse_version("11.0.0.post1") == (11, 0, 0)


def test_runner_takes_its_precision_from_the_plan_name(tmp_path):
    assert TensorRTRunner(tmp_path / "alexnet.int8.plan").name == "tensorrt/int8"


# --- with TensorRT and a GPU ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Engines for the FP32 and FP16 variants of the Conv -> plugin graph."""
    work = tmp_path_factory.mktemp("engines")
    results = {}
    for precision, half in (("fp32", False), ("fp16", True)):
        onnx_path = work / f"conv_lrn.{precision}.onnx"
        onnx.save(conv_lrn_model(half), str(onnx_path))
        config = EngineBuildConfig(
            precision=precision, opt_batch=2, max_batch=4, workspace_gib=1, timing_cache=work / "timing.cache"
        )
        results[precision] = build_engine(onnx_path, work / f"alexnet.{precision}.plan", config)
    return results


@pytest.mark.tensorrt
@needs_runner
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("fp16", 5e-3)])
def test_engine_with_plugin_matches_onnxruntime(built, precision, tolerance):
    result = built[precision]
    x = images(3)
    expected = onnxruntime_twin(conv_lrn_model(), x)
    with TensorRTRunner(result.plan) as runner:
        got = runner.infer(x)
        timing = runner.last_timing
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
    assert timing.compute_ms > 0 and timing.h2d_ms >= 0 and timing.d2h_ms >= 0


@pytest.mark.tensorrt
@needs_tensorrt
def test_sidecar_describes_the_engine(built):
    from alexnet_deploy.cuda_driver import cuda_device
    from alexnet_deploy.tensorrt.availability import tensorrt_version

    sidecar = read_sidecar(built["fp16"].plan)
    assert sidecar.tensorrt_version == tensorrt_version()
    assert sidecar.gpu_name == cuda_device().name
    assert (sidecar.profile.min[0], sidecar.profile.opt[0], sidecar.profile.max[0]) == (1, 2, 4)
    plugin_layers = [layer for layer in sidecar.layers if PLUGIN_NAME in layer.name or "Plugin" in layer.type]
    assert plugin_layers and all(layer.precision == "fp16" for layer in plugin_layers)


@pytest.mark.tensorrt
@needs_runner
def test_cuda_graph_replay_matches_the_plain_enqueue(built):
    """One graph per batch size, replayed with new input data each time."""
    with TensorRTRunner(built["fp32"].plan) as plain, TensorRTRunner(built["fp32"].plan, cuda_graphs=True) as graphed:
        for batch in (3, 2, 3):
            x = images(batch) * (batch + 1)  # different data for the replay of batch 3
            np.testing.assert_array_equal(graphed.infer(x), plain.infer(x))
        assert sorted(graphed._graphs) == [2, 3]
        assert graphed.last_timing.compute_ms > 0


@pytest.mark.tensorrt
@needs_runner
def test_runner_refuses_a_batch_above_the_profile(built):
    with TensorRTRunner(built["fp32"].plan) as runner:
        assert runner.max_batch == 4
        with pytest.raises(DeployError, match="exceeds"):
            runner.infer(images(5))


@pytest.mark.tensorrt
@needs_runner
def test_runner_refuses_an_engine_built_elsewhere(built, tmp_path):
    plan = tmp_path / "alexnet.fp32.plan"
    plan.write_bytes(built["fp32"].plan.read_bytes())
    sidecar = read_sidecar(built["fp32"].plan)
    sidecar_of(plan).write_text(
        json.dumps(json.loads(sidecar.to_json()) | {"tensorrt_version": "10.9.0.0", "gpu_name": "Some Other GPU"})
    )
    with pytest.raises(DeployError, match=r"does not match this machine: built with TensorRT 10.9.0.0"):
        TensorRTRunner(plan).load()


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="a GPU is present: gpu-check would run for real")
def test_gpu_check_without_a_gpu_exits_with_one_line(tmp_path):
    """Its GPU test asks the CUDA driver, not torch; without a GPU it stops at once."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu-check.sh"
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no CUDA GPU" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no report for a visit that checked nothing


@pytest.mark.tensorrt
@needs_runner
def test_engine_from_a_mixed_precision_int8_file(tiny_checkpoint, tmp_path):
    """What ``build --min-agreement`` writes for TensorRT: INT8 Q/DQ with conv4 in FP16
    between explicit casts and fc7 in FP32. The strongly typed build takes the casts
    as FP16 layers without a builder flag; the engine agrees with onnxruntime's run of
    the same file. Not run on the CPU machines (no TensorRT core): scripts/gpu-check.sh
    runs it where a GPU is lent."""
    from alexnet_deploy.data.preprocessing import held_out_images
    from alexnet_deploy.export.run import export
    from alexnet_deploy.metadata import export_metadata
    from alexnet_deploy.quantize.calibration import activation_amax, collect_statistics, quantized_activations
    from alexnet_deploy.quantize.mixed import mixed_int8

    fp32_path = tmp_path / "alexnet.onnx"
    export(tiny_checkpoint, fp32_path)
    model = onnx.load(str(fp32_path))
    metadata = export_metadata(model, "model")
    calibration, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "calibration", 64)
    amax = activation_amax(collect_statistics(model, calibration, tensors=quantized_activations(model)), "entropy")
    mixed = mixed_int8(model, amax, "tensorrt", {"conv4": "fp16", "fc7": "fp32"})
    onnx_path = tmp_path / "alexnet.int8.onnx"
    onnx.save(mixed, str(onnx_path))
    config = EngineBuildConfig(precision="int8", opt_batch=8, max_batch=32, workspace_gib=1, timing_cache=None)
    result = build_engine(onnx_path, tmp_path / "alexnet.int8.plan", config)
    counts = read_sidecar(result.plan).precision_counts()
    assert counts.get("int8", 0) > 0 and counts.get("fp16", 0) > 0, counts
    images_, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val", 32)
    with TensorRTRunner(result.plan) as runner:
        engine = runner.infer(images_)
    session = ort.InferenceSession(to_standard_lrn(mixed).SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"images": images_})[0]
    assert np.mean(engine.argmax(axis=1) == expected.argmax(axis=1)) >= 0.9
