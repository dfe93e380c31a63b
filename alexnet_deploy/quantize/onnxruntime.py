"""The INT8 graph laid out for onnxruntime's CPU integer kernels, from the same
calibrated ranges as the TensorRT graph (:func:`.qdq.insert_qdq`).

Why a second layout. TensorRT wants symmetric signed Q/DQ (zero point 0) on the *inputs*
of Conv/Gemm only and fuses the rest itself. onnxruntime fuses a Conv or Gemm into an
integer kernel (``QLinearConv``, ``QGemm``) only when the whole "node unit" is
quantized: DequantizeLinear on the activation, the weight and an int32 bias, and a
QuantizeLinear consuming its output (a Gemm may end in float). Given TensorRT's layout
it keeps every Conv/Gemm in float behind the DequantizeLinear nodes, which makes INT8
slower than FP32 there. So this graph also has Q/DQ on the outputs:

* **activations uint8** — x86 VNNI multiplies unsigned by signed bytes (u8s8), which is
  the pairing onnxruntime's MLAS kernels run fastest. The *clip range comes from the
  same calibrated amax* as the TensorRT graph. A non-negative tensor (after ReLU, and
  after max-pool/LRN/flatten of one) is quantized to [0, amax] with zero point 0 and
  scale amax/255 — the range TensorRT's signed [-amax, amax] keeps for it, in steps half
  as wide — and a zero point at the bottom of the range also makes the ReLU in front of
  the QuantizeLinear redundant, which onnxruntime then removes (its ClipQuantFusion), so
  Conv+ReLU becomes one QLinearConv. A signed tensor (the normalised images) is
  symmetric: scale amax/127, zero point 128.
* **weights** int8 per output channel, symmetric, exactly the TensorRT graph's values.
* **bias** int32 with scale (activation scale × weight scale), zero point 0, as
  onnxruntime's QDQ selectors require.
* **max-pool and flatten between quantized tensors** — Q/DQ with the same parameters on
  both sides. Max commutes with a monotonic quantizer, so onnxruntime drops the inner
  pair and pools uint8 directly. So does torchvision's adaptive pool, exported as an
  identity 1x1 AveragePool (onnxruntime runs it as ``QLinearAveragePool``). Where a Conv's output reaches the next Conv/Gemm input
  only through such ops, it takes that input's calibrated range.
* **LRN** (plugin node, or ONNX LRN in the standard-op twin) stays float between a
  DequantizeLinear and a QuantizeLinear; the last Gemm writes float logits.

Conv outputs read only by a float op (conv1 and conv2 feed LRN) need a range that the
TensorRT layout never calibrated; :func:`output_activations` names them, and the
calibration pass collects them alongside the Conv/Gemm inputs, into the same cache.

Everything here is a pure function over the protobuf, like ``qdq.insert_qdq``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..artifacts import Precision
from ..digests import set_metadata
from ..errors import DeployError
from ..graph import is_plugin_lrn, is_standard_lrn
from .int8 import INT8_MAX, QUANTIZED_OPS, activation_qdq, quantize_weight_input

UINT8_MAX = 255
UINT8_MIDPOINT = 128
# Ops that commute with a per-tensor monotonic quantizer: onnxruntime runs them on the
# quantized tensor when the same scale/zero point sit on both sides.
COMMUTING_OPS = ("MaxPool", "Flatten", "Reshape")


def commutes(node: onnx.NodeProto) -> bool:
    """One of :data:`COMMUTING_OPS`, or an identity ``AveragePool`` (1x1, stride 1, no
    pads): the exported adaptive pool of torchvision's AlexNet at its input size."""
    if node.op_type in COMMUTING_OPS:
        return True
    if node.op_type != "AveragePool":
        return False
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    ones = all(v == 1 for v in list(attributes.get("kernel_shape", [])) + list(attributes.get("strides", [1])))
    return (
        ones and not any(attributes.get("pads", [])) and attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    )


@dataclass(frozen=True)
class ActivationQuantization:
    """uint8 parameters of one activation tensor."""

    scale: float
    zero_point: int

    @classmethod
    def of(cls, amax: float, non_negative: bool) -> ActivationQuantization:
        amax = max(amax, 1e-12)
        if non_negative:
            return cls(amax / UINT8_MAX, 0)
        return cls(amax / INT8_MAX, UINT8_MIDPOINT)


class _Graph:
    """Producer/consumer lookups over one graph (read-only)."""

    def __init__(self, model: onnx.ModelProto, keep_float: Collection[str] = ()) -> None:
        graph = model.graph
        self.keep_float = set(keep_float)  # outputs of the Conv/Gemm left out of INT8
        self.initializers = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.nodes = list(graph.node)
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def sole_consumer(self, tensor: str) -> onnx.NodeProto | None:
        consumers = self.consumers.get(tensor, [])
        return consumers[0] if len(consumers) == 1 and tensor not in self.outputs else None

    def non_negative(self, tensor: str) -> bool:
        """Produced by a ReLU, possibly through ops that keep the sign (pool, LRN, flatten)."""
        node = self.producer.get(tensor)
        while node is not None and (commutes(node) or is_plugin_lrn(node) or is_standard_lrn(node)):
            node = self.producer.get(node.input[0])
        return node is not None and node.op_type == "Relu"

    def layer_output(self, node: onnx.NodeProto) -> str:
        """A Conv/Gemm's output, or its ReLU's when a ReLU is its only reader."""
        reader = self.sole_consumer(node.output[0])
        return reader.output[0] if reader is not None and reader.op_type == "Relu" else node.output[0]

    def commuting_chain(self, tensor: str) -> list[str]:
        """``tensor`` and the outputs of the commuting ops it flows through, in order."""
        chain = [tensor]
        reader = self.sole_consumer(tensor)
        while reader is not None and commutes(reader):
            chain.append(reader.output[0])
            reader = self.sole_consumer(chain[-1])
        return chain

    def weighted_nodes(self) -> list[onnx.NodeProto]:
        """Every Conv/Gemm on an activation, INT8 or not."""
        return [n for n in self.nodes if n.op_type in QUANTIZED_OPS and n.input[0] not in self.initializers]

    def quantized_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.weighted_nodes() if n.output[0] not in self.keep_float]

    def float_inputs(self) -> set[str]:
        """The activation inputs of the Conv/Gemm left out of INT8."""
        return {n.input[0] for n in self.weighted_nodes() if n.output[0] in self.keep_float}


def _layer_inputs(graph: _Graph) -> set[str]:
    return {node.input[0] for node in graph.quantized_nodes()}


def output_activations(model: onnx.ModelProto) -> list[str]:
    """Conv/Gemm outputs (after their ReLU) whose range the input-only calibration does
    not give: those that reach no Conv/Gemm input through commuting ops and are not the
    graph's output. In AlexNet: the outputs of conv1 and conv2, read by LRN."""
    graph = _Graph(model)
    inputs = _layer_inputs(graph)
    names = []
    for node in graph.quantized_nodes():
        chain = graph.commuting_chain(graph.layer_output(node))
        if chain[0] in graph.outputs or any(t in inputs for t in chain) or chain[0] in names:
            continue
        names.append(chain[0])
    return names


def _activation_plan(graph: _Graph, activation_amax: dict[str, float]) -> dict[str, ActivationQuantization]:
    """Which tensors get a Q/DQ pair, and with what parameters."""
    inputs, float_inputs = _layer_inputs(graph), graph.float_inputs()

    def amax_of(tensor: str) -> float:
        if tensor not in activation_amax:
            raise DeployError(f"no calibrated range for tensor {tensor!r}; recalibrate with --recalibrate")
        return activation_amax[tensor]

    plan: dict[str, ActivationQuantization] = {}
    for tensor in inputs:
        plan[tensor] = ActivationQuantization.of(amax_of(tensor), graph.non_negative(tensor))
        # back through commuting producers (LRN -> MaxPool -> conv2): pool in uint8 too
        node = graph.producer.get(tensor)
        while node is not None and commutes(node):
            upstream = node.input[0]
            if graph.sole_consumer(upstream) is not node:
                break
            plan[upstream] = plan[tensor]
            node = graph.producer.get(upstream)
    for node in graph.quantized_nodes():
        chain = graph.commuting_chain(graph.layer_output(node))
        if chain[0] in graph.outputs:
            continue  # the logits stay float: QGemm writes float output
        reached = next((t for t in chain if t in inputs), None)
        if any(t in float_inputs for t in chain[: chain.index(reached) if reached else None]):
            # read by a layer left out of INT8: a QuantizeLinear here would quantize the
            # very tensor the fallback protects, so this output stays float, and
            # onnxruntime runs this layer (with its ReLU) in float over its dequantized
            # int8 input and weights: INT8 values, not an integer kernel
            continue
        parameters = (
            plan[reached] if reached else ActivationQuantization.of(amax_of(chain[0]), graph.non_negative(chain[0]))
        )
        for tensor in chain[: chain.index(reached) if reached else None]:
            plan[tensor] = parameters
    return plan


def insert_qdq_for_onnxruntime(
    model: onnx.ModelProto, activation_amax: dict[str, float], keep_float: Collection[str] = ()
) -> onnx.ModelProto:
    """The onnxruntime-targeted INT8 graph (see the module docstring). ``activation_amax``
    holds the calibrated ranges of :func:`.calibration.quantized_activations` and
    :func:`output_activations`. The Conv/Gemm nodes whose output is in ``keep_float``
    stay float (mixed precision, :mod:`.mixed`). Pure."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = _Graph(result, keep_float)
    plan = _activation_plan(graph, activation_amax)
    initializers: list[onnx.TensorProto] = []
    dequantized = {tensor: f"{tensor}_dq" for tensor in plan}

    def qdq_nodes(tensor: str) -> list[onnx.NodeProto]:
        pair = activation_qdq(tensor, plan[tensor].scale, np.uint8(plan[tensor].zero_point))
        initializers.extend(pair.initializers)
        return pair.nodes

    def integer_parameters(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """int8 weight and int32 bias, each behind a per-channel DequantizeLinear."""
        weight = quantize_weight_input(node, graph.initializers[node.input[1]])
        initializers.extend(weight.initializers)
        nodes = [weight.dequantize]
        weight_scales = weight.scales
        if len(node.input) > 2 and node.input[2]:
            bias_name = node.input[2]
            bias = numpy_helper.to_array(graph.initializers[bias_name]).astype(np.float64)
            bias_scales = (plan[node.input[0]].scale * weight_scales.astype(np.float64)).astype(np.float32)
            quantized = np.clip(np.round(bias / bias_scales), np.iinfo(np.int32).min, np.iinfo(np.int32).max)
            initializers.extend(
                [
                    numpy_helper.from_array(quantized.astype(np.int32), f"{bias_name}_int32"),
                    numpy_helper.from_array(bias_scales, f"{bias_name}_scale"),
                    numpy_helper.from_array(np.zeros(len(bias_scales), np.int32), f"{bias_name}_zero_point"),
                ]
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{bias_name}_int32", f"{bias_name}_scale", f"{bias_name}_zero_point"],
                    [f"{bias_name}_dq"],
                    axis=0,
                )
            )
            node.input[2] = f"{bias_name}_dq"
        return nodes

    quantized_weights = {n.input[1] for n in graph.quantized_nodes()} | {
        n.input[2] for n in graph.quantized_nodes() if len(n.input) > 2 and n.input[2]
    }
    nodes = [n for t in result.graph.input if t.name in plan for n in qdq_nodes(t.name)]
    for node in graph.nodes:
        if node.op_type in QUANTIZED_OPS and node.input[0] in plan and node.output[0] not in graph.keep_float:
            nodes.extend(integer_parameters(node))
        for i, name in enumerate(node.input):
            if name in dequantized:
                node.input[i] = dequantized[name]
        nodes.append(node)
        nodes.extend(n for name in node.output if name in plan for n in qdq_nodes(name))
    kept = [t for t in result.graph.initializer if t.name not in quantized_weights]
    del result.graph.initializer[:]
    result.graph.initializer.extend(kept + initializers)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    set_metadata(result, {"precision": Precision.INT8.value})
    return result
