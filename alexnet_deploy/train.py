"""The training module: SGD with momentum as in the paper (Section 5), on the
embedded digits or an ImageFolder, writing the checkpoint every later step reads.

Per epoch it appends a line to ``<output>.metrics.jsonl``, rewrites the checkpoint
(atomically) and a resume state ``<output>.state.pt`` (optimizer + scheduler), so an
interrupted run keeps its last finished epoch and ``--resume`` continues it. It also
redraws the loss and top-1/top-5 curves so far as ``<output>.curves.png``.

Under ``torchrun`` the same function trains data-parallel (``distributed.py``): each
rank takes ``batch_size`` images per step from its shard, DDP averages the gradients,
validation is split across ranks and summed, and rank 0 alone writes files. One
sampler serves both cases: the global batch at step t is the same images whatever
the world size, so N ranks x B/N equals one process x B.
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

from . import distributed
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import (
    Augmentation,
    EvalDataset,
    Preprocessing,
    Split,
    TrainingDataset,
    batch_loader,
    default_workers,
    fit_normalisation,
    loader_options,
    limit_images,
    load_images,
)
from .devices import resolve_device
from .errors import DeployError
from .files import atomic_output, check_writable_destination
from .model import AlexNet, AlexNetConfig
from .plots import save_training_curves
from .precision import Precision, resolve_precision
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
    workers: int | None = None  # None: default_workers() for the data source
    resume: bool = False
    precision: str = "fp32"  # autocast dtype: fp32, bf16 or fp16 (CUDA); weights stay fp32
    dist_timeout_s: float = distributed.DEFAULT_TIMEOUT_S  # rendezvous and collectives under torchrun


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
    world_size: int = 1
    is_main: bool = True  # rank 0 (or the only process): the one that wrote the files


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
    precision: Precision = Precision(),
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[Accuracy, int]:
    """One pass over ``loader``; returns the running accuracy and images seen.

    ``scaler`` carries fp16 loss scaling across epochs; by default ``precision``'s own
    (a pass-through except for fp16).
    """
    model.train()
    stats = Accuracy()
    scaler = scaler or precision.grad_scaler()
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=precision.memory_format)
        labels = labels.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
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


def all_reduce_accuracy(context: distributed.DistributedContext, stats: Accuracy, device: torch.device) -> Accuracy:
    """The counts of every rank's shard summed: the whole split's figures on every rank."""
    loss_sum, top1, top5, count = distributed.all_reduce_sums(
        context, [stats.loss_sum, stats.top1_hits, stats.top5_hits, stats.count], device
    )
    return Accuracy(loss_sum, round(top1), round(top5), round(count))


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
    if not 0 <= config.dropout < 1:
        raise DeployError(f"--dropout must be in [0, 1), got {config.dropout}")
    if config.workers is not None and config.workers < 0:
        raise DeployError(f"--workers must be 0 or more, got {config.workers}")


def train(config: TrainConfig, progress: ProgressReporter | None = None) -> TrainResult:
    """Train AlexNet per ``config``; return where the checkpoint and metrics went."""
    _validate(config)
    context = distributed.from_environment()
    device = distributed.rank_device(context, resolve_device(config.device))
    precision = resolve_precision(config.precision, device)
    output = Path(config.output)
    if context.is_main:  # the only writer; on other machines the directory need not exist
        check_writable_destination(output)
    progress = (progress or SilentProgress()) if context.is_main else SilentProgress()
    distributed.start(context, device, config.dist_timeout_s)
    try:
        with distributed.peer_failures_as_errors(context):
            return _train(config, context, device, precision, output, progress)
    finally:
        distributed.stop(context)


def _train(
    config: TrainConfig,
    context: distributed.DistributedContext,
    device: torch.device,
    precision: Precision,
    output: Path,
    progress: ProgressReporter,
) -> TrainResult:

    images = limit_images(load_images(config.data), config.limit, config.seed)
    parts = config.split.apply(images)
    if len(parts["train"]) == 0 or len(parts["val"]) == 0:
        raise DeployError(f"too few images ({len(images)}) to split into train and val sets")

    resume = distributed.run_on_main(context, lambda: _load_resume(config, output, images.classes)) if config.resume else None
    if resume is not None:
        model_config, preprocessing = resume["checkpoint"].config, resume["checkpoint"].preprocessing
    else:
        model_config = AlexNetConfig(
            num_classes=len(images.classes), groups=config.groups, width=config.width, dropout=config.dropout
        )
        preprocessing = fit_normalisation(parts["train"], Preprocessing())

    seed_everything(config.seed)
    model = AlexNet(model_config).to(device, memory_format=precision.memory_format)
    if context.enabled:  # the same initial weights everywhere, but each rank its own dropout masks
        torch.manual_seed(config.seed + context.rank)
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
    # DDP broadcasts rank 0's weights at construction; every rank already holds them.
    trained = torch.nn.parallel.DistributedDataParallel(model) if context.enabled else model
    scaler = precision.grad_scaler()

    workers = config.workers if config.workers is not None else default_workers(images, context.local_world_size)
    options = loader_options(workers, device)
    train_set = TrainingDataset(parts["train"], preprocessing, config.augment, config.seed)
    # One permutation per (seed, epoch), cut into world_size shards (a single one
    # without torchrun): resumable by construction and independent of the world size.
    sampler = distributed.train_sampler(train_set, context, config.seed, drop_last=True)
    loader = batch_loader(
        train_set, config.batch_size, sampler=sampler, drop_last=len(sampler) > config.batch_size, **options
    )
    val_set = EvalDataset(parts["val"], preprocessing)
    val_loader = batch_loader(val_set, config.batch_size, sampler=distributed.StridedShard(len(val_set), context), **options)
    log_path = metrics_log_path(output)
    if resume is None and context.is_main:
        log_path.unlink(missing_ok=True)

    for epoch in range(first_epoch, config.epochs + 1):
        train_set.epoch = epoch
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        progress.begin(f"epoch {epoch}/{config.epochs}", len(loader) * config.batch_size if loader.drop_last else len(sampler))
        started = time.perf_counter()
        train_stats, _ = train_one_epoch(trained, loader, optimizer, device, progress, precision, scaler)
        train_seconds = time.perf_counter() - started
        train_stats = all_reduce_accuracy(context, train_stats, device)
        val_stats = all_reduce_accuracy(context, evaluate(model, val_loader, device), device)
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
            train_images_per_s=train_stats.count / train_seconds,
        )
        history.append(metrics)
        if not context.is_main:
            continue
        checkpoint = Checkpoint(
            config=model_config,
            state_dict={k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
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

    return TrainResult(output, log_path, history, model_config.num_classes, context.world_size, context.is_main)


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
