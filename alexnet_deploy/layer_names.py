"""AlexNet's layer names on an ONNX graph and on what a backend's profiler reports.

Our ONNX graphs name their nodes as the exporter did (``node_conv2d_1``) or not at all
(the quantizer's Q/DQ nodes), and every backend renames, fuses and inserts nodes of its
own. So the layer of a node is found from the graph's structure, and written into the
node names (:func:`name_nodes`) before a backend sees the graph; whatever a profiler
reports is then mapped back by the name's prefix (:func:`layer_of`).

Structure: the k-th ``Conv`` is conv<k>, the LRN nodes (our plugin op or ONNX's
``LRN``) norm1 and norm2, the ``MaxPool`` nodes pool1, pool2, pool5, the ``Gemm`` (or
``MatMul``) nodes fc6, fc7, fc8 -- the names ``alexnet-deploy info`` gives the same
layers. Every other node is counted with a neighbour: a node that prepares a layer's
input (a ``DequantizeLinear``, anything before the first layer) with the layer after
it; one that finishes a layer's output (``Relu``, ``QuantizeLinear``, ``Reshape``, a
final ``Cast``) with the layer before it. A node's new name is ``<layer>`` for the
layer itself and ``<layer>/<op type>_<index>`` for a node counted with it.
"""

from __future__ import annotations

import re
from collections import Counter

import onnx

from .plugin import PLUGIN_NAME

# the layers that have a row in `alexnet-deploy info`, in the network's order
LAYERS = (
    "conv1",
    "norm1",
    "pool1",
    "conv2",
    "norm2",
    "pool2",
    "conv3",
    "conv4",
    "conv5",
    "pool5",
    "fc6",
    "fc7",
    "fc8",
)
WEIGHTED = tuple(name for name in LAYERS if name.startswith(("conv", "fc")))
_ANCHORS = {
    "Conv": ("conv1", "conv2", "conv3", "conv4", "conv5"),
    "LRN": ("norm1", "norm2"),
    "MaxPool": ("pool1", "pool2", "pool5"),
    "Gemm": ("fc6", "fc7", "fc8"),
}
_INPUT_SIDE = ("DequantizeLinear",)
_NAME = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(LAYERS) + r")(?=$|[/_ .,:])")
# what a backend inserts to move data between layouts or precisions: the conversions row
CONVERSION_TYPES = ("Reorder", "Transpose", "Convert", "Reformat", "Cast")


def _anchor(node: onnx.NodeProto) -> str | None:
    """The anchor kind of ``node`` ("Conv", "LRN", ...), or None."""
    if node.op_type == PLUGIN_NAME:
        return "LRN"
    if node.op_type == "MatMul":
        return "Gemm"
    return node.op_type if node.op_type in _ANCHORS else None


def node_layers(model: onnx.ModelProto) -> list[str]:
    """The layer each node of ``model``'s graph is counted with, in node order.

    Raises ValueError when the graph does not have AlexNet's layers (more convolutions,
    no LRN...): a profile mapped onto the wrong layers would be worse than none."""
    nodes = list(model.graph.node)
    seen: Counter[str] = Counter()
    anchors: list[str | None] = []
    for node in nodes:
        kind = _anchor(node)
        if kind is None:
            anchors.append(None)
            continue
        if seen[kind] >= len(_ANCHORS[kind]):
            raise ValueError(f"{model.graph.name or 'the graph'} has more {kind} nodes than AlexNet")
        anchors.append(_ANCHORS[kind][seen[kind]])
        seen[kind] += 1
    missing = [kind for kind, names in _ANCHORS.items() if seen[kind] != len(names)]
    if missing:
        raise ValueError(f"{model.graph.name or 'the graph'} lacks AlexNet's {', '.join(missing)} layers")
    layers: list[str] = []
    previous: str | None = None
    for index, node in enumerate(nodes):
        if anchors[index] is not None:
            previous = anchors[index]
            layers.append(previous)  # type: ignore[arg-type]  # just checked
        elif previous is None or node.op_type in _INPUT_SIDE:
            following = next((a for a in anchors[index:] if a is not None), previous)
            layers.append(following)  # type: ignore[arg-type]  # an anchor exists: checked above
        else:
            layers.append(previous)
    return layers


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose nodes, and the tensors they produce, are named after
    their layers (module docstring), so every backend's profiler reports names
    :func:`layer_of` can map: backends name the nodes they fuse or rewrite after the
    node or after its output tensor (onnxruntime's ``relu_nchwc``). The graph's own
    inputs and outputs keep their names."""
    named = onnx.ModelProto()
    named.CopyFrom(model)
    graph = named.graph
    kept = {value.name for value in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    renamed: dict[str, str] = {}
    for index, (node, layer) in enumerate(zip(graph.node, node_layers(named), strict=True)):
        node.name = layer if _anchor(node) is not None else f"{layer}/{node.op_type}_{index}"
        for position, output in enumerate(node.output):
            if output and output not in kept:
                renamed[output] = f"{node.name}:{position}"
                node.output[position] = renamed[output]
    for node in graph.node:
        for position, name in enumerate(node.input):
            node.input[position] = renamed.get(name, name)
    for value in graph.value_info:
        value.name = renamed.get(value.name, value.name)
    return named


def output_layers(model: onnx.ModelProto) -> dict[str, str]:
    """The layer that produces each graph output: a backend may name that layer's op
    after the output tensor (OpenVINO's ``logits``)."""
    producers = {
        output: layer
        for node, layer in zip(model.graph.node, node_layers(model), strict=True)
        for output in node.output
    }
    return {value.name: producers[value.name] for value in model.graph.output if value.name in producers}


def layer_of(name: str, aliases: dict[str, str] | None = None) -> str | None:
    """The AlexNet layer a profiled op named ``name`` belongs to: the first layer name
    in it (``conv1/WithoutBiases``, ``conv2_token_5``, ``fused fc6``,
    ``conv1/Relu_1:0_nchwc``), else ``aliases[name]`` (:func:`output_layers`), else None."""
    match = _NAME.search(name)
    if match:
        return match.group(1)
    return (aliases or {}).get(name.strip())


def is_conversion(op_type: str) -> bool:
    """Whether a profiled op of ``op_type`` only moves data between layouts or precisions."""
    return any(op_type.startswith(kind) for kind in CONVERSION_TYPES)
