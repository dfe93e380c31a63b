"""INT8 under an accuracy budget (:class:`.budget.Budget`): take layers out of INT8,
most sensitive first, until both INT8 layouts meet it.

The search is greedy along the sensitivity ranking (:mod:`.sensitivity`), re-measured
after each step: start from all-INT8; while either layout misses the budget, move the
next-ranked layer out of INT8 (FP16 where its range holds, else FP32, :mod:`.mixed`)
and measure both layouts again. All-INT8 is measured first, so a model that already
meets the budget costs two evaluations and no ranking. docs/quantization.md says why
greedy rather than Polygraphy's bisection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import DeployError
from ..progress import ProgressReporter
from .budget import Budget
from .calibration import activation_max
from .mixed import LAYERS, LAYOUTS, fallback_precisions, layer_tensors
from .sensitivity import Evaluator, Outcome, analyse


@dataclass
class Step:
    fallback: dict[str, str]  # layer -> fp16 / fp32, out of INT8 at this step
    outcomes: dict[str, Outcome]  # layout -> measured


@dataclass
class FallbackChoice:
    """What the search chose, and what it cost."""

    budget: Budget
    fallback: dict[str, str]  # the layers written out of INT8, in the order taken out
    outcomes: dict[str, Outcome]  # layout -> the written graph's figures
    steps: list[Step] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)  # empty when all-INT8 met the budget
    evaluations: int = 0
    seconds: float = 0.0


def layer_ranges(model: onnx.ModelProto, images: np.ndarray) -> dict[str, float]:
    """Each layer's larger max |x| of input and output on ``images`` (FP32)."""
    tensors = layer_tensors(model)
    maxima = activation_max(model, images, sorted({t for pair in tensors.values() for t in pair}))
    return {layer: max(maxima[i], maxima[o]) for layer, (i, o) in tensors.items()}


def _worst(outcomes: dict[str, Outcome]) -> str:
    worst = min(outcomes.values(), key=lambda o: o.agreement)
    return f"top-1 agreement {worst.agreement:.2%}" + ("" if worst.top1 is None else f", top-1 {worst.top1:.2%}")


def choose_fallback(
    evaluator: Evaluator,
    budget: Budget,
    calibration_images: np.ndarray,
    progress: ProgressReporter | None = None,
) -> FallbackChoice:
    """The fewest-steps fallback along the ranking that meets ``budget`` in both
    layouts; a DeployError when even every layer out of INT8 misses it."""
    start_evaluations, start_seconds = evaluator.evaluations, evaluator.seconds
    fallback: dict[str, str] = {}
    ranking: list[str] = []
    ranges: dict[str, float] = {}
    steps: list[Step] = []
    while True:
        outcomes = {layout: evaluator.measure(layout, fallback) for layout in LAYOUTS}
        steps.append(Step(dict(fallback), outcomes))
        if all(budget.met(o, evaluator.fp32_top1) for o in outcomes.values()):
            break
        if len(fallback) == len(LAYERS):
            raise DeployError(
                f"no INT8 build meets the budget ({budget.describe()}): even with every Conv/Gemm out of INT8 "
                f"(FP16 where its range holds) the worse layout has {_worst(outcomes)}; nothing written"
            )
        if not ranking:
            ranking = analyse(evaluator, ("tensorrt",), progress).ranking
            ranges = layer_ranges(evaluator.model, calibration_images)
        fallback = fallback_precisions(evaluator.model, [*fallback, ranking[len(fallback)]], ranges)
    return FallbackChoice(
        budget,
        fallback,
        outcomes,
        steps,
        ranking,
        evaluator.evaluations - start_evaluations,
        evaluator.seconds - start_seconds,
    )
