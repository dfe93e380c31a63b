"""Mixed precision: naming the Conv/Gemm nodes as AlexNet's layers, and writing either
INT8 layout with chosen layers left out of INT8 -- in FP16 where FP16's range holds,
else in FP32.

A layer left out of INT8 gets no Q/DQ (:func:`.qdq.insert_qdq` and
:func:`.onnxruntime.insert_qdq_for_onnxruntime` take ``keep_float``). In FP16 it is
wrapped in explicit casts -- ``Cast(to=FLOAT16)`` on its activation input, its weight
and bias stored as float16, ``Cast(to=FLOAT)`` on its output -- so a strongly typed
TensorRT build (TensorRT 11 has no FP16 builder flag) runs that layer in FP16 from the
graph's types alone, and everything around it keeps the FP32 the Q/DQ layout expects.

Everything here except :func:`fits_fp16`'s inputs is a pure function over the protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..artifacts import Precision
from ..errors import DeployError
from .int8 import QUANTIZED_OPS
from .onnxruntime import insert_qdq_for_onnxruntime
from .qdq import insert_qdq

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
LAYERS = CONV_LAYERS + FC_LAYERS
FALLBACK_PRECISIONS = (Precision.FP16.value, Precision.FP32.value)
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_SMALLEST_NORMAL = float(np.finfo(np.float16).tiny)  # 6.1e-5; below it fp16 keeps fewer bits
# An activation must stay below FP16_MAX / this on the calibration images: headroom for
# inputs a little beyond what calibration saw.
FP16_HEADROOM = 2.0
LAYOUTS = ("tensorrt", "onnxruntime")


def layer_nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """AlexNet's layer name -> its Conv/Gemm node: the Conv nodes in graph order are
    conv1-conv5, the Gemm nodes fc6-fc8 (the export's order is the network's)."""
    weights = {t.name for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[0] not in weights]
    gemms = [n for n in model.graph.node if n.op_type == "Gemm" and n.input[0] not in weights]
    if len(convs) != len(CONV_LAYERS) or len(gemms) != len(FC_LAYERS):
        raise DeployError(
            f"expected AlexNet's {len(CONV_LAYERS)} Conv and {len(FC_LAYERS)} Gemm nodes, "
            f"found {len(convs)} and {len(gemms)}"
        )
    return dict(zip(LAYERS, convs + gemms, strict=True))


def check_fallback(fallback: Mapping[str, str]) -> None:
    unknown = [name for name in fallback if name not in LAYERS]
    bad = [p for p in fallback.values() if p not in FALLBACK_PRECISIONS]
    if unknown or bad:
        raise DeployError(
            f"layers out of INT8 must be among {', '.join(LAYERS)} in {' or '.join(FALLBACK_PRECISIONS)}, "
            f"got {dict(fallback)}"
        )


def layer_tensors(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Each layer's (activation input, raw output) tensor names."""
    return {name: (node.input[0], node.output[0]) for name, node in layer_nodes(model).items()}


def fits_fp16(model: onnx.ModelProto, layer: str, activation_amax: float) -> bool:
    """Whether ``layer`` keeps its accuracy in FP16: its activations (``activation_amax``,
    the larger of its input's and output's max |x| on the calibration images) stay below
    FP16's largest value with :data:`FP16_HEADROOM`, its weights and bias too, and no
    input channel has all its non-zero weights below FP16's smallest normal number
    (there FP16 keeps only a few significant bits: what the 1/s side of a channel
    rescaled by s looks like)."""
    node = layer_nodes(model)[layer]
    initializers = {t.name: t for t in model.graph.initializer}
    weight = numpy_helper.to_array(initializers[node.input[1]])
    bias = numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
    if activation_amax * FP16_HEADROOM > FP16_MAX or np.abs(weight).max() > FP16_MAX:
        return False
    if bias is not None and np.abs(bias).max() > FP16_MAX:
        return False
    trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
    input_axis = 1 if node.op_type == "Conv" or trans_b else 0
    per_input = np.moveaxis(np.abs(weight), input_axis, 0).reshape(weight.shape[input_axis], -1).max(axis=1)
    return not np.any((per_input > 0) & (per_input < FP16_SMALLEST_NORMAL))


def fallback_precisions(model: onnx.ModelProto, layers: list[str], ranges: Mapping[str, float]) -> dict[str, str]:
    """FP16 for each of ``layers`` whose range holds in FP16 (:func:`fits_fp16`), else
    FP32. ``ranges``: each layer's max |x| over its input and output."""
    return {
        layer: Precision.FP16.value if fits_fp16(model, layer, ranges[layer]) else Precision.FP32.value
        for layer in layers
    }


def cast_to_fp16(model: onnx.ModelProto, outputs: set[str]) -> onnx.ModelProto:
    """The Conv/Gemm nodes producing ``outputs`` in FP16 between explicit casts: input
    cast to float16, weight and bias stored as float16, output cast back to float32
    under its old name. Pure."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    initializers = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    half_inputs: dict[str, str] = {}
    converted: set[str] = set()
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS or node.output[0] not in outputs:
            nodes.append(node)
            continue
        activation = node.input[0]
        if activation not in half_inputs:
            half_inputs[activation] = f"{activation}_fp16"
            nodes.append(helper.make_node("Cast", [activation], [half_inputs[activation]], to=TensorProto.FLOAT16))
        node.input[0] = half_inputs[activation]
        for index in range(1, len(node.input)):
            name = node.input[index]
            if not name:
                continue
            if name not in converted:
                half = numpy_helper.to_array(initializers[name]).astype(np.float16)
                graph.initializer.append(numpy_helper.from_array(half, f"{name}_fp16"))
                converted.add(name)
            node.input[index] = f"{name}_fp16"
        output = node.output[0]
        node.output[0] = f"{output}_fp16"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [node.output[0]], [output], to=TensorProto.FLOAT))
    still_read = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name not in converted or t.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    return result


def mixed_int8(
    model: onnx.ModelProto, activation_amax: dict[str, float], layout: str, fallback: Mapping[str, str]
) -> onnx.ModelProto:
    """The INT8 graph in ``layout`` ("tensorrt" or "onnxruntime") with the layers of
    ``fallback`` (layer -> "fp16" / "fp32") left out of INT8 in that precision. An
    empty ``fallback`` is the all-INT8 graph, unchanged. Pure."""
    check_fallback(fallback)
    outputs = {name: node.output[0] for name, node in layer_nodes(model).items()}
    keep_float = {outputs[layer] for layer in fallback}
    quantize = {"tensorrt": insert_qdq, "onnxruntime": insert_qdq_for_onnxruntime}[layout]
    quantized = quantize(model, activation_amax, keep_float)
    half = {outputs[layer] for layer, precision in fallback.items() if precision == Precision.FP16.value}
    return cast_to_fp16(quantized, half) if half else quantized
