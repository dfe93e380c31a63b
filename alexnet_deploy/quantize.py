"""Precision lives in the ONNX (TensorRT 11 has no FP16/INT8 builder flags; TensorRT 10
builds the same files with the strongly-typed flag):

* FP16: weights and activations in float16, float32 I/O; the LRN plugin node runs in
  fp16 (the plugin sums squares in fp32).
* INT8: explicit quantization. Symmetric QuantizeLinear/DequantizeLinear pairs (zero
  point 0) on the inputs of every Conv and Gemm — per-tensor for activations, per
  output channel for weights — which is where TensorRT fuses them into INT8 kernels.
  LRN, ReLU and max-pool stay in floating point between them.

Why our own Q/DQ pass rather than onnxruntime's ``quantize_static``: the scales must
follow TensorRT's rules (narrow-range symmetric weights, activations calibrated the
way TensorRT's legacy calibrators did, including the entropy/KL method), and the graph
must keep our plugin node. ``quantize_static`` runs only on the standard-op twin and
calibrates by its own rules, so we keep it as an independent comparison instead
(:func:`onnxruntime_int8`), reported beside ours by ``build --compare-methods``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from .data import Preprocessing, Split, image_files, load_images
from .errors import DeployError
from .files import atomic_output, write_text_atomic
from .graph import INPUT_NAME, set_metadata, to_plugin_lrn, to_standard_lrn
from .progress import ProgressReporter, SilentProgress

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATION_METHODS = ("max", "percentile", "entropy")
QUANTIZED_OPS = ("Conv", "Gemm")
INT8_MAX = 127  # symmetric narrow range [-127, 127], as TensorRT quantizes
HISTOGRAM_BINS = 2048  # TensorRT's legacy entropy calibrator used 2048 bins
ENTROPY_TARGET_BINS = 128  # the INT8 magnitudes a positive threshold maps onto
DEFAULT_CALIBRATION_IMAGES = 500


# ---------------------------------------------------------------------------- FP16


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and activations with FP32 graph I/O (onnxconverter-common)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight below fp16's range
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    set_metadata(half, {"precision": "fp16"})
    return half


# --------------------------------------------------------------- calibration images


@dataclass
class CalibrationSet:
    images: np.ndarray  # preprocessed float32 (N, 3, H, W)
    fingerprint: str  # hash of exactly these preprocessed pixels
    directory: Path
    available: int


def fill_calibration_dir(directory: Path, data_source: str, split: Split) -> int:
    """Write the training data's held-out calibration split into ``directory`` as PNGs
    (``<class>/<index>.png``), unpreprocessed, so calibration applies the one
    preprocessing definition to them like to any user-supplied image.

    A folder that already holds other images is refused rather than mixed into the
    calibration set (calibration uses every image in the folder): only files of the
    names this split writes may be there already, and they are rewritten."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DeployError(f"--calibration {directory} is a file, not a folder")
    images = split.apply(load_images(data_source))["calibration"]
    targets = [directory / images.classes[images.labels[i]] / f"{i:05d}.png" for i in range(len(images))]
    foreign = sorted(set(image_files(directory, recursive=True)) - set(targets)) if directory.is_dir() else []
    if foreign:
        raise DeployError(
            f"calibration folder {directory} already holds {len(foreign)} other images (e.g. {foreign[0]}); "
            "--calib-from-data needs an empty folder (or one it filled before): choose another --calibration"
        )
    for index, target in enumerate(targets):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DeployError(f"cannot create {target.parent}: {error.strerror or error}") from None
        with atomic_output(target) as tmp:
            images.image(index).save(tmp, format="PNG")
    return len(images)


def calibration_files(directory: Path) -> list[Path]:
    """Every JPEG/PNG under ``directory``: a flat folder or one folder per class."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DeployError(f"--calibration {directory} is a file, not a folder of images")
    if not directory.is_dir():
        raise DeployError(
            f"calibration folder {directory} does not exist (add images, or use --calib-from-data)"
        )
    files = image_files(directory, recursive=True)
    if not files:
        raise DeployError(f"calibration folder {directory} has no images (add JPEG/PNG files, or use --calib-from-data)")
    return files


def load_calibration_set(directory: Path, preprocessing: Preprocessing, count: int | None) -> CalibrationSet:
    """``count`` images drawn evenly from the folder (all if fewer than the default
    and ``count`` was not given); fewer than an explicit ``count`` is an error."""
    files = calibration_files(directory)
    if count is not None and count < 1:
        raise DeployError(f"--calib-images must be positive, got {count}")
    if count is not None and count > len(files):
        raise DeployError(f"calibration folder {directory} has {len(files)} images, fewer than the {count} asked for")
    wanted = min(count or DEFAULT_CALIBRATION_IMAGES, len(files))
    chosen = sorted(np.random.default_rng(0).permutation(len(files))[:wanted])
    batch = []
    for index in chosen:
        try:
            with Image.open(files[index]) as image:
                batch.append(preprocessing(image.convert("RGB")))
        except Exception as error:  # PIL raises many types for a damaged file
            raise DeployError(f"cannot read calibration image {files[index]}: {error.__class__.__name__}") from None
    images = np.stack(batch)
    fingerprint = hashlib.sha256(images.tobytes()).hexdigest()[:16]
    return CalibrationSet(images, fingerprint, Path(directory), len(files))


# ------------------------------------------------------------ activation statistics


def quantized_activations(model: onnx.ModelProto) -> list[str]:
    """Activation inputs of Conv/Gemm nodes (each once, in graph order)."""
    weights = {t.name for t in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS and node.input[0] not in weights and node.input[0] not in names:
            names.append(node.input[0])
    return names


@dataclass
class TensorStatistics:
    """|x| of one tensor over the calibration set: its max and a histogram on [0, amax]."""

    amax: float
    histogram: np.ndarray  # HISTOGRAM_BINS counts

    @property
    def bin_width(self) -> float:
        return self.amax / len(self.histogram)


def _exposing(model: onnx.ModelProto, tensors: list[str]) -> bytes:
    """The FP32 twin with ``tensors`` added as graph outputs, serialized for onnxruntime."""
    twin = to_standard_lrn(model)
    twin.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in tensors)
    return twin.SerializeToString()


def collect_statistics(
    model: onnx.ModelProto,
    images: np.ndarray,
    batch_size: int = 32,
    progress: ProgressReporter | None = None,
    tensors: list[str] | None = None,
) -> dict[str, TensorStatistics]:
    """Two passes of the FP32 model over the calibration images: the first finds each
    activation's max |x|, the second fills a histogram on [0, max]. ``tensors``: which
    activations (default: the Conv/Gemm inputs, :func:`quantized_activations`)."""
    import onnxruntime

    progress = progress or SilentProgress()
    tensors = tensors or quantized_activations(model)
    session = onnxruntime.InferenceSession(_exposing(model, tensors), providers=["CPUExecutionProvider"])
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    amax = dict.fromkeys(tensors, 0.0)
    histograms = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in tensors}
    progress.begin("calibrating", 2 * len(images))
    for histogram_pass in (False, True):
        for batch in batches:
            outputs = session.run(tensors, {INPUT_NAME: batch})
            for name, values in zip(tensors, outputs):
                magnitudes = np.abs(values).ravel()
                if histogram_pass:
                    histograms[name] += np.histogram(magnitudes, HISTOGRAM_BINS, (0.0, max(amax[name], 1e-12)))[0]
                else:
                    amax[name] = max(amax[name], float(magnitudes.max()))
            progress.advance(len(batch))
    progress.finish()
    return {name: TensorStatistics(amax[name], histograms[name]) for name in tensors}


def percentile_amax(stats: TensorStatistics, percentile: float = 99.99) -> float:
    """The |x| below which ``percentile`` % of the calibration values fall."""
    cumulative = np.cumsum(stats.histogram)
    index = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return min(stats.amax, (index + 1) * stats.bin_width)


def entropy_amax(stats: TensorStatistics) -> float:
    """The KL-divergence threshold of TensorRT's legacy entropy calibrator.

    For each candidate clip point (128 .. 2048 bins) the reference distribution P is
    the histogram up to it with all larger values folded into its last bin (what
    clipping does); Q is the unclipped part merged into 128 levels (what INT8 can
    represent) and spread back evenly over its non-empty bins. The clip point with
    the smallest KL(P || Q) wins (the largest one on ties). The zero bin is set to
    its neighbour's count first: after ReLU most values are exactly zero, and that
    spike would otherwise swamp the divergence.
    """
    histogram = stats.histogram.astype(np.float64)
    histogram[0] = histogram[1]
    total_bins = len(histogram)
    tail = np.append(np.cumsum(histogram[::-1])[::-1], 0.0)  # tail[i] = sum(histogram[i:])
    best_bins, best_divergence = total_bins, np.inf
    for bins in range(ENTROPY_TARGET_BINS, total_bins + 1):
        clipped = histogram[:bins]
        reference = clipped.copy()
        reference[-1] += tail[bins]
        starts = (np.arange(ENTROPY_TARGET_BINS) * bins) // ENTROPY_TARGET_BINS
        group = np.repeat(np.arange(ENTROPY_TARGET_BINS), np.diff(np.append(starts, bins)))
        occupied = clipped > 0
        mass = np.add.reduceat(clipped, starts)
        filled = np.add.reduceat(occupied.astype(np.float64), starts)
        candidate = np.where(occupied, mass[group] / np.maximum(filled[group], 1), 0.0)
        if candidate.sum() == 0:
            continue
        p = reference / reference.sum()
        q = candidate / candidate.sum()
        support = p > 0
        # a P bin with no Q mass (empty in the clipped histogram but holding folded
        # outliers) costs as if Q had a tiny epsilon there
        divergence = float(np.sum(p[support] * np.log(p[support] / np.maximum(q[support], 1e-12))))
        if divergence <= best_divergence:
            best_bins, best_divergence = bins, divergence
    return best_bins * stats.bin_width


def activation_amax(statistics: dict[str, TensorStatistics], method: str, percentile: float = 99.99) -> dict[str, float]:
    if method not in CALIBRATION_METHODS:
        raise DeployError(f"unknown --calib-method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    pick = {
        "max": lambda s: s.amax,
        "percentile": lambda s: percentile_amax(s, percentile),
        "entropy": entropy_amax,
    }[method]
    return {name: float(pick(stats)) for name, stats in statistics.items()}


# ------------------------------------------------------------------ scale cache


@dataclass
class CalibrationCache:
    method: str
    model_sha256: str
    data_fingerprint: str
    images: int
    amax: dict[str, float]
    percentile: float | None = None  # the --percentile it was computed with (percentile method)

    @property
    def scales(self) -> dict[str, float]:
        return {name: value / INT8_MAX for name, value in self.amax.items()}


def cache_path(directory: Path, method: str) -> Path:
    return Path(directory) / f"scales.{method}.json"


def _valid_amax(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def read_cache(path: Path) -> CalibrationCache | None:
    """The cache at ``path``, or None if it is missing or invalid in any way (not
    JSON, missing keys, an amax that is not a finite number >= 0): an invalid
    cache is a stale one, recalibrated rather than trusted or crashed on."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        cache = CalibrationCache(
            data["method"], data["model_sha256"], data["data_fingerprint"], data["images"],
            {name: entry["amax"] for name, entry in data["tensors"].items()},
            data.get("percentile"),
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return cache if all(_valid_amax(v) for v in cache.amax.values()) else None


def write_cache(path: Path, cache: CalibrationCache) -> None:
    payload = {
        "method": cache.method,
        "model_sha256": cache.model_sha256,
        "data_fingerprint": cache.data_fingerprint,
        "images": cache.images,
        "percentile": cache.percentile,
        "tensors": {name: {"amax": cache.amax[name], "scale": cache.scales[name]} for name in cache.amax},
    }
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------- Q/DQ insertion


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


def insert_qdq(model: onnx.ModelProto, activation_amax: dict[str, float]) -> onnx.ModelProto:
    """Q/DQ on every Conv/Gemm input: activations per-tensor with the calibrated amax,
    weights per-channel as int8 initializers behind a DequantizeLinear. Pure."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    initializers = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    dequantized: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS:
            activation = node.input[0]
            if activation not in dequantized:
                if activation not in activation_amax:
                    raise DeployError(f"no calibrated range for tensor {activation!r}; recalibrate with --recalibrate")
                scale, zero = f"{activation}_scale", f"{activation}_zero_point"
                graph.initializer.extend([
                    numpy_helper.from_array(np.float32(max(activation_amax[activation], 1e-12) / INT8_MAX), scale),
                    numpy_helper.from_array(np.int8(0), zero),
                ])
                nodes.append(helper.make_node("QuantizeLinear", [activation, scale, zero], [f"{activation}_q"]))
                nodes.append(helper.make_node("DequantizeLinear", [f"{activation}_q", scale, zero], [f"{activation}_dq"]))
                dequantized[activation] = f"{activation}_dq"
            node.input[0] = dequantized[activation]

            weight = initializers[node.input[1]]
            quantized = quantize_weight_input(node, weight)
            graph.initializer.remove(weight)
            graph.initializer.extend(quantized.initializers)
            nodes.append(quantized.dequantize)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    set_metadata(result, {"precision": "int8"})
    return result


# ------------------------------------------------- onnxruntime's own quantizer


def onnxruntime_int8(model: onnx.ModelProto, images: np.ndarray, workdir: Path, activations: str = "int8") -> onnx.ModelProto:
    """onnxruntime's ``quantize_static`` (QDQ, per-channel symmetric int8 weights, MinMax)
    on the standard-op twin, LRN swapped back to our plugin node afterwards: the
    independent INT8 baseline that ours is compared with. ``activations``: ``"int8"``
    (symmetric, as TensorRT takes them) or ``"uint8"`` (asymmetric, onnxruntime's own
    default, the u8s8 pairing its x86 kernels run fastest)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images[i : i + 32] for i in range(0, len(images), 32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    source, target = Path(workdir) / "twin.fp32.onnx", Path(workdir) / "twin.ort-int8.onnx"
    onnx.save(to_standard_lrn(model), str(source))
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # it logs advice about pre-processing on the root logger
    try:
        quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True},
        )
    finally:
        root_logger.setLevel(previous_level)
    quantized = to_plugin_lrn(onnx.load(str(target)))
    set_metadata(quantized, {"precision": "int8", "target_runtime": "onnxruntime"})
    return quantized
