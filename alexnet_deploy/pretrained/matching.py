"""Match an ONNX graph to AlexNet layer by layer, and map its weights onto ours.

The graph is walked from its image input as one chain of nodes and each node is
matched against the paper's layer table (``model.py``): op type, kernel, stride,
pads, groups, channel counts and LRN attributes must be AlexNet's, and every weight
shape ours, or the walk stops with one line naming the first node that is not.
Nothing is guessed from node or tensor names (converters rename them freely).

Two facts of the zoo graph the mapping relies on, each checked rather than assumed:

* pool5 pads its bottom/right edge by one, so that the zoo's 224-pixel input still
  reaches 6 x 6. At our 227-pixel input (Caffe's own deploy size) no pooling window
  reaches that padded row, so our unpadded pool5 computes the same thing; any end pad
  a window would reach at 227 is refused.
* its fully connected layers are ``Gemm`` with ``transB`` 1, so their weights are
  already torch's ``(out, in)``; ``transB`` 0 weights are transposed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from ..errors import DeployError
from ..lrn import LRNParams
from ..model import PAPER, TORCHVISION, TORCHVISION_INPUT_SIZE, feature_map_size
from .layer_plans import PAPER_PLAN, TORCHVISION_CONV1_CHANNELS, TORCHVISION_PLAN, Conv, Fc, Pool

IMPORT_INPUT_SIZE = 227  # Caffe's deploy size; the zoo graph declares 224
_PASS_THROUGH = {"Dropout", "Identity"}  # inference no-ops between layers


@dataclass
class MatchedGraph:
    """What the walk found: the weights in our state-dict names and the layer facts."""

    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    groups: int = 1
    lrn: LRNParams | None = None
    num_classes: int = 0
    softmax: bool = False
    variant: str = PAPER
    input_name: str = ""
    logits_name: str = ""  # fc8's output, where the source graph's logits are
    nodes: list[str] = field(default_factory=list)  # "conv1 <- Conv 'conv1_1'" per matched node


class _Graph:
    """Constant values and consumers of one ONNX graph, for the walk."""

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.source = source
        graph = model.graph
        self.constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.constant_nodes: set[int] = set()
        for index, node in enumerate(graph.node):
            if self._fold(node):
                self.constant_nodes.add(index)
                continue
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        inputs = [i for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            raise DeployError(
                f"{source} is not an AlexNet: it takes {len(inputs)} non-constant inputs ({names}), not one image"
            )
        self.input = inputs[0]

    def _fold(self, node: onnx.NodeProto) -> bool:
        """Record what a Constant/ConstantOfShape node computes (the zoo's light graph
        builds its weights with ConstantOfShape); False for any other node."""
        if node.op_type == "Constant" and len(node.output) == 1:
            attribute = next((a for a in node.attribute if a.name == "value"), None)
            if attribute is None:
                return False
            self.constants[node.output[0]] = numpy_helper.to_array(attribute.t)
            return True
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in self.constants:
            attribute = next((a for a in node.attribute if a.name == "value"), None)
            fill = numpy_helper.to_array(attribute.t).reshape(-1)[0] if attribute is not None else np.float32(0)
            shape = self.constants[node.input[0]].astype(np.int64).tolist()
            if np.prod(shape) > 200_000_000:  # more than any AlexNet weight (fc6: 37.7M)
                raise DeployError(f"{self.source}: a constant of shape {shape} is far larger than any AlexNet weight")
            self.constants[node.output[0]] = np.full(shape, fill)
            return True
        return False

    def constant(self, node: onnx.NodeProto, position: int, what: str) -> np.ndarray:
        if len(node.input) <= position or node.input[position] not in self.constants:
            raise DeployError(f"{self.source}: {describe(node)} has no constant {what} (input {position})")
        return self.constants[node.input[position]]

    def next_node(self, value: str) -> onnx.NodeProto | None:
        consumers = self.consumers.get(value, [])
        if len(consumers) > 1:
            raise DeployError(
                f"{self.source} is not an AlexNet: {value!r} feeds {len(consumers)} nodes "
                f"({', '.join(describe(n) for n in consumers[:3])}); AlexNet is one chain"
            )
        return consumers[0] if consumers else None


def describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} {node.name or node.output[0]!r}"


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _refuse(source: str, node: onnx.NodeProto, layer: str, reason: str) -> DeployError:
    return DeployError(f"{source} is not the AlexNet we deploy: {describe(node)} (where AlexNet has {layer}) {reason}")


def _auto_padded(attrs: dict[str, object]) -> bool:
    """Whether a Conv/MaxPool pads by ``auto_pad`` rather than explicit ``pads``."""
    return attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")


def _square(values: object, length: int, default: int) -> list[int]:
    return list(values) if isinstance(values, list) and values else [default] * length


def _match_conv(graph: _Graph, node: onnx.NodeProto, spec: Conv, matched: MatchedGraph, in_channels: int) -> int:
    source = graph.source
    layer = f"{spec.name}, a {spec.kernel}x{spec.kernel}/{spec.stride} Conv of {spec.channels} channels"
    if node.op_type != "Conv":
        raise _refuse(source, node, layer, "is not a Conv")
    attrs = _attributes(node)
    if _auto_padded(attrs):
        raise _refuse(source, node, layer, f"uses auto_pad {attrs['auto_pad']!r}; only explicit pads are mapped")
    weight = graph.constant(node, 1, "weight")
    kernel = _square(attrs.get("kernel_shape"), 2, 0) if "kernel_shape" in attrs else list(weight.shape[2:])
    strides = _square(attrs.get("strides"), 2, 1)
    pads = _square(attrs.get("pads"), 4, 0)
    dilations = _square(attrs.get("dilations"), 2, 1)
    group = int(attrs.get("group", 1))  # type: ignore[call-overload]
    found = f"{kernel[0]}x{kernel[-1]}/{strides[0]} pads {pads} group {group}"
    if kernel != [spec.kernel] * 2 or strides != [spec.stride] * 2 or pads != [spec.pad] * 4 or dilations != [1, 1]:
        raise _refuse(source, node, layer, f"is {found}")
    if spec.grouped:
        if group not in (1, 2) or (matched.groups != 0 and group != matched.groups):
            raise _refuse(
                source, node, layer, f"has group {group}; conv2, conv4 and conv5 must all have group 1 or all 2"
            )
        matched.groups = group
    elif group != 1:
        raise _refuse(source, node, layer, f"has group {group}, not 1")
    expected = (spec.channels, in_channels // group, spec.kernel, spec.kernel)
    if tuple(weight.shape) != expected:
        raise _refuse(source, node, layer, f"has weights of shape {tuple(weight.shape)}, expected {expected}")
    bias = graph.constant(node, 2, "bias") if len(node.input) > 2 else np.zeros(spec.channels, np.float32)
    if bias.size != spec.channels:
        raise _refuse(source, node, layer, f"has {bias.size} biases for {spec.channels} channels")
    matched.state_dict[f"features.{spec.name}.weight"] = _tensor(weight)
    matched.state_dict[f"features.{spec.name}.bias"] = _tensor(bias.reshape(-1))
    return spec.channels


def _match_lrn(graph: _Graph, node: onnx.NodeProto, name: str, matched: MatchedGraph) -> None:
    layer = f"{name}, a local response normalisation"
    if node.op_type != "LRN":
        hint = (
            " (torchvision's AlexNet has no LRN, but 64 conv1 channels where this graph has 96)"
            if node.op_type == "MaxPool"
            else ""
        )
        raise _refuse(graph.source, node, layer, f"is not an LRN{hint}")
    attrs = _attributes(node)
    params = LRNParams(
        size=int(attrs["size"]),  # type: ignore[call-overload]  # required by the ONNX spec
        alpha=float(attrs.get("alpha", 1e-4)),  # type: ignore[arg-type]  # the spec's defaults
        beta=float(attrs.get("beta", 0.75)),  # type: ignore[arg-type]
        bias=float(attrs.get("bias", 1.0)),  # type: ignore[arg-type]
    )
    if matched.lrn is not None and params != matched.lrn:
        raise _refuse(graph.source, node, layer, f"is {params}, unlike norm1's {matched.lrn}; one LRN is mapped")
    matched.lrn = params


def _match_pool(graph: _Graph, node: onnx.NodeProto, spec: Pool, size_in: int) -> None:
    layer = f"{spec.name}, a 3x3/2 MaxPool"
    if node.op_type != "MaxPool":
        raise _refuse(graph.source, node, layer, "is not a MaxPool")
    attrs = _attributes(node)
    kernel, strides = _square(attrs.get("kernel_shape"), 2, 0), _square(attrs.get("strides"), 2, 1)
    pads = _square(attrs.get("pads"), 4, 0)
    if kernel != [3, 3] or strides != [2, 2] or attrs.get("ceil_mode", 0) or _auto_padded(attrs):
        raise _refuse(graph.source, node, layer, f"is {kernel}/{strides} ceil_mode {attrs.get('ceil_mode', 0)}")
    if pads[:2] != [0, 0] or (not spec.last and pads != [0, 0, 0, 0]):
        raise _refuse(graph.source, node, layer, f"pads {pads}; only pool5 may pad, and only its end edge")
    for end_pad in pads[2:]:
        # the end pad is never read iff it adds no output row: floor((n + p - 3) / 2) == floor((n - 3) / 2)
        if (size_in + end_pad - 3) // 2 != (size_in - 3) // 2:
            raise _refuse(
                graph.source,
                node,
                layer,
                f"pads its end by {end_pad}, which a window reaches at {IMPORT_INPUT_SIZE} px",
            )


def _match_identity_pool(graph: _Graph, node: onnx.NodeProto) -> bool:
    """torchvision's adaptive pool to 6 x 6 at 224 px, which exporters write as an
    AveragePool 1x1/1 (the identity); False if ``node`` is the next layer instead."""
    if node.op_type != "AveragePool":
        return False
    attrs = _attributes(node)
    kernel, strides = _square(attrs.get("kernel_shape"), 2, 0), _square(attrs.get("strides"), 2, 1)
    if kernel != [1, 1] or strides != [1, 1] or any(_square(attrs.get("pads"), 4, 0)) or _auto_padded(attrs):
        raise _refuse(
            graph.source, node, "avgpool, the adaptive pool to 6x6 (1x1/1 at 224 px)", f"is {kernel}/{strides}"
        )
    return True


def _match_flatten(graph: _Graph, node: onnx.NodeProto, features: int) -> None:
    layer = f"the flatten to {features} features"
    attrs = _attributes(node)
    if node.op_type == "Flatten" and int(attrs.get("axis", 1)) == 1:  # type: ignore[call-overload]
        return
    if node.op_type == "Reshape":
        shape = graph.constant(node, 1, "shape") if len(node.input) > 1 else np.asarray(attrs.get("shape", []))
        shape = shape.astype(np.int64).tolist()
        if len(shape) == 2 and shape[0] in (-1, 0, 1) and shape[1] in (-1, features):
            return
        raise _refuse(graph.source, node, layer, f"reshapes to {shape}")
    raise _refuse(graph.source, node, layer, "is neither Flatten (axis 1) nor Reshape")


def _match_fc(graph: _Graph, node: onnx.NodeProto, spec: Fc, matched: MatchedGraph) -> None:
    layer = f"{spec.name}, a fully connected layer {spec.inputs} -> {spec.outputs or 'classes'}"
    if node.op_type != "Gemm":
        raise _refuse(graph.source, node, layer, "is not a Gemm")
    attrs = _attributes(node)
    if float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0 or attrs.get("transA", 0):  # type: ignore[arg-type]
        raise _refuse(graph.source, node, layer, "has alpha/beta other than 1 or transA set")
    weight = graph.constant(node, 1, "weight")
    if not attrs.get("transB", 0):
        weight = weight.T
    outputs = spec.outputs or weight.shape[0]
    if weight.ndim != 2 or tuple(weight.shape) != (outputs, spec.inputs):
        raise _refuse(graph.source, node, layer, f"has weights of shape {tuple(weight.shape)} (as out x in)")
    bias = graph.constant(node, 2, "bias") if len(node.input) > 2 else np.zeros(outputs, np.float32)
    if bias.size != outputs:
        raise _refuse(graph.source, node, layer, f"has {bias.size} biases for {outputs} outputs")
    matched.state_dict[f"classifier.{spec.name}.weight"] = _tensor(weight)
    matched.state_dict[f"classifier.{spec.name}.bias"] = _tensor(bias.reshape(-1))
    if spec.outputs is None:
        matched.num_classes = int(outputs)


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype not in (np.float32, np.float64, np.float16):
        raise DeployError(f"a weight is of type {array.dtype}, not floating point (a quantized model?)")
    return torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy


def match_alexnet(model: onnx.ModelProto, source: str) -> MatchedGraph:
    """Walk ``model`` from its image input and map every layer onto ours: the paper's
    AlexNet, or torchvision's if conv1 has its 64 channels."""
    graph = _Graph(model, source)
    matched = MatchedGraph(groups=0, input_name=graph.input.name)
    first = _next_layer(graph, graph.input.name, PAPER_PLAN[0])
    torchvision = (
        first.op_type == "Conv"
        and len(first.input) > 1
        and first.input[1] in graph.constants
        and graph.constants[first.input[1]].shape[:1] == (TORCHVISION_CONV1_CHANNELS,)
    )
    matched.variant = TORCHVISION if torchvision else PAPER
    input_size = TORCHVISION_INPUT_SIZE if torchvision else IMPORT_INPUT_SIZE
    value = graph.input.name
    channels = 3
    sizes = {"pool1": (input_size - 11 + 4 * torchvision) // 4 + 1}  # each pool's input size
    sizes["pool2"] = (sizes["pool1"] - 3) // 2 + 1
    sizes["pool5"] = (sizes["pool2"] - 3) // 2 + 1
    features = 256 * feature_map_size(input_size, matched.variant) ** 2
    for step in TORCHVISION_PLAN if torchvision else PAPER_PLAN:
        node = _next_layer(graph, value, step)
        if isinstance(step, Conv):
            channels = _match_conv(graph, node, step, matched, channels)
        elif isinstance(step, Pool):
            _match_pool(graph, node, step, sizes[step.name])
        elif isinstance(step, Fc):
            _match_fc(graph, node, step, matched)
        elif step == "avgpool":
            if not _match_identity_pool(graph, node):
                continue  # absent: the flatten follows pool5 directly
        elif step == "flatten":
            _match_flatten(graph, node, features)
        elif step == "Relu":
            _expect_op(graph, node, "Relu", "a ReLU")
        else:
            _match_lrn(graph, node, str(step), matched)
        matched.nodes.append(f"{_step_name(step)} <- {describe(node)}")
        value = node.output[0]
    matched.groups = matched.groups or 1
    matched.logits_name = value
    tail = _skip_pass_through(graph, value)
    if tail is not None and tail.op_type == "Softmax":
        axis = int(_attributes(tail).get("axis", 1))  # type: ignore[call-overload]
        if axis not in (1, -1):
            raise _refuse(source, tail, "the output softmax", f"has axis {axis}")
        matched.softmax = True
        value = tail.output[0]
        tail = _skip_pass_through(graph, value)
    if tail is not None:
        raise _refuse(source, tail, "nothing: fc8 (or its softmax) ends AlexNet", "follows")
    if value not in graph.outputs:
        raise DeployError(f"{source}: the chain ends in {value!r}, which is not a graph output")
    return matched


def _next_layer(graph: _Graph, value: str, step: object) -> onnx.NodeProto:
    node = _skip_pass_through(graph, value)
    if node is None:
        raise DeployError(
            f"{graph.source} is not the AlexNet we deploy: it ends after {value!r}, where AlexNet has {_step_name(step)}"
        )
    return node


def _skip_pass_through(graph: _Graph, value: str) -> onnx.NodeProto | None:
    node = graph.next_node(value)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = graph.next_node(node.output[0])
    return node


def _expect_op(graph: _Graph, node: onnx.NodeProto, op_type: str, layer: str) -> None:
    if node.op_type != op_type:
        raise _refuse(graph.source, node, layer, f"is not a {op_type}")


def _step_name(step: object) -> str:
    return getattr(step, "name", None) or ("a ReLU" if step == "Relu" else str(step))
