"""The metadata of our ONNX files, read once: :class:`ExportMetadata` (classes,
preprocessing, split, data source, target runtime, calibration provenance, checkpoint
digest), each entry checked and the whole verified against the digest written with it;
and the precision a graph holds by its content."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import onnx

from .artifacts import PRECISIONS, Precision
from .data.preprocessing import Preprocessing
from .data.split import Split
from .digests import read_metadata, verify_metadata
from .errors import DeployError

INPUT_NAME = "images"  # the graph's one input and output, as every export names them
OUTPUT_NAME = "logits"


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def metadata_value(model: onnx.ModelProto, key: str, source: str = "model", required: bool = True):
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
    value = metadata_value(model, key, source)
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
    data = metadata_value(model, "calibration", source, required=False)
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
    precision = metadata_value(model, "precision", source)
    if precision not in PRECISIONS:
        raise DeployError(
            f"{source}: metadata 'precision' is {str(precision)[:30]!r}, not one of {', '.join(PRECISIONS)}"
        )
    classes = metadata_value(model, "classes", source)
    outputs = dims(model.graph.output[0]) if model.graph.output else []
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or len(classes) < 2:
        raise DeployError(f"{source}: metadata 'classes' is not a list of at least 2 class names")
    if len(set(classes)) != len(classes):  # a prediction could not say which class it means
        duplicate = next(name for name in classes if classes.count(name) > 1)
        raise DeployError(f"{source}: metadata 'classes' lists {duplicate[:60]!r} more than once")
    if len(outputs) == 2 and isinstance(outputs[1], int) and outputs[1] and outputs[1] != len(classes):
        raise DeployError(f"{source}: metadata names {len(classes)} classes but the model outputs {outputs[1]} logits")
    preprocessing = _preprocessing(_metadata_object(model, "preprocessing", source), source)
    inputs = [dims(i) for i in model.graph.input if i.name == INPUT_NAME]
    size = inputs[0][2:] if inputs else []
    if any(isinstance(d, int) and d and d != preprocessing.crop for d in size):
        raise DeployError(
            f"{source}: metadata 'preprocessing' crops {preprocessing.crop} px but the model takes {size[0]}×{size[-1]}"
        )
    split = _split(_metadata_object(model, "split", source), source)
    data_source = metadata_value(model, "data_source", source)
    if not isinstance(data_source, str) or not data_source:
        raise DeployError(f"{source}: metadata 'data_source' is not a path or dataset name")
    target_runtime = metadata_value(model, "target_runtime", source, required=False)
    if target_runtime is not None and not isinstance(target_runtime, str):
        raise DeployError(f"{source}: metadata 'target_runtime' is not a runtime name")
    checkpoint_sha256 = read_metadata(model).get("checkpoint_sha256")  # raw: a hex digest, never JSON
    class_ids = metadata_value(model, "class_ids", source, required=False) or []
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
    precision = metadata_value(model, "precision", source)
    content = graph_precision(model)
    if precision != "fp32" or content != Precision.FP32:
        found = {Precision.INT8: "int8 (Q/DQ)", Precision.FP16: "fp16"}.get(content, str(precision)[:30])
        raise DeployError(
            f"{source} is a {found} model; `build --onnx` takes the FP32 file written by `alexnet-deploy export`"
        )
