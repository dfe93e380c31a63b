"""What to train: :class:`TrainConfig`, its defaults and its checks, made before any data is read.

Light on purpose (no torch): the CLI takes its defaults from here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..artifacts import DEFAULT_LAYOUT
from ..choices import DeviceChoice, Recipe, Schedule, TrainingPrecision, Variant
from ..data.augmentation import Augmentation
from ..data.split import Split
from ..errors import DeployError
from .recipe import recipe_defaults

DEFAULT_DIST_TIMEOUT_S = 600.0  # torchrun's rendezvous and every collective, before failing


DEFAULT_GROUPS, DEFAULT_WIDTH, DEFAULT_DROPOUT = 2, 1.0, 0.5


def model_variant(variant: Variant | str | None) -> str:
    """The variant a run trains (``--variant``, default the paper's), as a plain string."""
    return Variant.PAPER.value if variant is None else Variant(variant).value


def default_groups(variant: Variant | str | None) -> int:
    """The paper's network splits conv2/4/5 in two; torchvision's has no groups."""
    return 1 if model_variant(variant) == Variant.TORCHVISION else DEFAULT_GROUPS


# What a recipe supplies, besides epochs: a resumed run keeps its own values of these
# unless they are given again, and refuses different ones (a resumed lr schedule must be
# the one the optimizer state belongs to). Epochs may grow on resume (Resume.continue_run).
DEFAULT_SEED = 0  # of weights, shuffling and augmentation (the split has its own)
RECIPE_OPTIONS = ("recipe", "batch_size", "lr", "schedule", "warmup", "nesterov", "label_smoothing")


@dataclass
class TrainConfig:
    """One run's options. ``recipe`` and the options it supplies (:data:`RECIPE_OPTIONS`)
    are None until set: :meth:`with_recipe` fills the unset ones from the recipe (``fast``
    unless given), and ``--resume`` first takes them from the run it continues."""

    data: str = "digits"
    output: Path = DEFAULT_LAYOUT.checkpoint
    recipe: Recipe | str | None = None  # None: fast, or with resume the run's own
    epochs: int | None = None
    batch_size: int | None = None  # per process
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule | str | None = None
    warmup: float | None = None  # fraction of all steps, for --schedule cosine
    nesterov: bool | None = None
    label_smoothing: float | None = None
    step_size: int = 10  # epochs between lr drops for --schedule step
    gamma: float = 0.1
    device: DeviceChoice | str = DeviceChoice.AUTO
    seed: int | None = None  # None = DEFAULT_SEED, or with resume the run's own
    limit: int | None = None  # with resume: None = the run's own
    variant: Variant | str | None = None  # None = paper, or with resume the run's own
    groups: int | None = None  # None = 2 (paper) or 1 (torchvision), or with resume the run's own
    width: float | None = None  # None = 1.0, or with resume the run's own
    dropout: float | None = None  # None = 0.5 (the paper's), or with resume the run's own
    augment: Augmentation = field(default_factory=Augmentation)
    split: Split = field(default_factory=Split)
    workers: int | None = None  # None: default_workers() for the data source
    resume: bool = False
    precision: TrainingPrecision | str = (
        TrainingPrecision.FP32
    )  # autocast dtype: fp32, bf16 or fp16 (CUDA); weights stay fp32
    dist_timeout_s: float = DEFAULT_DIST_TIMEOUT_S  # rendezvous and collectives under torchrun

    def with_recipe(self) -> TrainConfig:
        """This config with every recipe option left unset taken from ``recipe``."""
        recipe = Recipe.FAST if self.recipe is None else self.recipe
        if recipe not in Recipe.values():
            raise DeployError(f"unknown --recipe {str(recipe)!r}; choose one of {', '.join(Recipe.values())}")
        defaults = recipe_defaults(recipe)
        return replace(
            self,
            recipe=Recipe(recipe),
            epochs=defaults.epochs if self.epochs is None else self.epochs,
            batch_size=defaults.batch_size if self.batch_size is None else self.batch_size,
            lr=defaults.lr if self.lr is None else self.lr,
            schedule=defaults.schedule if self.schedule is None else self.schedule,
            warmup=defaults.warmup if self.warmup is None else self.warmup,
            nesterov=defaults.nesterov if self.nesterov is None else self.nesterov,
            label_smoothing=defaults.label_smoothing if self.label_smoothing is None else self.label_smoothing,
            seed=DEFAULT_SEED if self.seed is None else self.seed,
        )

    def check(self) -> None:
        """Every option's range (the recipe's filled in), before any data is read: a bad
        value must not cost an epoch."""
        config = self.with_recipe()
        epochs, batch, lr, warmup = config.epochs, config.batch_size, config.lr, config.warmup
        smoothing = config.label_smoothing
        assert epochs is not None and batch is not None and lr is not None  # filled
        assert warmup is not None and smoothing is not None
        checks = [
            (epochs >= 1, f"--epochs must be at least 1, got {epochs}"),
            (batch >= 1, f"--batch-size must be at least 1, got {batch}"),
            (math.isfinite(lr) and lr > 0, f"--lr must be a finite positive number, got {lr}"),
            (0 <= warmup < 1, f"--warmup must be a fraction of the steps in [0, 1), got {warmup}"),
            (0 <= smoothing < 1, f"--label-smoothing must be in [0, 1), got {smoothing}"),
            (
                math.isfinite(config.momentum) and 0 <= config.momentum < 1,
                f"momentum must be in [0, 1), got {config.momentum}",
            ),
            (
                math.isfinite(config.weight_decay) and config.weight_decay >= 0,
                f"--weight-decay must be a finite number >= 0, got {config.weight_decay}",
            ),
            (
                config.schedule in Schedule.values(),
                f"unknown --schedule {str(config.schedule)!r}; choose one of {', '.join(Schedule.values())}",
            ),
            (config.step_size >= 1, f"--step-size must be at least 1, got {config.step_size}"),
            (math.isfinite(config.gamma) and 0 < config.gamma <= 1, f"gamma must be in (0, 1], got {config.gamma}"),
            (config.seed is None or 0 <= config.seed < 2**32, f"--seed must be in [0, 2**32), got {config.seed}"),
            (config.limit is None or config.limit >= 1, f"--limit must be at least 1, got {config.limit}"),
            (config.groups in (None, 1, 2), f"--groups must be 1 or 2, got {config.groups}"),
            (
                config.variant is None or config.variant in Variant.values(),
                f"unknown --variant {str(config.variant)!r}; choose one of {', '.join(Variant.values())}",
            ),
            (
                config.variant != Variant.TORCHVISION or config.groups in (None, 1),
                f"--groups {config.groups} contradicts --variant torchvision, which has no grouped convolutions",
            ),
            (config.width is None or 0 < config.width <= 1, f"--width must be in (0, 1], got {config.width}"),
            (config.dropout is None or 0 <= config.dropout < 1, f"--dropout must be in [0, 1), got {config.dropout}"),
            (config.workers is None or config.workers >= 0, f"--workers must be 0 or more, got {config.workers}"),
            (
                config.precision in TrainingPrecision.values(),
                f"unknown --precision {str(config.precision)!r}; choose one of {', '.join(TrainingPrecision.values())}",
            ),
            (
                math.isfinite(config.dist_timeout_s) and config.dist_timeout_s > 0,
                f"--dist-timeout must be a finite number of seconds > 0, got {config.dist_timeout_s}",
            ),
            (0 <= config.augment.pca_std < 10, f"PCA jitter std must be in [0, 10), got {config.augment.pca_std}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DeployError(message)
