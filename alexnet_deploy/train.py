"""The training module: SGD with momentum as in the paper (Section 5), on the
embedded digits or an ImageFolder, writing the checkpoint every later step reads.

Per epoch it writes, each atomically and in this order: a self-contained resume
state ``<output>.state.pt`` (the checkpoint's payload plus optimizer, scheduler,
history and every random generator's state), the checkpoint, the metrics log
``<output>.metrics.jsonl`` and the loss and top-1/top-5 curves
``<output>.curves.png``. The state goes first so that a run killed between two
writes leaves a state at least as new as the checkpoint; ``--resume`` continues from
the state alone, rewrites a checkpoint that fell behind it, and continues exactly as
the uninterrupted run would have (same shuffling, dropout and augmentation): the
shuffling is a pure function of (seed, epoch) and needs no saved state, the
augmentation one of (seed, epoch, image), and the generators behind dropout are
saved and restored. Under torchrun rank 0's generators are saved; on resume rank 0
restores them and every other rank reseeds its dropout with seed + rank, as at the
start of a run (a resumed single-process run is bit-identical; a resumed multi-rank
run is identical on rank 0 only).

Under ``torchrun`` the same function trains data-parallel (``distributed.py``): each
rank takes ``batch_size`` images per step from its shard, DDP averages the gradients,
validation is split across ranks and summed, and rank 0 alone writes files. One
sampler serves both cases: the global batch at step t is the same images whatever
the world size, so N ranks x B/N equals one process x B.
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

from . import distributed
from .checkpoint import Checkpoint, checkpoint_from_payload, load_checkpoint, load_payload, save_checkpoint
from .data.augmentation import Augmentation
from .data.loading import EvalDataset, TrainingDataset, batch_loader, default_workers, loader_options
from .data.preprocessing import Preprocessing, fit_normalisation
from .data.sources import ImageSet, load_images
from .data.split import Split
from .devices import resolve_device
from .errors import DeployError
from .files import atomic_output, check_writable_destination, sweep_stale_temporaries, write_text_atomic
from .model import AlexNet, AlexNetConfig
from .plots import save_training_curves
from .precision import PRECISIONS, Precision, resolve_precision
from .progress import ProgressReporter, SilentProgress

SCHEDULES = ("step", "plateau")
STATE_FORMAT = "alexnet-deploy/train-state/3"  # 3: no sampler generator (the order is a function of seed and epoch)
DEFAULT_GROUPS, DEFAULT_WIDTH, DEFAULT_DROPOUT = 2, 1.0, 0.5


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
    dropout: float | None = None  # None = 0.5 (the paper's), or with resume the run's own
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
        if not torch.isfinite(loss):
            raise DeployError(
                f"training diverged: the loss became {float(loss.detach())} after {stats.count} images of this epoch; "
                "nothing of this epoch was saved (try a lower --lr)"
            )
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
        (config.dropout is None or 0 <= config.dropout < 1, f"--dropout must be in [0, 1), got {config.dropout}"),
        (config.workers is None or config.workers >= 0, f"--workers must be 0 or more, got {config.workers}"),
        (config.precision in PRECISIONS, f"unknown --precision {config.precision!r}; choose one of {', '.join(PRECISIONS)}"),
        (
            math.isfinite(config.dist_timeout_s) and config.dist_timeout_s > 0,
            f"--dist-timeout must be a finite number of seconds > 0, got {config.dist_timeout_s}",
        ),
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
    _validate(config)
    context = distributed.from_environment()
    device = distributed.rank_device(context, resolve_device(config.device))
    precision = resolve_precision(config.precision, device)
    output = Path(config.output)
    if context.is_main:  # the only writer; on other machines the directory need not exist
        _check_outputs(output)
        sweep_stale_temporaries(output.parent if str(output.parent) else Path("."))  # left by a killed run
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
    images = load_images(config.data)
    # Rank 0 reads (and checks) the state; every rank gets it, or the same error.
    resume = distributed.run_on_main(context, lambda: _load_resume(config, output, images)) if config.resume else None
    if resume is not None:
        model_config, preprocessing = resume.checkpoint.config, resume.checkpoint.preprocessing
        split = resume.checkpoint.split
    else:
        model_config = AlexNetConfig(
            num_classes=len(images.classes),
            groups=DEFAULT_GROUPS if config.groups is None else config.groups,
            width=DEFAULT_WIDTH if config.width is None else config.width,
            dropout=DEFAULT_DROPOUT if config.dropout is None else config.dropout,
        )
        split = replace(config.split, limit=config.limit)
    parts = split.apply(images)
    if len(parts["train"]) == 0 or len(parts["val"]) == 0:
        raise DeployError(f"too few images ({len(images) if split.limit is None else min(split.limit, len(images))}) to split into train and val sets")
    if resume is None:
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
    scaler = precision.grad_scaler()  # fp16's loss scale carries across epochs (and a resume)
    history: list[EpochMetrics] = []
    if resume is not None:
        model.load_state_dict(resume.checkpoint.state_dict)
        resume.restore(optimizer, scheduler, scaler, device)
        if context.rank > 0:
            # The state holds rank 0's generators (restored above on every rank); the
            # other ranks draw their dropout masks from seed + rank again, as at the start.
            torch.manual_seed(config.seed + context.rank)
        history = resume.history
    first_epoch = len(history) + 1
    # DDP broadcasts rank 0's weights at construction; every rank already holds them.
    trained = torch.nn.parallel.DistributedDataParallel(model) if context.enabled else model

    workers = config.workers if config.workers is not None else default_workers(images, context.local_world_size)
    options = loader_options(workers, device)
    train_set = TrainingDataset(parts["train"], preprocessing, config.augment, config.seed)
    # One permutation per (seed, epoch), cut into world_size shards (a single one
    # without torchrun): a pure function of (seed, epoch), so a resumed run needs no
    # saved shuffling state, and independent of the world size.
    sampler = distributed.train_sampler(train_set, context, config.seed, drop_last=True)
    loader = batch_loader(
        train_set, config.batch_size, sampler=sampler, drop_last=len(sampler) > config.batch_size, **options
    )
    val_set = EvalDataset(parts["val"], preprocessing)
    val_loader = batch_loader(val_set, config.batch_size, sampler=distributed.StridedShard(len(val_set), context), **options)
    log_path = metrics_log_path(output)
    fingerprint = images.fingerprint()

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
            split=split,
            metrics={"epoch": epoch, "val_top1": val_stats.top1, "val_top5": val_stats.top5, "val_loss": val_stats.loss},
        )
        checkpoint.check_weights()  # never save a NaN model
        _save_resume(output, checkpoint, optimizer, scheduler, scaler, history, device, fingerprint)
        _write_epoch_outputs(output, checkpoint, history)

    # Nobody tears the process group down while rank 0 still writes the last epoch's
    # files: a rank leaving early aborted now and then in Gloo's shutdown.
    distributed.barrier(context)
    return TrainResult(output, log_path, history, model_config.num_classes, context.world_size, context.is_main)


def _write_epoch_outputs(output: Path, checkpoint: Checkpoint, history: list[EpochMetrics]) -> None:
    """Everything that follows from the resume state: checkpoint, metrics log, curves."""
    save_checkpoint(checkpoint, output)
    write_text_atomic(metrics_log_path(output), "".join(json.dumps(asdict(m)) + "\n" for m in history))
    save_training_curves(history, curves_path(output))


def _rng_state(device: torch.device) -> dict:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def _save_resume(
    output: Path,
    checkpoint: Checkpoint,
    optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    history: list[EpochMetrics],
    device: torch.device,
    fingerprint: str,
) -> None:
    state = {
        "format": STATE_FORMAT,
        "epoch": history[-1].epoch,
        "checkpoint": checkpoint.to_payload(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),  # empty unless fp16
        "history": [asdict(m) for m in history],
        "rng": _rng_state(device),
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

    def restore(self, optimizer, scheduler, scaler: torch.amp.GradScaler, device: torch.device) -> None:
        try:
            optimizer.load_state_dict(self.state["optimizer"])
            scheduler.load_state_dict(self.state["scheduler"])
            if scaler.is_enabled() and self.state.get("scaler"):  # a run resumed in fp16 after fp16
                scaler.load_state_dict(self.state["scaler"])
            rng = self.state["rng"]
            torch.set_rng_state(rng["torch"])
            if device.type == "cuda" and rng["cuda"]:
                torch.cuda.set_rng_state_all(rng["cuda"])
            name, keys, position, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
            random.setstate(rng["python"])
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
        (config.dropout not in (None, checkpoint.config.dropout), f"the run has --dropout {checkpoint.config.dropout}, not {config.dropout}"),
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
