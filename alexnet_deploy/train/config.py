"""What to train: :class:`TrainConfig`, its defaults and its checks, made before any data is read.

Light on purpose (no torch): the CLI takes its defaults from here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import DEFAULT_LAYOUT
from ..choices import DeviceChoice, Schedule, TrainingPrecision
from ..data.augmentation import Augmentation
from ..data.split import Split
from ..errors import DeployError

DEFAULT_DIST_TIMEOUT_S = 600.0  # torchrun's rendezvous and every collective, before failing


DEFAULT_GROUPS, DEFAULT_WIDTH, DEFAULT_DROPOUT = 2, 1.0, 0.5


@dataclass
class TrainConfig:
    data: str = "digits"
    output: Path = DEFAULT_LAYOUT.checkpoint
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule | str = Schedule.PLATEAU  # paper: divide lr by 10 when val error stops improving
    step_size: int = 10  # epochs between lr drops for --schedule step
    gamma: float = 0.1
    device: DeviceChoice | str = DeviceChoice.AUTO
    seed: int = 0
    limit: int | None = None  # with resume: None = the run's own
    groups: int | None = None  # None = 2, or with resume the run's own
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

    def check(self) -> None:
        """Every option's range, before any data is read: a bad value must not cost an epoch."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a finite positive number, got {self.lr}"),
            (
                math.isfinite(self.momentum) and 0 <= self.momentum < 1,
                f"momentum must be in [0, 1), got {self.momentum}",
            ),
            (
                math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                f"--weight-decay must be a finite number >= 0, got {self.weight_decay}",
            ),
            (
                self.schedule in Schedule.values(),
                f"unknown --schedule {str(self.schedule)!r}; choose one of {', '.join(Schedule.values())}",
            ),
            (self.step_size >= 1, f"--step-size must be at least 1, got {self.step_size}"),
            (math.isfinite(self.gamma) and 0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (0 <= self.seed < 2**32, f"--seed must be in [0, 2**32), got {self.seed}"),
            (self.limit is None or self.limit >= 1, f"--limit must be at least 1, got {self.limit}"),
            (self.groups in (None, 1, 2), f"--groups must be 1 or 2, got {self.groups}"),
            (self.width is None or 0 < self.width <= 1, f"--width must be in (0, 1], got {self.width}"),
            (self.dropout is None or 0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.workers is None or self.workers >= 0, f"--workers must be 0 or more, got {self.workers}"),
            (
                self.precision in TrainingPrecision.values(),
                f"unknown --precision {str(self.precision)!r}; choose one of {', '.join(TrainingPrecision.values())}",
            ),
            (
                math.isfinite(self.dist_timeout_s) and self.dist_timeout_s > 0,
                f"--dist-timeout must be a finite number of seconds > 0, got {self.dist_timeout_s}",
            ),
            (0 <= self.augment.pca_std < 10, f"PCA jitter std must be in [0, 10), got {self.augment.pca_std}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DeployError(message)
