"""Pure functions over ONNX graphs: the plugin/standard LRN rewrites, the
standard-op twin onnxruntime runs, and the checks later steps apply to an ONNX file,
including its metadata, read once into :class:`ExportMetadata`.

The rewrites touch only node fields (op_type, domain, attributes) and opset imports,
never initializers, so working on the protobuf directly is both the simplest and the
cheapest route (no copy of ~240 MB of weights through a graph library's IR).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from .artifacts import PRECISIONS, Precision
from .data.preprocessing import Preprocessing
from .data.split import Split
from .digests import read_metadata, verify_metadata, verify_weights
from .errors import DeployError
from .files import require_file
from .model import TORCHVISION
from .plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
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


def _metadata_value(model: onnx.ModelProto, key: str, source: str = "model", required: bool = True):
    """A JSON-encoded metadata entry written by our export; missing is a DeployError
    (None if not ``required``). Readers use :func:`export_metadata`."""
    value = read_metadata(model).get(key)
    if value is None and not required:
        return None
    if value is None:
        raise DeployError(f"{source} has no '{key}' metadata (was it written by `alexnet-deploy export`?)")
    try:
        return json.loads(value)
    except json.JSONDecodeError:  # plain strings (precision, data_source) are stored as is
        return value


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_alexnet_graph(model: onnx.ModelProto, source: str, require_plugin: bool = True) -> None:
    """Reject an ONNX file that is not our AlexNet: wrong I/O, or no LRN nodes."""
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(_dims(inputs[0])) != 4 or _dims(inputs[0])[1] != 3:
        found = ", ".join(f"{i.name}{_dims(i)}" for i in inputs) or "none"
        raise DeployError(f"{source}: expected one input '{INPUT_NAME}' of shape [batch, 3, H, W], found {found}")
    outputs = list(model.graph.output)
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME or len(_dims(outputs[0])) != 2:
        found = ", ".join(f"{o.name}{_dims(o)}" for o in outputs) or "none"
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
    architecture = _metadata_value(model, "architecture", required=False)
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


# ---------------------------------------------------------- export metadata

MAX_IMAGE_SIDE = 4096  # resize/crop beyond this is not an AlexNet preprocessing


@dataclass(frozen=True)
class CalibrationProvenance:
    """Where an INT8 file's activation ranges came from (``build`` writes it), so a
    file separated from its scale cache still says."""

    method: str
    images: int
    image_fingerprint: str
    model_sha256: str
    percentile: float | None = None  # the percentile method's --percentile
    # build --min-agreement/--max-drop: the layers left out of INT8 (layer -> "fp16"/"fp32")
    # and the budget they were chosen for; None without a budget
    fallback: dict[str, str] | None = None
    budget: dict[str, float] | None = None

    def to_dict(self) -> dict[str, object]:
        values: dict[str, object] = {
            "method": self.method,
            "images": self.images,
            "image_fingerprint": self.image_fingerprint,
            "model_sha256": self.model_sha256,
        }
        optional = {"percentile": self.percentile, "fallback": self.fallback, "budget": self.budget}
        return values | {k: v for k, v in optional.items() if v is not None}

    def mixed_precision(self) -> str | None:
        """``"out of INT8: fc7 fp32 (budget min_agreement 0.99)"``, or None without a budget."""
        if self.budget is None:
            return None
        layers = ", ".join(f"{layer} {precision}" for layer, precision in (self.fallback or {}).items()) or "none"
        budget = ", ".join(f"{k} {v:g}" for k, v in self.budget.items())
        return f"out of INT8: {layers} (budget {budget})"


@dataclass(frozen=True)
class ExportMetadata:
    """What the export recorded and later steps rely on, read once and range-checked,
    so a damaged or hand-edited entry is one clear error rather than a crash later.
    An INT8 file written by ``build`` also says which runtime its Q/DQ layout targets
    and where its ranges came from; other files leave those None."""

    precision: Precision
    classes: list[str]
    preprocessing: Preprocessing
    split: Split
    data_source: str
    target_runtime: str | None = None  # "tensorrt" or "onnxruntime" (INT8 files)
    calibration: CalibrationProvenance | None = None
    checkpoint_sha256: str | None = None  # the checkpoint it was exported from (FP32 export)
    class_ids: list[str] = field(default_factory=list)  # ImageNet synsets of an imported model


def _metadata_object(model: onnx.ModelProto, key: str, source: str) -> dict:
    value = _metadata_value(model, key, source)
    if not isinstance(value, dict):
        raise DeployError(f"{source}: metadata '{key}' is not a JSON object: {str(value)[:60]!r}")
    return value


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _preprocessing(data: dict, source: str) -> Preprocessing:
    def invalid(reason: str) -> DeployError:
        return DeployError(f"{source}: metadata 'preprocessing' is invalid: {reason}")

    try:
        preprocessing = Preprocessing.from_dict(data)
    except DeployError as error:
        raise invalid(str(error)) from None
    except (KeyError, TypeError, ValueError):
        raise invalid("it lacks resize/crop/mean/std or holds non-numbers") from None
    if not 1 <= preprocessing.crop <= preprocessing.resize <= MAX_IMAGE_SIDE:
        raise invalid(
            f"need 1 <= crop <= resize <= {MAX_IMAGE_SIDE}, got crop {preprocessing.crop}, resize {preprocessing.resize}"
        )
    if len(preprocessing.mean) != 3 or not all(_number(v) for v in preprocessing.mean):
        raise invalid(f"mean must be 3 finite numbers, got {preprocessing.mean}")
    if len(preprocessing.std) != 3 or not all(_number(v) and v > 0 for v in preprocessing.std):
        raise invalid(f"std must be 3 positive finite numbers, got {preprocessing.std}")
    return preprocessing


def _split(data: dict, source: str) -> Split:
    def invalid(reason: str) -> DeployError:
        return DeployError(f"{source}: metadata 'split' is invalid: {reason}")

    try:
        split = Split(**data)
    except DeployError as error:
        raise invalid(str(error)) from None
    except TypeError:
        raise invalid(f"unknown or missing fields {sorted(data)}") from None
    fractions = (split.val_fraction, split.calibration_fraction)
    if not all(_number(f) and 0 <= f < 1 for f in fractions) or not sum(fractions) < 1:
        raise invalid(
            f"fractions must be in [0, 1) and sum below 1, got val {split.val_fraction}, calibration {split.calibration_fraction}"
        )
    if not isinstance(split.seed, int) or isinstance(split.seed, bool) or split.seed < 0:
        raise invalid(f"seed must be a non-negative integer, got {split.seed!r}")
    return split


def _calibration(model: onnx.ModelProto, source: str) -> CalibrationProvenance | None:
    data = _metadata_value(model, "calibration", source, required=False)
    if data is None:
        return None
    fields = {"method": str, "images": int, "image_fingerprint": str, "model_sha256": str}
    if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in fields.items()):
        raise DeployError(f"{source}: metadata 'calibration' is invalid: need {', '.join(fields)}")
    percentile = data.get("percentile")
    if percentile is not None and not _number(percentile):
        raise DeployError(f"{source}: metadata 'calibration' is invalid: percentile {str(percentile)[:30]!r}")
    fallback, budget = data.get("fallback"), data.get("budget")
    if fallback is not None and not (
        isinstance(fallback, dict) and all(isinstance(v, str) and v in ("fp16", "fp32") for v in fallback.values())
    ):
        raise DeployError(f"{source}: metadata 'calibration' is invalid: fallback {str(fallback)[:60]!r}")
    if budget is not None and not (isinstance(budget, dict) and all(_number(v) for v in budget.values())):
        raise DeployError(f"{source}: metadata 'calibration' is invalid: budget {str(budget)[:60]!r}")
    return CalibrationProvenance(
        **{k: data[k] for k in fields}, percentile=percentile, fallback=fallback, budget=budget
    )


def export_metadata(model: onnx.ModelProto, source: str) -> ExportMetadata:
    """The checked metadata of one of our ONNX files (see :class:`ExportMetadata`),
    verified against the digest written with it."""
    precision = _metadata_value(model, "precision", source)
    if precision not in PRECISIONS:
        raise DeployError(
            f"{source}: metadata 'precision' is {str(precision)[:30]!r}, not one of {', '.join(PRECISIONS)}"
        )
    classes = _metadata_value(model, "classes", source)
    outputs = _dims(model.graph.output[0]) if model.graph.output else []
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(classes) < 2:
        raise DeployError(f"{source}: metadata 'classes' is not a list of at least 2 class names")
    if len(set(classes)) != len(classes):  # a prediction could not say which class it means
        duplicate = next(name for name in classes if classes.count(name) > 1)
        raise DeployError(f"{source}: metadata 'classes' lists {duplicate[:60]!r} more than once")
    if len(outputs) == 2 and isinstance(outputs[1], int) and outputs[1] and outputs[1] != len(classes):
        raise DeployError(f"{source}: metadata names {len(classes)} classes but the model outputs {outputs[1]} logits")
    preprocessing = _preprocessing(_metadata_object(model, "preprocessing", source), source)
    inputs = [_dims(i) for i in model.graph.input if i.name == INPUT_NAME]
    size = inputs[0][2:] if inputs else []
    if any(isinstance(d, int) and d and d != preprocessing.crop for d in size):
        raise DeployError(
            f"{source}: metadata 'preprocessing' crops {preprocessing.crop} px but the model takes {size[0]}×{size[-1]}"
        )
    split = _split(_metadata_object(model, "split", source), source)
    data_source = _metadata_value(model, "data_source", source)
    if not isinstance(data_source, str) or not data_source:
        raise DeployError(f"{source}: metadata 'data_source' is not a path or dataset name")
    target_runtime = _metadata_value(model, "target_runtime", source, required=False)
    if target_runtime is not None and not isinstance(target_runtime, str):
        raise DeployError(f"{source}: metadata 'target_runtime' is not a runtime name")
    checkpoint_sha256 = read_metadata(model).get("checkpoint_sha256")  # raw: a hex digest, never JSON
    class_ids = _metadata_value(model, "class_ids", source, required=False) or []
    if not isinstance(class_ids, list) or not all(isinstance(c, str) and c for c in class_ids):
        raise DeployError(f"{source}: metadata 'class_ids' is not a list of class ids")
    if class_ids and len(class_ids) != len(classes):
        raise DeployError(f"{source}: metadata names {len(class_ids)} class ids for {len(classes)} classes")
    calibration = _calibration(model, source)
    # last: an entry that is invalid gets its own message above, a valid but edited one this
    verify_metadata(model, source)
    return ExportMetadata(
        Precision(precision),
        classes,
        preprocessing,
        split,
        data_source,
        target_runtime,
        calibration,
        checkpoint_sha256,
        class_ids,
    )


def graph_precision(model: onnx.ModelProto) -> Precision:
    """The precision a graph carries by its content, whatever its metadata says: Q/DQ
    nodes -> int8, FP16 weights -> fp16, else fp32."""
    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node):
        return Precision.INT8
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return Precision.FP16
    return Precision.FP32


def require_fp32_export(model: onnx.ModelProto, source: str) -> None:
    """``build`` derives FP16/INT8 from the FP32 export only: converting a converted
    file again gives a model TensorRT and onnxruntime cannot load."""
    precision = _metadata_value(model, "precision", source)
    content = graph_precision(model)
    if precision != "fp32" or content != Precision.FP32:
        found = {Precision.INT8: "int8 (Q/DQ)", Precision.FP16: "fp16"}.get(content, str(precision)[:30])
        raise DeployError(
            f"{source} is a {found} model; `build --onnx` takes the FP32 file written by `alexnet-deploy export`"
        )
