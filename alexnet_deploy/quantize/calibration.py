"""Activation ranges from the calibration images: |x| statistics of every tensor the
Q/DQ layouts quantize, and the amax each calibration method takes from them.

The methods (``choices.CalibrationMethod``) follow TensorRT's rules, which is why we
calibrate ourselves instead of calling a library:

* ``max``: the largest |x| seen.
* ``percentile``: the |x| below which ``--percentile`` % of the values fall.
* ``entropy``: the KL-divergence threshold of TensorRT's legacy entropy calibrator on a
  2048-bin histogram of |x| (:func:`entropy_amax`), the rule NVIDIA's own reference
  implementations keep (``modelopt/torch/quantization/calib/histogram.py:
  _compute_amax_entropy`` in TensorRT-Model-Optimizer; ``tests/test_quantize_entropy.py``
  checks ours against it).

Neither off-the-shelf ONNX quantizer gives these ranges for this graph on a CPU:

* ModelOpt's ONNX PTQ (``modelopt.onnx.quantization``) runs its calibration through
  onnxruntime, and a graph with a custom op (our LRN plugin node) makes it put
  TensorRT's execution provider first and raise when onnxruntime has none
  (``ort_utils.update_trt_ep_support``, ``ort_patching._create_inference_session_with_ep_config``):
  no calibration without a GPU and TensorRT. Its ONNX ``entropy`` is also onnxruntime's
  calibrator, not the rule above.
* onnxruntime's entropy calibrator (``onnxruntime/quantization/calibrate.py``) builds a
  *signed* histogram over [-t, t] (128 bins by default) and grows windows symmetric
  about the zero bin, keeping the zero spike and smoothing both distributions: not
  TensorRT's |x| histogram with the zero bin evened out. With its defaults (128 bins,
  128 quantized bins) it tries a single window, the full range, i.e. it is ``max``.

So onnxruntime's ``quantize_static`` stays an independent comparison
(:mod:`.baseline`), reported beside ours by ``build --compare-methods``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..choices import CalibrationMethod
from ..errors import DeployError
from ..graph import INPUT_NAME, to_standard_lrn
from ..progress import ProgressReporter, SilentProgress
from .int8 import QUANTIZED_OPS

HISTOGRAM_BINS = 2048  # TensorRT's legacy entropy calibrator used 2048 bins
ENTROPY_TARGET_BINS = 128  # the INT8 magnitudes a positive threshold maps onto


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


def exposing(model: onnx.ModelProto, tensors: list[str]) -> bytes:
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
    session = onnxruntime.InferenceSession(exposing(model, tensors), providers=["CPUExecutionProvider"])
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    amax = dict.fromkeys(tensors, 0.0)
    histograms = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in tensors}
    progress.begin("calibrating", 2 * len(images))
    for histogram_pass in (False, True):
        for batch in batches:
            outputs = session.run(tensors, {INPUT_NAME: batch})
            for name, values in zip(tensors, outputs, strict=True):
                magnitudes = np.abs(values).ravel()
                if histogram_pass:
                    histograms[name] += np.histogram(magnitudes, HISTOGRAM_BINS, (0.0, max(amax[name], 1e-12)))[0]
                else:
                    amax[name] = max(amax[name], float(magnitudes.max()))
            progress.advance(len(batch))
    progress.finish()
    return {name: TensorStatistics(amax[name], histograms[name]) for name in tensors}


def activation_max(
    model: onnx.ModelProto, images: np.ndarray, tensors: list[str], batch_size: int = 32
) -> dict[str, float]:
    """Each tensor's max |x| over ``images``: one pass of the FP32 model."""
    import onnxruntime

    session = onnxruntime.InferenceSession(exposing(model, tensors), providers=["CPUExecutionProvider"])
    amax = dict.fromkeys(tensors, 0.0)
    for start in range(0, len(images), batch_size):
        outputs = session.run(tensors, {INPUT_NAME: images[start : start + batch_size]})
        for name, values in zip(tensors, outputs, strict=True):
            amax[name] = max(amax[name], float(np.abs(values).max(initial=0.0)))
    return amax


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
    represent) and spread back evenly over its non-empty bins. Level ``g`` of ``n``
    bins starts at bin ceil(g * n / 128), as in NVIDIA's reference implementations.
    The clip point with the smallest KL(P || Q) wins (the largest one on ties); one
    where P has mass in a bin Q leaves empty (folded outliers landing on an empty bin)
    diverges infinitely and never wins. The zero bin is set to its neighbour's count
    first: after ReLU most values are exactly zero, and that spike would otherwise
    swamp the divergence.
    """
    histogram = stats.histogram.astype(np.float64)
    histogram[0] = histogram[1]
    total_bins = len(histogram)
    tail = np.append(np.cumsum(histogram[::-1])[::-1], 0.0)  # tail[i] = sum(histogram[i:])
    levels = np.arange(ENTROPY_TARGET_BINS)
    best_bins, best_divergence = total_bins, np.inf
    for bins in range(ENTROPY_TARGET_BINS, total_bins + 1):
        clipped = histogram[:bins]
        reference = clipped.copy()
        reference[-1] += tail[bins]
        starts = -((-levels * bins) // ENTROPY_TARGET_BINS)  # ceil(g * bins / 128)
        group = np.repeat(levels, np.diff(np.append(starts, bins)))
        occupied = clipped > 0
        mass = np.add.reduceat(clipped, starts)
        filled = np.add.reduceat(occupied.astype(np.float64), starts)
        candidate = np.where(occupied, mass[group] / np.maximum(filled[group], 1), 0.0)
        if candidate.sum() == 0:
            continue
        p = reference / reference.sum()
        q = candidate / candidate.sum()
        support = p > 0
        if not np.all(q[support] > 0):
            continue
        divergence = float(np.sum(p[support] * np.log(p[support] / q[support])))
        if divergence <= best_divergence:
            best_bins, best_divergence = bins, divergence
    return best_bins * stats.bin_width


def activation_amax(
    statistics: dict[str, TensorStatistics], method: CalibrationMethod | str, percentile: float = 99.99
) -> dict[str, float]:
    """Each tensor's amax by ``method`` (a ``CalibrationMethod`` or its value)."""
    if method not in CalibrationMethod.values():
        raise DeployError(f"unknown --calib-method {method!r}; choose one of {', '.join(CalibrationMethod.values())}")
    pick = {
        CalibrationMethod.MAX: lambda s: s.amax,
        CalibrationMethod.PERCENTILE: lambda s: percentile_amax(s, percentile),
        CalibrationMethod.ENTROPY: entropy_amax,
    }[CalibrationMethod(method)]
    return {name: float(pick(stats)) for name, stats in statistics.items()}
