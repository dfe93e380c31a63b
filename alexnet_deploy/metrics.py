"""What the pipeline measures, defined once: how two sets of logits are compared
(export validation, the build's accuracy table, bench's parity columns) and latency
percentiles (bench rows, the serving load test)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOP_K = 5
# FP32 ONNX against the torch model on the CPU: what export validates and what bench
# flags an FP32 CPU row beyond (further apart, they compute different things)
FP32_TOLERANCE = 1e-4
# ...or this fraction of the largest reference logit, where that is more: float32
# rounding grows with magnitude, and a model fed 0-255 pixels (the imported Caffe
# AlexNet) has logits in the hundreds, where sums of 9,216 products in another order differ by more than 1e-4.
FP32_RELATIVE_TOLERANCE = 1e-5


def fp32_tolerance(reference: np.ndarray) -> float:
    """The max |Δ logits| two FP32 runs of one model may differ by on ``reference``."""
    return max(FP32_TOLERANCE, FP32_RELATIVE_TOLERANCE * float(np.abs(reference).max(initial=0.0)))


LATENCY_PERCENTILES = (50, 90, 99)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(max |Δ|, top-1 agreement) of two logit batches."""
    max_abs_diff = float(np.max(np.abs(reference.astype(np.float64) - candidate)))
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    return max_abs_diff, agreement


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (all of them
    when there are fewer than ``k`` classes)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


@dataclass(frozen=True)
class Parity:
    """Logits against the reference's on the same images, and against the labels."""

    top1_agreement: float
    max_abs_diff: float
    top1: float
    top5: float


def parity(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> Parity:
    if reference.shape != candidate.shape or len(labels) != len(reference):
        raise ValueError(
            f"parity needs matching shapes, got {reference.shape}, {candidate.shape} and {len(labels)} labels"
        )
    max_abs_diff, agreement = compare_logits(reference, candidate)
    return Parity(agreement, max_abs_diff, topk_accuracy(candidate, labels, 1), topk_accuracy(candidate, labels, TOP_K))


@dataclass(frozen=True)
class LatencyStats:
    """Per-iteration latency in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> LatencyStats:
        p50, p90, p99 = (float(v) for v in np.percentile(samples_ms, LATENCY_PERCENTILES))
        return cls(p50, p90, p99, float(np.mean(samples_ms)))
