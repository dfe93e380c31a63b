"""Training recipes: named defaults for the options that decide whether a run converges
(epochs, batch size, learning rate and its schedule, Nesterov momentum, label smoothing), and the
learning-rate schedule each one steps.

Light on purpose (no torch at import): the CLI shows the recipes' values in ``--help``.

``fast`` (the default) is what the main job needs: a model that has learned within a
few epochs on a small dataset, on any CPU. ``paper`` is Krizhevsky et al. (2012),
Section 5: SGD at batch 128, lr 0.01, momentum 0.9, lr divided by 10 when the validation error stops
improving, about 90 epochs. What ``fast`` changes from the paper, and the runs that
chose its values, are in docs/training.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..choices import Recipe, Schedule


@dataclass(frozen=True)
class RecipeDefaults:
    epochs: int
    batch_size: int  # images per SGD step and process
    lr: float
    schedule: Schedule
    warmup: float  # fraction of all steps spent ramping the lr up linearly (cosine only)
    nesterov: bool
    label_smoothing: float


RECIPES: dict[Recipe, RecipeDefaults] = {
    Recipe.FAST: RecipeDefaults(
        epochs=5, batch_size=16, lr=0.007, schedule=Schedule.COSINE, warmup=0.05, nesterov=True, label_smoothing=0.1
    ),
    Recipe.PAPER: RecipeDefaults(
        epochs=90, batch_size=128, lr=0.01, schedule=Schedule.PLATEAU, warmup=0.0, nesterov=False, label_smoothing=0.0
    ),
}


def recipe_defaults(recipe: Recipe | str) -> RecipeDefaults:
    return RECIPES[Recipe(recipe)]


def recipe_summary() -> str:
    """Each recipe's values in one line, for ``--help``."""

    def describe(name: Recipe, r: RecipeDefaults) -> str:
        schedule = f"{r.schedule} (warm-up {r.warmup:g})" if r.schedule is Schedule.COSINE else str(r.schedule)
        return (
            f"{name}: {r.epochs} epochs, batch {r.batch_size}, lr {r.lr:g}, {schedule}, "
            f"{'Nesterov' if r.nesterov else 'plain momentum'}, label smoothing {r.label_smoothing:g}"
        )

    return "; ".join(describe(name, r) for name, r in RECIPES.items())


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The lr multiplier for optimizer step ``step`` (0-based) of ``total_steps``: a linear
    ramp from 1/warmup_steps up to 1 over the first ``warmup_steps``, then half a cosine
    from 1 down to 0 at the last step.

    Warm-up matters here because the paper's net has no batch normalisation: at full lr
    from Kaiming-initialised weights the first steps push the ReLUs of fc6/fc7 dead or
    the loss up (Goyal et al. 2017 warm up for the same reason at large batches)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
