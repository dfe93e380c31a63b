"""Each layer's work, read from the FP32 export's graph, and the profiler's ops put
onto the layers with a roofline verdict.

Work per image, from the graph alone (shape inference on the standard-op twin):
multiply-accumulates as ``alexnet-deploy info`` counts them (conv: out_C x out_H x
out_W x in_C/groups x kH x kW; fc: in x out; none for LRN and pooling), parameters,
and the input and output activations. At batch N a layer moves ``parameters x weight
bytes + N x (input + output) x activation bytes`` at least once, and does ``2 x MACs x
N`` operations: their ratio is its arithmetic intensity. Below the machine's ridge
point (peak kernel rate / copy bandwidth) the layer is memory-bound, above it
compute-bound (Williams, Waterman, Patterson, "Roofline", CACM 2009).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import numpy_helper, shape_inference

from ..graph import to_standard_lrn
from ..inference import OpTime
from ..layer_names import LAYERS, is_conversion, layer_of, node_layers
from .limits import Limits
from .report import LayerProfile, OpRecord

CONVERSIONS = "conversions"  # what the backend inserted to change layout or precision
UNMAPPED = "unmapped"  # ops whose names map onto no layer
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


@dataclass(frozen=True)
class LayerWork:
    """One layer's work per image."""

    layer: str
    macs: int
    parameters: int
    input_elements: int
    output_elements: int

    def bytes_moved(self, batch: int, element_bytes: int) -> int:
        return element_bytes * (self.parameters + batch * (self.input_elements + self.output_elements))


def _elements(value: onnx.ValueInfoProto) -> int:
    return math.prod(d.dim_value for d in value.type.tensor_type.shape.dim[1:])


def layer_work(model: onnx.ModelProto) -> list[LayerWork]:
    """Every layer's work per image, in network order, from the FP32 export ``model``."""
    twin = shape_inference.infer_shapes(to_standard_lrn(model))
    shapes = {v.name: v for v in (*twin.graph.input, *twin.graph.value_info, *twin.graph.output)}
    weights = {t.name: numpy_helper.to_array(t).shape for t in twin.graph.initializer}
    work = []
    for node, layer in zip(twin.graph.node, node_layers(twin), strict=True):
        if node.op_type not in ("Conv", "LRN", "MaxPool", "Gemm", "MatMul"):
            continue
        parameters = sum(math.prod(weights[name]) for name in node.input[1:] if name in weights)
        output = _elements(shapes[node.output[0]])
        macs = 0
        if node.op_type == "Conv":
            kernel = weights[node.input[1]]  # (out_C, in_C / groups, kH, kW)
            macs = output * math.prod(kernel[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            macs = math.prod(weights[node.input[1]])
        work.append(LayerWork(layer, macs, parameters, _elements(shapes[node.input[0]]), output))
    return work


def layer_profiles(
    ops: list[OpTime],
    work: list[LayerWork],
    batch: int,
    precision: str,
    limits: Limits | None,
    integer: bool,
    aliases: dict[str, str] | None = None,
) -> list[LayerProfile]:
    """The ops put onto the layers (conversions and unmapped ops in rows of their own),
    each layer with its rate and, where ``limits`` were measured for its device, its
    share of them and its roofline verdict."""
    grouped: dict[str, list[OpTime]] = {name: [] for name in (*LAYERS, CONVERSIONS, UNMAPPED)}
    for op in ops:
        layer = CONVERSIONS if is_conversion(op.type) else layer_of(op.name, aliases)
        if layer is None:
            # a Q/DQ named after none of our nodes is one the backend's optimiser made
            # (onnxruntime's transpose optimiser moves them across its layout Transposes)
            layer = CONVERSIONS if op.type in ("QuantizeLinear", "DequantizeLinear") else UNMAPPED
        grouped[layer].append(op)
    by_layer = {w.layer: w for w in work}
    element_bytes = BYTES.get(precision, 4)
    total = sum(op.ms for op in ops) or 1.0
    profiles = []
    for name, members in grouped.items():
        if name not in by_layer and not members:
            continue
        ms = sum(op.ms for op in members)
        records = [OpRecord(op.name, op.type, op.ms, op.precision, list(op.fused)) for op in members]
        done = by_layer.get(name)
        profile = LayerProfile(name, ms, ms / total, records)
        if done is not None:
            moved = done.bytes_moved(batch, element_bytes)
            operations = 2 * done.macs * batch
            profile.macs = done.macs
            profile.intensity = operations / moved
            seconds = ms / 1e3
            if ms > 0:
                profile.gmacs_per_s = done.macs * batch / seconds / 1e9 if done.macs else None
                profile.gbps = moved / seconds / 1e9
            if limits is not None:
                peak = limits.peak(integer)
                # the ridge point: operations per byte where the roofline bends
                profile.bound = "compute" if profile.intensity >= peak / limits.copy_gbps else "memory"
                if ms > 0:
                    profile.bandwidth_share = moved / seconds / 1e9 / limits.copy_gbps
                if ms > 0 and done.macs:
                    profile.limit_share = operations / seconds / 1e9 / peak
        profiles.append(profile)
    return profiles
