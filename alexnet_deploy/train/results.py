"""What training reports: the metrics of each epoch and the run's result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


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
