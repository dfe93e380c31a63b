"""Per-layer INT8 sensitivity: which Conv/Gemm loses the accuracy, measured on the
held-out val images against the FP32 reference in onnxruntime.

For each of AlexNet's eight quantizable layers and each Q/DQ layout:

* **alone** -- that layer in INT8, every other one in FP32 (how much it costs by itself);
* **all but** -- every layer in INT8 except that one, in FP32 (how much leaving it out
  buys back: Polygraphy's ``debug precision`` question);
* **SQNR** -- in the all-INT8 graph, each layer's Conv/Gemm output against FP32's,
  10·log10(Σx² / Σ(x − x̂)²) over the images: where the signal collapses first
  (onnxruntime's ``quantization.qdq_loss_debug`` computes the same quantity;
  ``tests/test_sensitivity.py`` cross-checks the two).

The layers are ranked most sensitive first: lowest agreement *alone*, then highest
agreement *all but*, then largest mean |Δ logits| *alone*; with two layouts, each
layer's worse figure counts. That is 2 x 8 evaluations per layout plus one all-INT8
graph (see docs/quantization.md for the seconds).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from ..artifacts import Precision
from ..graph import INPUT_NAME
from ..progress import ProgressReporter, SilentProgress
from .calibration import exposing
from .mixed import LAYERS, LAYOUTS, layer_tensors, mixed_int8

SQNR_BATCH = 32  # images per onnxruntime call when reading activations


@dataclass(frozen=True)
class Outcome:
    """One graph's logits against FP32's (and the labels) on the val images."""

    agreement: float  # top-1 agreement with FP32
    top1: float | None  # top-1 against the labels, where there are labels
    max_abs_diff: float  # max |Δ logits|
    mean_abs_diff: float  # mean |Δ logits|


def outcome(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> Outcome:
    difference = np.abs(reference.astype(np.float64) - logits)
    return Outcome(
        agreement=float(np.mean(reference.argmax(axis=1) == logits.argmax(axis=1))),
        top1=None if labels is None else float(np.mean(logits.argmax(axis=1) == labels)),
        max_abs_diff=float(difference.max()),
        mean_abs_diff=float(difference.mean()),
    )


@dataclass
class Evaluator:
    """Evaluates the FP32 model's mixed INT8 graphs on the val images, counting the
    evaluations and their seconds (the cost docs/quantization.md reports)."""

    model: onnx.ModelProto
    activation_amax: dict[str, float]
    images: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray
    evaluations: int = 0
    seconds: float = 0.0

    @property
    def fp32_top1(self) -> float | None:
        return None if self.labels is None else float(np.mean(self.reference.argmax(axis=1) == self.labels))

    def graph(self, layout: str, fallback: Mapping[str, str]) -> onnx.ModelProto:
        return mixed_int8(self.model, self.activation_amax, layout, fallback)

    def measure(self, layout: str, fallback: Mapping[str, str]) -> Outcome:
        """The graph in ``layout`` with ``fallback``'s layers out of INT8."""
        from ..runners.registry import open_model

        start = time.perf_counter()
        with open_model("onnxruntime", self.graph(layout, fallback), Precision.INT8.value) as runner:
            logits = runner.infer_all(self.images)
        self.evaluations += 1
        self.seconds += time.perf_counter() - start
        return outcome(self.reference, logits, self.labels)


def layer_outputs(model: onnx.ModelProto, quantized: onnx.ModelProto, images: np.ndarray) -> dict[str, tuple]:
    """Each layer's Conv/Gemm output in ``model`` (FP32) and ``quantized`` (the same
    tensor names: the Q/DQ layouts never rename a Conv/Gemm output), over ``images``."""
    import onnxruntime

    names = {layer: output for layer, (_, output) in layer_tensors(model).items()}
    tensors = list(names.values())
    # the graphs as written: onnxruntime's optimiser fuses Conv+ReLU even where the Conv's
    # output is also a graph output, and then hands back the ReLU's output under its name
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    collected = []
    for graph in (model, quantized):
        session = onnxruntime.InferenceSession(exposing(graph, tensors), options, providers=["CPUExecutionProvider"])
        batches = [
            session.run(tensors, {INPUT_NAME: images[i : i + SQNR_BATCH]}) for i in range(0, len(images), SQNR_BATCH)
        ]
        collected.append({t: np.concatenate([b[k] for b in batches]) for k, t in enumerate(tensors)})
    return {layer: (collected[0][tensor], collected[1][tensor]) for layer, tensor in names.items()}


def sqnr_db(signal: np.ndarray, approximation: np.ndarray) -> float:
    """10·log10(Σx² / Σ(x − x̂)²); infinite when they are equal."""
    signal = signal.astype(np.float64).ravel()
    noise = float(np.sum((signal - approximation.astype(np.float64).ravel()) ** 2))
    power = float(np.sum(signal**2))
    return float("inf") if noise == 0 else 10 * float(np.log10(max(power, 1e-300) / noise))


def activation_sqnr(model: onnx.ModelProto, quantized: onnx.ModelProto, images: np.ndarray) -> dict[str, float]:
    """Each layer's SQNR (dB) in ``quantized`` against FP32, in layer order."""
    return {layer: sqnr_db(fp32, int8) for layer, (fp32, int8) in layer_outputs(model, quantized, images).items()}


@dataclass
class LayerSensitivity:
    layer: str  # conv1 ... fc8
    alone: dict[str, Outcome] = field(default_factory=dict)  # layout -> this layer alone in INT8
    all_but: dict[str, Outcome] = field(default_factory=dict)  # layout -> all INT8 but this layer
    sqnr_db: dict[str, float] = field(default_factory=dict)  # layout -> all-INT8 output SQNR

    def rank_key(self) -> tuple[float, float, float]:
        """Sorts most sensitive first (see the module docstring)."""
        return (
            min(o.agreement for o in self.alone.values()),
            -max(o.agreement for o in self.all_but.values()),
            -max(o.mean_abs_diff for o in self.alone.values()),
        )


@dataclass
class SensitivityReport:
    layers: list[LayerSensitivity]  # most sensitive first
    layouts: tuple[str, ...]
    images: int
    fp32_top1: float | None
    all_int8: dict[str, Outcome]  # layout -> every layer in INT8
    evaluations: int
    seconds: float  # the whole analysis
    # filled by the caller: the calibration measured, and what happened with its cache
    method: str = ""
    calibration_images: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ranking(self) -> list[str]:
        return [entry.layer for entry in self.layers]

    def to_dict(self) -> dict:
        data = asdict(self)
        for entry in data["layers"]:  # JSON has no infinity: an exact layer reads null
            entry["sqnr_db"] = {k: (None if v == float("inf") else v) for k, v in entry["sqnr_db"].items()}
        return data


def analyse(
    evaluator: Evaluator, layouts: Sequence[str] = LAYOUTS, progress: ProgressReporter | None = None
) -> SensitivityReport:
    """Alone / all-but for every layer and layout, and the all-INT8 graphs' SQNR."""
    progress = progress or SilentProgress()
    start, before = time.perf_counter(), evaluator.evaluations
    entries = {layer: LayerSensitivity(layer) for layer in LAYERS}
    all_int8 = {}
    progress.begin("sensitivity", len(layouts) * (2 * len(LAYERS) + 1))
    for layout in layouts:
        for layer in LAYERS:
            others = {other: Precision.FP32.value for other in LAYERS if other != layer}
            entries[layer].alone[layout] = evaluator.measure(layout, others)
            entries[layer].all_but[layout] = evaluator.measure(layout, {layer: Precision.FP32.value})
            progress.advance(2, row=f"{layout} {layer}")
        all_int8[layout] = evaluator.measure(layout, {})
        sqnr = activation_sqnr(evaluator.model, evaluator.graph(layout, {}), evaluator.images)
        for layer, value in sqnr.items():
            entries[layer].sqnr_db[layout] = value
        progress.advance(1, row=f"{layout} all-INT8")
    progress.finish()
    ranked = sorted(entries.values(), key=LayerSensitivity.rank_key)
    return SensitivityReport(
        ranked,
        tuple(layouts),
        len(evaluator.images),
        evaluator.fp32_top1,
        all_int8,
        evaluator.evaluations - before,
        time.perf_counter() - start,
    )
