"""The training module: SGD with momentum as in the paper (Section 5), on the
embedded digits or an ImageFolder, writing the checkpoint every later step reads.

Per epoch it appends a line to ``<output>.metrics.jsonl``, rewrites the checkpoint
(atomically) and a resume state ``<output>.state.pt`` (optimizer + scheduler), so an
interrupted run keeps its last finished epoch and ``--resume`` continues it. It also
redraws the loss and top-1/top-5 curves so far as ``<output>.curves.png``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import (
    Augmentation,
    EvalDataset,
    Preprocessing,
    Split,
    TrainingDataset,
    batch_loader,
    fit_normalisation,
    limit_images,
    load_images,
)
from .devices import resolve_device
from .errors import DeployError
from .files import atomic_output, check_writable_destination
from .model import AlexNet, AlexNetConfig
from .plots import save_training_curves
from .progress import ProgressReporter, SilentProgress

SCHEDULES = ("step", "plateau")


@dataclass
class TrainConfig:
    data: str = "digits"
    output: Path = Path("export/alexnet.pt")
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "plateau"  # paper: divide lr by 10 when val error stops improving
    step_size: int = 10  # epochs between lr drops for --schedule step
    gamma: float = 0.1
    device: str = "auto"
    seed: int = 0
    limit: int | None = None
    groups: int = 2
    width: float = 1.0
    dropout: float = 0.5
    augment: Augmentation = field(default_factory=Augmentation)
    split: Split = field(default_factory=Split)
    workers: int = 0
    resume: bool = False


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


@dataclass
class TrainResult:
    checkpoint: Path
    metrics_log: Path
    history: list[EpochMetrics]
    num_classes: int


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
) -> tuple[Accuracy, int]:
    """One pass over ``loader``; returns the running accuracy and images seen."""
    model.train()
    stats = Accuracy()
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stats.update(logits.detach(), labels, loss.detach())
        progress.advance(len(labels), loss=stats.loss, top1=stats.top1)
    return stats, stats.count


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device) -> Accuracy:
    model.eval()
    stats = Accuracy()
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        stats.update(logits, labels, F.cross_entropy(logits, labels))
    return stats


def resume_state_path(output: Path) -> Path:
    return output.with_suffix(".state.pt")


def metrics_log_path(output: Path) -> Path:
    return output.with_suffix(".metrics.jsonl")


def curves_path(output: Path) -> Path:
    return output.with_suffix(".curves.png")


def _validate(config: TrainConfig) -> None:
    if config.epochs < 1:
        raise DeployError(f"--epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1:
        raise DeployError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.lr <= 0:
        raise DeployError(f"--lr must be positive, got {config.lr}")
    if config.schedule not in SCHEDULES:
        raise DeployError(f"unknown --schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if config.groups not in (1, 2):
        raise DeployError(f"--groups must be 1 or 2, got {config.groups}")
    if not 0 < config.width <= 1:
        raise DeployError(f"--width must be in (0, 1], got {config.width}")


def train(config: TrainConfig, progress: ProgressReporter | None = None) -> TrainResult:
    """Train AlexNet per ``config``; return where the checkpoint and metrics went."""
    progress = progress or SilentProgress()
    _validate(config)
    device = resolve_device(config.device)
    output = Path(config.output)
    check_writable_destination(output)

    images = limit_images(load_images(config.data), config.limit, config.seed)
    parts = config.split.apply(images)
    if len(parts["train"]) == 0 or len(parts["val"]) == 0:
        raise DeployError(f"too few images ({len(images)}) to split into train and val sets")

    resume = _load_resume(config, output, images.classes) if config.resume else None
    if resume is not None:
        model_config, preprocessing = resume["checkpoint"].config, resume["checkpoint"].preprocessing
    else:
        model_config = AlexNetConfig(
            num_classes=len(images.classes), groups=config.groups, width=config.width, dropout=config.dropout
        )
        preprocessing = fit_normalisation(parts["train"], Preprocessing())

    generator = seed_everything(config.seed)
    model = AlexNet(model_config).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
        if config.schedule == "step"
        else torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.gamma, patience=2)
    )
    history: list[EpochMetrics] = []
    first_epoch = 1
    if resume is not None:
        model.load_state_dict(resume["checkpoint"].state_dict)
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        history = [EpochMetrics(**m) for m in resume["history"]]
        first_epoch = len(history) + 1

    train_set = TrainingDataset(parts["train"], preprocessing, config.augment, config.seed)
    loader = batch_loader(
        train_set,
        config.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=config.workers,
        drop_last=len(train_set) > config.batch_size,
    )
    val_loader = batch_loader(EvalDataset(parts["val"], preprocessing), config.batch_size, num_workers=config.workers)
    log_path = metrics_log_path(output)
    if resume is None:
        log_path.unlink(missing_ok=True)

    for epoch in range(first_epoch, config.epochs + 1):
        train_set.epoch = epoch
        lr = optimizer.param_groups[0]["lr"]
        progress.begin(f"epoch {epoch}/{config.epochs}", len(loader) * config.batch_size if loader.drop_last else len(train_set))
        started = time.perf_counter()
        train_stats, seen = train_one_epoch(model, loader, optimizer, device, progress)
        train_seconds = time.perf_counter() - started
        val_stats = evaluate(model, val_loader, device)
        progress.finish()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_stats.loss)
        else:
            scheduler.step()
        metrics = EpochMetrics(
            epoch=epoch,
            lr=lr,
            train_loss=train_stats.loss,
            train_top1=train_stats.top1,
            train_top5=train_stats.top5,
            val_loss=val_stats.loss,
            val_top1=val_stats.top1,
            val_top5=val_stats.top5,
            seconds=time.perf_counter() - started,
            train_images_per_s=seen / train_seconds,
        )
        history.append(metrics)
        checkpoint = Checkpoint(
            config=model_config,
            state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
            classes=images.classes,
            preprocessing=preprocessing,
            data_source=images.source,
            split=config.split,
            metrics={"epoch": epoch, "val_top1": val_stats.top1, "val_top5": val_stats.top5, "val_loss": val_stats.loss},
        )
        save_checkpoint(checkpoint, output)
        _save_resume(output, optimizer, scheduler, history)
        with open(log_path, "a") as log:
            log.write(json.dumps(asdict(metrics)) + "\n")
        save_training_curves(history, curves_path(output))

    return TrainResult(output, log_path, history, model_config.num_classes)


def _save_resume(output: Path, optimizer, scheduler, history: list[EpochMetrics]) -> None:
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": [asdict(m) for m in history],
    }
    with atomic_output(resume_state_path(output)) as tmp:
        torch.save(state, tmp)


def _load_resume(config: TrainConfig, output: Path, classes: list[str]) -> dict:
    state_path = resume_state_path(output)
    if not state_path.is_file():
        raise DeployError(f"--resume needs {output} and {state_path} from an earlier run; {state_path} is missing")
    checkpoint = load_checkpoint(output)
    if checkpoint.classes != classes:
        raise DeployError(f"checkpoint {output} was trained on classes {checkpoint.classes}, the data has {classes}")
    checkpoint.build_model()  # raises a DeployError if the weights do not fit the architecture
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    return {"checkpoint": checkpoint, **state}
