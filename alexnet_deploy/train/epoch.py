"""One training epoch (SGD steps under autocast) and the evaluation of a model on a loader,
with the running loss/top-1/top-5 both use."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeployError
from ..progress import ProgressReporter
from . import distributed
from .precision import MixedPrecision


@dataclass
class Accuracy:
    """Running loss / top-1 / top-5 over batches of logits."""

    loss_sum: float = 0.0
    top1_hits: int = 0
    top5_hits: int = 0
    count: int = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        self.top1_hits += int((top[:, 0] == labels).sum())
        self.top5_hits += int((top == labels[:, None]).any(dim=1).sum())
        self.loss_sum += float(loss) * len(labels)
        self.count += len(labels)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.count)

    @property
    def top1(self) -> float:
        return self.top1_hits / max(1, self.count)

    @property
    def top5(self) -> float:
        return self.top5_hits / max(1, self.count)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: ProgressReporter,
    precision: MixedPrecision = MixedPrecision(),
    scaler: torch.amp.GradScaler | None = None,
    label_smoothing: float = 0.0,
    after_step: Callable[[], None] | None = None,
) -> tuple[Accuracy, int]:
    """One pass over ``loader``; returns the running accuracy and images seen.

    ``scaler`` carries fp16 loss scaling across epochs; by default ``precision``'s own
    (a pass-through except for fp16). The loss is cross-entropy against targets
    smoothed by ``label_smoothing`` (Szegedy et al. 2016); the reported train loss is
    that loss. ``after_step`` runs after every optimizer step (a per-step lr schedule).
    """
    model.train()
    stats = Accuracy()
    scaler = scaler or precision.grad_scaler()
    for host_images, host_labels in loader:
        images = host_images.to(device, non_blocking=True, memory_format=precision.memory_format)
        labels = host_labels.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise DeployError(
                f"training diverged: the loss became {float(loss.detach())} after {stats.count} images of this epoch; "
                "nothing of this epoch was saved (try a lower --lr)"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if after_step is not None:
            after_step()
        stats.update(logits.detach(), labels, loss.detach())
        progress.advance(len(labels), loss=stats.loss, top1=stats.top1)
    return stats, stats.count


@torch.no_grad()
def validate(model: torch.nn.Module, loader, device: torch.device) -> Accuracy:
    model.eval()
    stats = Accuracy()
    for host_images, host_labels in loader:
        images, labels = host_images.to(device), host_labels.to(device)
        logits = model(images)
        stats.update(logits, labels, F.cross_entropy(logits, labels))
    return stats


def all_reduce_accuracy(context: distributed.DistributedContext, stats: Accuracy, device: torch.device) -> Accuracy:
    """The counts of every rank's shard summed: the whole split's figures on every rank."""
    loss_sum, top1, top5, count = distributed.all_reduce_sums(
        context, [stats.loss_sum, stats.top1_hits, stats.top5_hits, stats.count], device
    )
    return Accuracy(loss_sum, round(top1), round(top5), round(count))
