"""benchmarks/openvino_levers.py's graph edits compute the function they replace: a
lever's speed is only comparable with the shipped graph's if its outputs are the same
numbers. Each edited graph is run on onnxruntime (an independent executor from the
OpenVINO the benchmark times) against the unedited one, on the shared model's
onnxruntime-layout INT8 file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from alexnet_deploy.graph import load_model, to_standard_lrn

LEVERS_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "openvino_levers.py"


@pytest.fixture(scope="module")
def levers():
    spec = importlib.util.spec_from_file_location("openvino_levers", LEVERS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["openvino_levers"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped(tiny_precisions) -> onnx.ModelProto:
    fp32, _ = tiny_precisions
    return to_standard_lrn(load_model(fp32.with_name("alexnet.int8-ort.onnx"), require_plugin=False))


def _logits(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


# (edit, the tolerance its arithmetic allows): a rearrangement of the same integer
# products is exact; a rewritten float LRN differs by float rounding (the shared model's
# logits are O(1)); one Q/DQ rounding step removed moves the logits by a quantization step
EDITS = {
    "conv1-pad-4": (lambda levers, model: levers.conv1_padded(model, 4), 0.0),
    "conv1-space-to-depth": (lambda levers, model: levers.conv1_space_to_depth(model), 0.0),
    "fc-weights-in-by-out": (lambda levers, model: levers.fc_weights_in_by_out(model), 0.0),
    "lrn-as-matmul": (lambda levers, model: levers.lrn_as_window_sum(model), 1e-4),
    "lrn-as-conv": (lambda levers, model: levers.lrn_as_window_sum(model, sum_by="conv"), 1e-4),
    "lrn-decomposed": (lambda levers, model: levers.lrn_decomposed(model), 1e-4),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_a_lever_computes_what_the_shipped_graph_computes(levers, shipped, name):
    edit, tolerance = EDITS[name]
    images = np.random.default_rng(0).standard_normal((4, 3, 227, 227)).astype(np.float32)
    expected = _logits(shipped, images)
    edited = edit(levers, shipped)
    onnx.checker.check_model(edited)
    difference = np.abs(_logits(edited, images) - expected).max()
    assert difference <= tolerance * max(1.0, np.abs(expected).max()), (name, difference)
    assert np.abs(expected).max() > 0.1  # logits that could show a difference


def test_a_broken_space_to_depth_rearrangement_is_caught(levers, shipped):
    """The planted fault: the weight's block offsets transposed (row and column offset
    swapped) — the same shapes, a different convolution."""
    edited = levers.conv1_space_to_depth(shipped)
    conv1 = next(node for node in edited.graph.node if node.op_type == "Conv")
    dequantize = next(node for node in edited.graph.node if conv1.input[1] in node.output)
    weight = next(t for t in edited.graph.initializer if t.name == dequantize.input[0])
    values = onnx.numpy_helper.to_array(weight)
    out, channels, taps = values.shape[0], values.shape[1] // 16, values.shape[2]
    swapped = values.reshape(out, 4, 4, channels, taps, taps).transpose(0, 2, 1, 3, 4, 5).reshape(values.shape)
    weight.CopyFrom(onnx.numpy_helper.from_array(np.ascontiguousarray(swapped), weight.name))
    images = np.random.default_rng(0).standard_normal((2, 3, 227, 227)).astype(np.float32)
    assert np.abs(_logits(edited, images) - _logits(shipped, images)).max() > 1e-3
