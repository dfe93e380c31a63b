"""What training reports: the metrics of each epoch and the run's result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .epoch import Accuracy


@dataclass
class EpochMetrics:
    epoch: int
    lr: float
    train_loss: float
    train_top1: float
    train_top5: float
    val_loss: float
    val_top1: float
    val_top5: float
    seconds: float
    train_images_per_s: float

    @classmethod
    def of(
        cls, epoch: int, lr: float, train: Accuracy, val: Accuracy, seconds: float, train_seconds: float
    ) -> EpochMetrics:
        """One epoch's row from its (all-reduced) training and validation accuracy."""
        return cls(
            epoch,
            lr,
            train.loss,
            train.top1,
            train.top5,
            val.loss,
            val.top1,
            val.top5,
            seconds,
            train.count / train_seconds,
        )


EpochCallback = Callable[[Sequence[EpochMetrics]], None]


@dataclass
class TrainResult:
    checkpoint: Path
    metrics_log: Path
    history: list[EpochMetrics]
    num_classes: int
    world_size: int = 1
    is_main: bool = True  # rank 0 (or the only process): the one that wrote the files
    batch_size: int = 0  # per process, as the run trained (the recipe's unless given)
