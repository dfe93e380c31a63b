"""The training module: SGD with momentum as in the paper (Section 5), on the
embedded digits or an ImageFolder, writing the checkpoint every later step reads.

Per epoch it writes, each atomically and in this order: a self-contained resume
state ``<output>.state.pt`` (the checkpoint's payload plus optimizer, scheduler,
history and every random generator's state), the checkpoint, the metrics log
``<output>.metrics.jsonl`` and the loss and top-1/top-5 curves
``<output>.curves.png``. The state goes first so that a run killed between two
writes leaves a state at least as new as the checkpoint; ``--resume`` continues from
the state alone, rewrites a checkpoint that fell behind it, and continues exactly as
the uninterrupted run would have (same shuffling, dropout and augmentation).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, checkpoint_from_payload, load_checkpoint, load_payload, save_checkpoint
from .data import (
    Augmentation,
    EvalDataset,
    ImageSet,
    Preprocessing,
    Split,
    TrainingDataset,
    batch_loader,
    fit_normalisation,
    load_images,
)
from .devices import resolve_device
from .errors import DeployError
from .files import atomic_output, check_writable_destination, sweep_stale_temporaries, write_text_atomic
from .model import AlexNet, AlexNetConfig
from .plots import save_training_curves
from .progress import ProgressReporter, SilentProgress

SCHEDULES = ("step", "plateau")
STATE_FORMAT = "alexnet-deploy/train-state/2"
DEFAULT_GROUPS, DEFAULT_WIDTH = 2, 1.0


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
    limit: int | None = None  # with resume: None = the run's own
    groups: int | None = None  # None = 2, or with resume the run's own
    width: float | None = None  # None = 1.0, or with resume the run's own
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
        if not torch.isfinite(loss):
            raise DeployError(
                f"training diverged: the loss became {float(loss.detach())} after {stats.count} images of this epoch; "
                "nothing of this epoch was saved (try a lower --lr)"
            )
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
    """Every option's range, before any data is read: a bad value must not cost an epoch."""
    checks = [
        (config.epochs >= 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"--batch-size must be at least 1, got {config.batch_size}"),
        (math.isfinite(config.lr) and config.lr > 0, f"--lr must be a finite positive number, got {config.lr}"),
        (math.isfinite(config.momentum) and 0 <= config.momentum < 1, f"momentum must be in [0, 1), got {config.momentum}"),
        (
            math.isfinite(config.weight_decay) and config.weight_decay >= 0,
            f"--weight-decay must be a finite number >= 0, got {config.weight_decay}",
        ),
        (config.schedule in SCHEDULES, f"unknown --schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}"),
        (config.step_size >= 1, f"--step-size must be at least 1, got {config.step_size}"),
        (math.isfinite(config.gamma) and 0 < config.gamma <= 1, f"gamma must be in (0, 1], got {config.gamma}"),
        (0 <= config.seed < 2**32, f"--seed must be in [0, 2**32), got {config.seed}"),
        (config.limit is None or config.limit >= 1, f"--limit must be at least 1, got {config.limit}"),
        (config.groups in (None, 1, 2), f"--groups must be 1 or 2, got {config.groups}"),
        (config.width is None or 0 < config.width <= 1, f"--width must be in (0, 1], got {config.width}"),
        (0 <= config.dropout < 1, f"dropout must be in [0, 1), got {config.dropout}"),
        (config.workers >= 0, f"--workers must be 0 or more, got {config.workers}"),
        (0 <= config.augment.pca_std < 10, f"PCA jitter std must be in [0, 10), got {config.augment.pca_std}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DeployError(message)


def _check_outputs(output: Path) -> None:
    """Every file a run writes can be created beside ``output`` (each is probed), and
    ``output`` is, or will be, a regular file: a run's checkpoint and its state,
    metrics and curves live side by side, so a device or FIFO cannot stand in for it."""
    if output.exists() and not output.is_file() and not output.is_dir():  # a folder: the next check says so
        raise DeployError(f"--output {output} exists and is not a regular file")
    for path in (output, resume_state_path(output), metrics_log_path(output), curves_path(output)):
        check_writable_destination(path)


def train(config: TrainConfig, progress: ProgressReporter | None = None) -> TrainResult:
    """Train AlexNet per ``config``; return where the checkpoint and metrics went."""
    progress = progress or SilentProgress()
    _validate(config)
    device = resolve_device(config.device)
    output = Path(config.output)
    _check_outputs(output)
    sweep_stale_temporaries(output.parent if str(output.parent) else Path("."))  # left by a killed run

    images = load_images(config.data)
    resume = _load_resume(config, output, images) if config.resume else None
    if resume is not None:
        model_config, preprocessing = resume.checkpoint.config, resume.checkpoint.preprocessing
        split = resume.checkpoint.split
    else:
        model_config = AlexNetConfig(
            num_classes=len(images.classes),
            groups=DEFAULT_GROUPS if config.groups is None else config.groups,
            width=DEFAULT_WIDTH if config.width is None else config.width,
            dropout=config.dropout,
        )
        split = replace(config.split, limit=config.limit)
    parts = split.apply(images)
    if len(parts["train"]) == 0 or len(parts["val"]) == 0:
        raise DeployError(f"too few images ({len(images) if split.limit is None else min(split.limit, len(images))}) to split into train and val sets")
    if resume is None:
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
    if resume is not None:
        model.load_state_dict(resume.checkpoint.state_dict)
        resume.restore(optimizer, scheduler, generator, device)
        history = resume.history
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
    fingerprint = images.fingerprint()

    for epoch in range(first_epoch, config.epochs + 1):
        train_set.epoch = epoch
        lr = optimizer.param_groups[0]["lr"]
        progress.begin(f"epoch {epoch}/{config.epochs}", len(loader) * config.batch_size if loader.drop_last else len(train_set))
        started = time.perf_counter()
        train_stats, seen = train_one_epoch(model, loader, optimizer, device, progress)
        train_seconds = time.perf_counter() - started
        val_stats = evaluate(model, val_loader, device)
        progress.finish()
        if not math.isfinite(val_stats.loss):
            raise DeployError(f"training diverged: the val loss of epoch {epoch} is {val_stats.loss}; nothing of it was saved (try a lower --lr)")
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
            split=split,
            metrics={"epoch": epoch, "val_top1": val_stats.top1, "val_top5": val_stats.top5, "val_loss": val_stats.loss},
        )
        checkpoint.check_weights()  # never save a NaN model
        _save_resume(output, checkpoint, optimizer, scheduler, history, generator, device, fingerprint)
        _write_epoch_outputs(output, checkpoint, history)

    return TrainResult(output, log_path, history, model_config.num_classes)


def _write_epoch_outputs(output: Path, checkpoint: Checkpoint, history: list[EpochMetrics]) -> None:
    """Everything that follows from the resume state: checkpoint, metrics log, curves."""
    save_checkpoint(checkpoint, output)
    write_text_atomic(metrics_log_path(output), "".join(json.dumps(asdict(m)) + "\n" for m in history))
    save_training_curves(history, curves_path(output))


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
        "sampler": generator.get_state(),
    }


def _save_resume(
    output: Path,
    checkpoint: Checkpoint,
    optimizer,
    scheduler,
    history: list[EpochMetrics],
    generator: torch.Generator,
    device: torch.device,
    fingerprint: str,
) -> None:
    state = {
        "format": STATE_FORMAT,
        "epoch": history[-1].epoch,
        "checkpoint": checkpoint.to_payload(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": [asdict(m) for m in history],
        "rng": _rng_state(generator, device),
        "data_fingerprint": fingerprint,
    }
    with atomic_output(resume_state_path(output)) as tmp:
        torch.save(state, tmp)


@dataclass
class _Resume:
    """A checked resume state: the checkpoint it holds and what restores the rest."""

    path: Path
    checkpoint: Checkpoint
    history: list[EpochMetrics]
    state: dict

    def restore(self, optimizer, scheduler, generator: torch.Generator, device: torch.device) -> None:
        try:
            optimizer.load_state_dict(self.state["optimizer"])
            scheduler.load_state_dict(self.state["scheduler"])
            rng = self.state["rng"]
            torch.set_rng_state(rng["torch"])
            if device.type == "cuda" and rng["cuda"]:
                torch.cuda.set_rng_state_all(rng["cuda"])
            name, keys, position, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
            random.setstate(rng["python"])
            generator.set_state(rng["sampler"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            raise DeployError(f"{self.path} is a damaged resume state: {error.__class__.__name__}: {error}".splitlines()[0]) from None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param in params:
            buffer = optimizer.state.get(param, {}).get("momentum_buffer")
            if buffer is not None and buffer.shape != param.shape:
                raise DeployError(f"{self.path} is a damaged resume state: optimizer buffers do not fit the model")


def _load_resume(config: TrainConfig, output: Path, images: ImageSet) -> _Resume:
    """The state of the run at ``output``, checked against this run's options and data;
    a checkpoint that fell behind its state (a kill between the two writes) is rewritten."""
    state_path = resume_state_path(output)
    if not state_path.is_file():
        raise DeployError(f"--resume needs {state_path} from an earlier run of --output {output}; it is missing")
    state = load_payload(state_path, "an alexnet-deploy resume state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DeployError(f"{state_path} is not an alexnet-deploy resume state (expected format {STATE_FORMAT!r})")
    checkpoint = checkpoint_from_payload(state.get("checkpoint"), state_path)
    checkpoint.check_weights()
    try:
        history = [EpochMetrics(**m) for m in state["history"]]
        epoch = int(state["epoch"])
        fingerprint = str(state["data_fingerprint"])
    except (KeyError, TypeError, ValueError) as error:
        raise DeployError(f"{state_path} is a damaged resume state: {error}") from None
    if not history or [m.epoch for m in history] != list(range(1, epoch + 1)):
        raise DeployError(f"{state_path} is a damaged resume state: its history does not end at epoch {epoch}")
    contradictions = [
        (checkpoint.classes != images.classes, f"the run was trained on classes {checkpoint.classes}, the data has {images.classes}"),
        (checkpoint.data_source != images.source, f"the run was trained on --data {checkpoint.data_source}, not {images.source}"),
        (fingerprint != images.fingerprint(), f"the images in {images.source} changed since the run began"),
        (config.groups not in (None, checkpoint.config.groups), f"the run has --groups {checkpoint.config.groups}, not {config.groups}"),
        (config.width not in (None, checkpoint.config.width), f"the run has --width {checkpoint.config.width}, not {config.width}"),
        (config.limit not in (None, checkpoint.split.limit), f"the run has --limit {checkpoint.split.limit}, not {config.limit}"),
        (
            replace(config.split, limit=checkpoint.split.limit) != checkpoint.split,
            f"the run's split is {checkpoint.split}, not {config.split}",
        ),
    ]
    for contradicts, message in contradictions:
        if contradicts:
            raise DeployError(f"cannot --resume {output}: {message}")
    if output.exists():
        on_disk = load_checkpoint(output)
        saved_epoch = on_disk.metrics.get("epoch")
        if not isinstance(saved_epoch, int) or saved_epoch > epoch:
            raise DeployError(f"cannot --resume {output}: it is at epoch {saved_epoch} but {state_path} at epoch {epoch}")
    if not output.exists() or saved_epoch < epoch:
        _write_epoch_outputs(output, checkpoint, history)  # the pair was cut between its two writes
    return _Resume(state_path, checkpoint, history, state)
