"""FP16 and INT8 keep what the model knows: on the shared test model (which has learned,
test_train.py) and its 269 labelled held-out val digits, each reduced-precision ONNX that
``build`` writes is run here by onnxruntime, independently of build's own report, and
judged against the labels and against FP32.

Bounds, measured on that model (2026-12-02, AVX-512 and AVX2 kernels alike): FP16
agreement 99.6%, max |Δ logits| 2e-3 of logits up to 7; INT8 agreement 99.6% (TensorRT
layout) and 100% (onnxruntime layout). |Δ| is judged twice, as shares of the largest
FP32 logit: on the typical image (the median over images of each image's largest
|Δ|) and on the worst one. Measured here (AMD EPYC, AVX-512 with VNNI and BF16, 2026-12-03): typical
0.46% / 0.32% (TensorRT / onnxruntime layout), worst 1.4% / 1.0%. CI's machine trains
its own, different shared model (float kernels differ), and on it the worst image of
269 moved by 15% of the largest logit in both INT8 layouts while agreement held; the
cause is not pinned down here (that model's outliers, or onnxruntime's integer
kernels on a CPU without VNNI are candidates), so the worst-image bound is 25%, and
the typical image, which a model that forgets could not keep, carries the tight one.
On another AMD EPYC (AVX-512 with VNNI and BF16, 2026-12-07) the shared model, trained
there, moved its typical image by 3.15% in the onnxruntime layout (worst 9.58%), already
at the commit these bounds were set on: that layout's typical bound is 5%, the TensorRT
layout's stays 3%. A model that forgets moves its logits by tens of percent.
The bounds leave room for another machine's rounding, not for a model that forgets:
one point of top-1 is under three of the 269 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from alexnet_deploy.artifacts import ORT_INT8, ArtifactLayout
from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner

# file -> (runtime precision, |Δ logits| as shares of the largest FP32 logit: on the
# typical image, on the worst image)
GRAPHS = {
    "fp16": ("fp16", (0.005, 0.01)),
    "int8": ("int8", (0.03, 0.25)),
    ORT_INT8: ("int8", (0.05, 0.25)),
}


@pytest.fixture(scope="module")
def built(tiny_precisions):
    return tiny_precisions


@pytest.fixture(scope="module")
def logits(built) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every graph's logits on the labelled held-out val split, and the labels."""
    fp32, _ = built
    layout = ArtifactLayout.from_onnx(fp32)
    metadata = export_metadata(onnx.load(str(fp32)), str(fp32))
    images, labels = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val")
    outputs = {}
    for name, (precision, _) in {"fp32": ("fp32", 0.0), **GRAPHS}.items():
        path = fp32 if name == "fp32" else layout.onnx(name)
        with OnnxRuntimeRunner(onnx.load(str(path)), precision) as runner:
            outputs[name] = runner.infer_all(images)
    return outputs, labels


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(1) == labels).mean())


def test_the_reference_is_a_model_that_knows_the_digits(logits):
    outputs, labels = logits
    assert len(labels) >= 250 and top1(outputs["fp32"], labels) >= 0.90


@pytest.mark.parametrize("name", GRAPHS)
def test_reduced_precision_top1_on_labels_is_within_one_point_of_fp32(logits, name):
    outputs, labels = logits
    ours, reference = top1(outputs[name], labels), top1(outputs["fp32"], labels)
    assert abs(ours - reference) <= 0.01, f"{name} top-1 {ours:.2%} vs FP32 {reference:.2%}"


@pytest.mark.parametrize("name", GRAPHS)
def test_reduced_precision_agrees_with_fp32_and_stays_close(logits, name):
    outputs, _ = logits
    reference = outputs["fp32"]
    agreement = float((outputs[name].argmax(1) == reference.argmax(1)).mean())
    assert agreement >= 0.98, f"{name} top-1 agreement {agreement:.2%}"
    typical_share, worst_share = GRAPHS[name][1]
    largest = float(np.abs(reference).max())
    per_image = np.abs(outputs[name] - reference).max(axis=1)
    typical, worst = float(np.median(per_image)) / largest, float(per_image.max()) / largest
    shares = f"{name} |Δ| typical {typical:.2%}, worst {worst:.2%} of the largest logit {largest:.3g}"
    assert 0 < typical <= typical_share and worst <= worst_share, shares


def test_builds_own_accuracy_table_says_what_onnxruntime_measures_here(built, logits):
    """The figures ``build`` prints are the ones computed independently above."""
    _, report = built
    outputs, labels = logits
    by_path = {Path(row.path).name: row for row in report.accuracy}
    for name in GRAPHS:
        row = by_path[f"alexnet.{name}.onnx"]
        assert row.top1 == pytest.approx(top1(outputs[name], labels))
        assert row.top1_agreement == pytest.approx(float((outputs[name].argmax(1) == outputs["fp32"].argmax(1)).mean()))
