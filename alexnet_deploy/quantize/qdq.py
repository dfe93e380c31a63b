"""The INT8 graph laid out for TensorRT: symmetric QuantizeLinear/DequantizeLinear
pairs (zero point 0) on the inputs of every Conv and Gemm.

Explicit quantization: TensorRT 11 has no INT8 builder flag (TensorRT 10 builds the
same file with the strongly-typed flag), so the precision lives in the ONNX.
Activations are quantized per tensor with the calibrated amax
(:mod:`.calibration`), weights per output channel (:mod:`.int8`); this is where
TensorRT fuses the pairs into INT8 kernels. LRN, ReLU and max-pool stay in floating
point between them.

Our own pass rather than a library's: the scales must follow TensorRT's rules
(narrow-range symmetric weights, activations calibrated the way TensorRT's legacy
calibrators did, entropy included) and the graph must keep our plugin node; see
:mod:`.calibration` for why neither ModelOpt's nor onnxruntime's ONNX quantizer does
that here.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx

from ..artifacts import Precision
from ..digests import set_metadata
from ..errors import DeployError
from .int8 import INT8_MAX, QUANTIZED_OPS, activation_qdq, quantize_weight_input


def insert_qdq(
    model: onnx.ModelProto, activation_amax: dict[str, float], keep_float: Collection[str] = ()
) -> onnx.ModelProto:
    """Q/DQ on every Conv/Gemm input: activations per-tensor with the calibrated amax,
    weights per-channel as int8 initializers behind a DequantizeLinear. The Conv/Gemm
    nodes whose output is in ``keep_float`` are left as they are (mixed precision,
    :mod:`.mixed`). Pure."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    initializers = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    dequantized: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS and node.output[0] not in keep_float:
            activation = node.input[0]
            if activation not in dequantized:
                if activation not in activation_amax:
                    raise DeployError(f"no calibrated range for tensor {activation!r}; recalibrate with --recalibrate")
                pair = activation_qdq(activation, max(activation_amax[activation], 1e-12) / INT8_MAX, np.int8(0))
                graph.initializer.extend(pair.initializers)
                nodes += pair.nodes
                dequantized[activation] = pair.output
            node.input[0] = dequantized[activation]

            weight = initializers[node.input[1]]
            quantized = quantize_weight_input(node, weight)
            graph.initializer.remove(weight)
            graph.initializer.extend(quantized.initializers)
            nodes.append(quantized.dequantize)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    set_metadata(result, {"precision": Precision.INT8.value})
    return result
