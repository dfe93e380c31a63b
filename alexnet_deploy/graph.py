"""Pure functions over ONNX graphs: the plugin/standard LRN rewrites, the
standard-op twin onnxruntime runs, and the checks later steps apply to an ONNX file
(its metadata is :mod:`alexnet_deploy.metadata`'s).

The rewrites touch node fields (op_type, domain, attributes) and opset imports, and
only add small initializers (``lrn_as_window_sum``'s band matrices), never change the
weights, so working on the protobuf directly is both the simplest and the cheapest
route (no copy of ~240 MB of weights through a graph library's IR).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from .digests import verify_weights
from .errors import DeployError
from .files import require_file
from .metadata import INPUT_NAME, OUTPUT_NAME, dims, metadata_value
from .model import TORCHVISION
from .plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION

LRN_ATTRIBUTES = ("size", "alpha", "beta", "bias")
# Attributes TensorRT's ONNX parser reads when it falls back to the plugin registry;
# newer parsers also take the namespace from the node's domain, so both are written.
PLUGIN_LOOKUP_ATTRIBUTES = {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION}


def is_plugin_lrn(node: onnx.NodeProto) -> bool:
    return node.op_type == PLUGIN_NAME and node.domain == PLUGIN_NAMESPACE


def is_standard_lrn(node: onnx.NodeProto) -> bool:
    return node.op_type == "LRN" and node.domain in ("", "ai.onnx")


def lrn_attributes(node: onnx.NodeProto) -> dict[str, float | int]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {name: values[name] for name in LRN_ATTRIBUTES if name in values}


def _with_opset(model: onnx.ModelProto, domain: str, version: int | None) -> None:
    """Add (version) or remove (None) a domain from the model's opset imports."""
    kept = [o for o in model.opset_import if o.domain != domain]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    if version is not None:
        model.opset_import.append(helper.make_opsetid(domain, version))


def to_plugin_lrn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every standard ``LRN`` node becomes our plugin's custom op (same attributes)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for node in result.graph.node:
        if is_standard_lrn(node):
            # ONNX LRN's own attribute defaults, for a standard node that omits some
            attributes = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0} | lrn_attributes(node)
            node.op_type, node.domain = PLUGIN_NAME, PLUGIN_NAMESPACE
            del node.attribute[:]
            node.attribute.extend(
                helper.make_attribute(k, v) for k, v in (attributes | PLUGIN_LOOKUP_ATTRIBUTES).items()
            )
    _with_opset(result, PLUGIN_NAMESPACE, 1)
    return result


def to_standard_lrn(model: onnx.ModelProto, half_precision: bool = False) -> onnx.ModelProto:
    """The standard-op twin: every plugin node becomes ONNX ``LRN`` with the same
    semantics, so onnxruntime (which cannot run our custom op) can run the graph.

    With ``half_precision`` (an FP16 graph) each LRN is wrapped in Casts to float32
    and back, which is what the plugin does: fp16 in/out, sums of squares in fp32.
    ONNX LRN's attribute defaults only apply to attributes the plugin node lacks;
    the export always writes all four.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    for node in result.graph.node:
        if not is_plugin_lrn(node):
            nodes.append(node)
            continue
        attributes: dict[str, Any] = lrn_attributes(node)  # make_node's **kwargs are the node's attributes
        if "size" not in attributes:
            raise DeployError(f"plugin LRN node {node.name!r} has no 'size' attribute")
        source, target = node.input[0], node.output[0]
        if half_precision:
            source, target = f"{node.input[0]}_as_float32", f"{node.output[0]}_float32"
            nodes.append(helper.make_node("Cast", [node.input[0]], [source], to=onnx.TensorProto.FLOAT))
        nodes.append(helper.make_node("LRN", [source], [target], name=node.name, **attributes))
        if half_precision:
            nodes.append(helper.make_node("Cast", [target], [node.output[0]], to=onnx.TensorProto.FLOAT16))
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    _with_opset(result, PLUGIN_NAMESPACE, None)
    return result


def _step(op: str, inputs: list[str], output: str, **attributes: Any) -> onnx.NodeProto:
    """A node named after the tensor it writes (so after the layer it belongs to)."""
    return helper.make_node(op, inputs, [output], name=output, **attributes)


WINDOW_SUMS = ("matmul", "conv")  # how lrn_as_window_sum forms the channel-window sum


def lrn_as_window_sum(model: onnx.ModelProto, sum_by: str = "matmul") -> onnx.ModelProto:
    """Every float32 standard ``LRN`` node as ops a backend runs at GEMM speed: the
    channel-window sum of squares as a product with a banded C x C matrix (α/size
    inside the window of ``size`` channels, 0 outside) plus the bias k, then x / that^β
    — for AlexNet's β = 3/4 as x / (√s · √√s), square roots being one instruction where
    a general power is an exp and a log. ``sum_by="matmul"`` forms the product as a
    MatMul over the channel axis (channels-last, between two Transposes), ``"conv"`` as
    a 1x1 convolution. The same function as ONNX LRN up to float rounding
    (tests/test_lrn.py checks it against onnxruntime's LRN kernel and the spec).

    Why: onnxruntime's LRN kernel took 75% of our INT8 row's time; with the MatMul form
    that row runs 2.8x faster, 1.4x faster than with the conv form (docs/bench.md). The
    new nodes are named after the LRN node, so a profile counts them with its layer."""
    import numpy as np
    from onnx import numpy_helper, shape_inference

    if sum_by not in WINDOW_SUMS:
        raise ValueError(f"sum_by must be one of {', '.join(WINDOW_SUMS)}, got {sum_by!r}")
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {v.name: v for v in (*inferred.input, *inferred.value_info)}
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    for node in result.graph.node:
        source = shapes.get(node.input[0]) if is_standard_lrn(node) else None
        if source is None or source.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        attributes = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0} | lrn_attributes(node)
        size, beta, name = int(attributes["size"]), float(attributes["beta"]), node.name
        channels = source.type.tensor_type.shape.dim[1].dim_value
        offset = np.arange(channels)[:, None] - np.arange(channels)[None, :]  # output - input channel
        inside = (offset >= -(size // 2)) & (offset <= (size - 1) // 2)  # ONNX LRN's window
        band = np.where(inside, float(attributes["alpha"]) / size, 0.0).astype(np.float32)  # (out, in)
        window = np.ascontiguousarray(band.T) if sum_by == "matmul" else band[:, :, None, None]
        result.graph.initializer.extend(
            [
                numpy_helper.from_array(window, f"{name}/window"),
                numpy_helper.from_array(np.full(channels, attributes["bias"], np.float32), f"{name}/bias"),
            ]
        )
        x = node.input[0]
        nodes.append(_step("Mul", [x, x], f"{name}/squares"))
        if sum_by == "matmul":
            nodes += [
                _step("Transpose", [f"{name}/squares"], f"{name}/squares_channels_last", perm=[0, 2, 3, 1]),
                _step("MatMul", [f"{name}/squares_channels_last", f"{name}/window"], f"{name}/window_sum"),
                _step("Add", [f"{name}/window_sum", f"{name}/bias"], f"{name}/base_channels_last"),
                _step("Transpose", [f"{name}/base_channels_last"], f"{name}/base", perm=[0, 3, 1, 2]),
            ]
        else:
            nodes.append(_step("Conv", [f"{name}/squares", f"{name}/window", f"{name}/bias"], f"{name}/base"))
        if beta == 0.75:
            nodes += [
                _step("Sqrt", [f"{name}/base"], f"{name}/root"),
                _step("Sqrt", [f"{name}/root"], f"{name}/fourth_root"),
                _step("Mul", [f"{name}/root", f"{name}/fourth_root"], f"{name}/divisor"),
            ]
        else:
            result.graph.initializer.append(numpy_helper.from_array(np.array(beta, np.float32), f"{name}/beta"))
            nodes.append(_step("Pow", [f"{name}/base", f"{name}/beta"], f"{name}/divisor"))
        nodes.append(helper.make_node("Div", [x, f"{name}/divisor"], [node.output[0]], name=f"{name}/divide"))
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    return result


def check_alexnet_graph(model: onnx.ModelProto, source: str, require_plugin: bool = True) -> None:
    """Reject an ONNX file that is not our AlexNet: wrong I/O, or no LRN nodes."""
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(dims(inputs[0])) != 4 or dims(inputs[0])[1] != 3:
        found = ", ".join(f"{i.name}{dims(i)}" for i in inputs) or "none"
        raise DeployError(f"{source}: expected one input '{INPUT_NAME}' of shape [batch, 3, H, W], found {found}")
    outputs = list(model.graph.output)
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME or len(dims(outputs[0])) != 2:
        found = ", ".join(f"{o.name}{dims(o)}" for o in outputs) or "none"
        raise DeployError(f"{source}: expected one output '{OUTPUT_NAME}' of shape [batch, classes], found {found}")
    plugin = [n for n in model.graph.node if is_plugin_lrn(n)]
    if not architecture_has_lrn(model):
        lrn = [n for n in model.graph.node if is_plugin_lrn(n) or is_standard_lrn(n)]
        if lrn:
            raise DeployError(
                f"{source}: its metadata describes torchvision's AlexNet, which has no LRN, "
                f"but the graph has {len(lrn)} LRN nodes"
            )
    elif require_plugin and len(plugin) != 2:
        raise DeployError(
            f"{source}: expected 2 LRN plugin nodes ({PLUGIN_NAMESPACE}::{PLUGIN_NAME}, exported with --lrn plugin), found {len(plugin)}"
        )


def architecture_has_lrn(model: onnx.ModelProto) -> bool:
    """Whether the exported network normalises after conv1/conv2 (the paper's does,
    torchvision's variant does not), by the ``architecture`` metadata the export writes;
    a file without it is the paper's (it predates the variants). The entry itself is
    covered by ``metadata_sha256`` (:func:`export_metadata`)."""
    architecture = metadata_value(model, "architecture", required=False)
    return not (isinstance(architecture, dict) and architecture.get("variant") == TORCHVISION)


def load_model(path: Path, require_plugin: bool = True) -> onnx.ModelProto:
    """Load and check one of our ONNX files; every failure is one DeployError line."""
    path = Path(path)
    require_file(path, "ONNX file", "write it with `alexnet-deploy export`")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 -- protobuf raises several types for a foreign file
        raise DeployError(f"{path} is not an ONNX model ({error.__class__.__name__})") from None
    check_alexnet_graph(model, str(path), require_plugin=require_plugin)
    return model


def load_verified(path: Path, require_plugin: bool = False) -> onnx.ModelProto:
    """:func:`load_model`, its weights then checked against the digest written with
    them (its metadata is checked where it is read, by :func:`export_metadata`)."""
    model = load_model(path, require_plugin=require_plugin)
    verify_weights(model, str(path))
    return model
