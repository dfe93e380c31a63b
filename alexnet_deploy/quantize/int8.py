"""The INT8 format both Q/DQ layouts share: which ops are quantized, the symmetric
narrow range, and per-output-channel int8 weights behind a DequantizeLinear."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

QUANTIZED_OPS = ("Conv", "Gemm")
INT8_MAX = 127  # symmetric narrow range [-127, 127], as TensorRT quantizes


def symmetric_weight_scales(weights: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel scale = max |w| / 127 along every axis except ``axis``."""
    reduce_axes = tuple(i for i in range(weights.ndim) if i != axis)
    amax = np.abs(weights).max(axis=reduce_axes)
    return (np.maximum(amax, 1e-12) / INT8_MAX).astype(np.float32)


def quantize_weights(weights: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * weights.ndim
    shape[axis] = -1
    return np.clip(np.round(weights / scales.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)


@dataclass
class QuantizedWeight:
    """A Conv/Gemm weight as int8 per output channel behind a DequantizeLinear."""

    initializers: list[onnx.TensorProto]  # int8 values, float32 scales, int8 zero points
    dequantize: onnx.NodeProto
    scales: np.ndarray  # per output channel, float32


def quantize_weight_input(node: onnx.NodeProto, weight: onnx.TensorProto) -> QuantizedWeight:
    """Symmetric per-channel int8 for ``node``'s weight (input 1), the same for the
    TensorRT and the onnxruntime layouts; rewires ``node`` to the dequantized weight."""
    name = node.input[1]
    weights = numpy_helper.to_array(weight)
    axis = _weight_axis(node)
    scales = symmetric_weight_scales(weights, axis)
    initializers = [
        numpy_helper.from_array(quantize_weights(weights, scales, axis), f"{name}_int8"),
        numpy_helper.from_array(scales, f"{name}_scale"),
        numpy_helper.from_array(np.zeros(len(scales), np.int8), f"{name}_zero_point"),
    ]
    dequantize = helper.make_node(
        "DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"], [f"{name}_dq"], axis=axis
    )
    node.input[1] = f"{name}_dq"
    return QuantizedWeight(initializers, dequantize, scales)


def _weight_axis(node: onnx.NodeProto) -> int:
    """Output-channel axis of the weight: Conv [out, in, kH, kW]; Gemm B is [out, in]
    with transB=1 (as exported) and [in, out] otherwise."""
    if node.op_type == "Conv":
        return 0
    trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


@dataclass
class ActivationQdq:
    """A per-tensor QuantizeLinear/DequantizeLinear pair on one activation."""

    initializers: list[onnx.TensorProto]  # its scale and zero point
    nodes: list[onnx.NodeProto]  # QuantizeLinear, then DequantizeLinear
    output: str  # the dequantized tensor's name


def activation_qdq(tensor: str, scale: float, zero_point: np.int8 | np.uint8) -> ActivationQdq:
    """The Q/DQ pair on ``tensor`` as both INT8 layouts write it: its scale and zero
    point as initializers ``<tensor>_scale``/``<tensor>_zero_point`` (the zero point's
    dtype picks int8 or uint8), the dequantized tensor named ``<tensor>_dq``."""
    scale_name, zero_name, quantized = f"{tensor}_scale", f"{tensor}_zero_point", f"{tensor}_q"
    return ActivationQdq(
        [
            numpy_helper.from_array(np.float32(scale), scale_name),
            numpy_helper.from_array(np.asarray(zero_point), zero_name),
        ],
        [
            helper.make_node("QuantizeLinear", [tensor, scale_name, zero_name], [quantized]),
            helper.make_node("DequantizeLinear", [quantized, scale_name, zero_name], [f"{tensor}_dq"]),
        ],
        f"{tensor}_dq",
    )
