"""``train()``: the run from data to checkpoint, one process or data-parallel.

Under ``torchrun`` the same function trains data-parallel (``distributed``): each rank
takes ``batch_size`` images per step from its shard, DDP averages the gradients,
validation is split across ranks and summed, and rank 0 alone writes files. One
sampler serves both cases: the global batch at step t is the same images whatever the
world size, so N ranks x B/N equals one process x B."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..artifacts import ArtifactLayout
from ..checkpoint import Checkpoint
from ..data.loading import EvalDataset, TrainingDataset, batch_loader, default_workers, loader_options
from ..data.preprocessing import Preprocessing, fit_normalisation
from ..data.sources import ImageSet, load_images
from ..data.split import Split
from ..devices import resolve_device
from ..errors import DeployError
from ..files import check_writable_destination, sweep_stale_temporaries
from ..model import TORCHVISION, TORCHVISION_INPUT_SIZE, AlexNet, AlexNetConfig
from ..progress import ProgressReporter, SilentProgress
from . import distributed
from .config import DEFAULT_DROPOUT, DEFAULT_WIDTH, TrainConfig, default_groups, model_variant
from .epoch import Accuracy, all_reduce_accuracy, seed_everything, train_one_epoch, validate
from .precision import MixedPrecision, resolve_precision
from .results import EpochCallback, EpochMetrics, TrainResult
from .resume import Resume, prepare_resume, save_resume, write_epoch_outputs
from .schedule import LrSchedule


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.SGD:
    """SGD with momentum and weight decay, as in the paper (Nesterov's variant per the recipe).

    ``fused``: one kernel per parameter tensor for the weight decay, momentum and update
    instead of several passes over 61 M weights (faster per step on CPU and GPU; the
    measured gain is in docs/training.md). Same update rule, rounding aside."""
    assert config.lr is not None and config.nesterov is not None  # filled in by with_recipe
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
        fused=device.type in ("cpu", "cuda"),
    )


def _check_outputs(output: Path) -> None:
    """Every file a run writes can be created beside ``output`` (each is probed), and
    ``output`` is, or will be, a regular file: a run's checkpoint and its state,
    metrics and curves live side by side, so a device or FIFO cannot stand in for it."""
    if output.exists() and not output.is_file() and not output.is_dir():  # a folder: the next check says so
        raise DeployError(f"--output {output} exists and is not a regular file")
    layout = ArtifactLayout.from_checkpoint(output)
    for path in (output, layout.resume_state, layout.metrics_log, layout.curves):
        check_writable_destination(path)


def train(
    config: TrainConfig, progress: ProgressReporter | None = None, on_epoch: EpochCallback | None = None
) -> TrainResult:
    """Train AlexNet per ``config``; return where the checkpoint and metrics went.

    ``on_epoch`` is called on rank 0 with the history after every epoch's files are
    written (the CLI draws the training curves with it)."""
    config.check()
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
            return _train(config, context, device, precision, output, progress, on_epoch)
    finally:
        distributed.stop(context)


@dataclass
class _RunPlan:
    """What one run trains: its options (the recipe's filled in), the network, the data
    split and its parts, the preprocessing, and the resume state it continues from."""

    config: TrainConfig
    model_config: AlexNetConfig
    split: Split
    parts: dict[str, ImageSet]
    preprocessing: Preprocessing
    resume: Resume | None


def _plan_run(
    config: TrainConfig,
    context: distributed.DistributedContext,
    images: ImageSet,
    output: Path,
    on_epoch: EpochCallback | None,
) -> _RunPlan:
    """A new run from the options, or a resumed one from its state (rank 0 reads and
    checks the state; every rank gets it, or the same error)."""
    resume = (
        distributed.run_on_main(context, lambda: prepare_resume(config, output, images, on_epoch))
        if config.resume
        else None
    )
    if resume is not None:
        config = resume.continue_run(config)
        config.check()  # the run's own options, as read back
    config = config.with_recipe()
    if resume is not None:
        model_config, split = resume.checkpoint.config, resume.checkpoint.split
    else:
        variant = model_variant(config.variant)
        model_config = AlexNetConfig(
            num_classes=len(images.classes),
            groups=default_groups(variant) if config.groups is None else config.groups,
            width=DEFAULT_WIDTH if config.width is None else config.width,
            dropout=DEFAULT_DROPOUT if config.dropout is None else config.dropout,
            input_size=TORCHVISION_INPUT_SIZE if variant == TORCHVISION else AlexNetConfig.input_size,
            variant=variant,
        )
        split = replace(config.split, limit=config.limit)
    parts = split.apply(images)
    if len(parts["train"]) == 0 or len(parts["val"]) == 0:
        raise DeployError(
            f"too few images ({len(images) if split.limit is None else min(split.limit, len(images))}) to split into train and val sets"
        )
    preprocessing = (
        resume.checkpoint.preprocessing
        if resume is not None
        else fit_normalisation(parts["train"], Preprocessing(crop=model_config.input_size))
    )
    return _RunPlan(config, model_config, split, parts, preprocessing, resume)


def _train(
    config: TrainConfig,
    context: distributed.DistributedContext,
    device: torch.device,
    precision: MixedPrecision,
    output: Path,
    progress: ProgressReporter,
    on_epoch: EpochCallback | None,
) -> TrainResult:
    images = load_images(config.data)
    plan = _plan_run(config, context, images, output, on_epoch)
    config, model_config, resume = plan.config, plan.model_config, plan.resume
    assert config.seed is not None  # with_recipe
    seed_everything(config.seed)
    # Module.to takes memory_format (torch docs); torch's stubs leave it out of the overloads
    model = AlexNet(model_config).to(device, memory_format=precision.memory_format)  # type: ignore[call-overload]
    if context.enabled:  # the same initial weights everywhere, but each rank its own dropout masks
        torch.manual_seed(config.seed + context.rank)
    optimizer = make_optimizer(model, config, device)
    scaler = precision.grad_scaler()  # fp16's loss scale carries across epochs (and a resume)
    train_set, sampler, loader, val_loader = _data_loaders(plan, images, context, device)
    batch_size = config.batch_size
    assert batch_size is not None  # with_recipe
    assert config.epochs is not None and config.label_smoothing is not None  # with_recipe
    schedule = _lr_schedule(optimizer, config, len(loader))
    history = (
        [] if resume is None else _continue(resume, model, optimizer, schedule, scaler, device, context, config.seed)
    )
    first_epoch = len(history) + 1
    # DDP broadcasts rank 0's weights at construction; every rank already holds them.
    trained = torch.nn.parallel.DistributedDataParallel(model) if context.enabled else model
    log_path = ArtifactLayout.from_checkpoint(output).metrics_log
    fingerprint = images.fingerprint()

    for epoch in range(first_epoch, config.epochs + 1):
        train_set.epoch = epoch
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        progress.begin(f"epoch {epoch}/{config.epochs}", len(loader) * batch_size if loader.drop_last else len(sampler))
        started = time.perf_counter()
        train_stats, _ = train_one_epoch(
            trained,
            loader,
            optimizer,
            device,
            progress,
            precision,
            scaler,
            label_smoothing=config.label_smoothing,
            after_step=schedule.after_step,
        )
        train_seconds = time.perf_counter() - started
        train_stats = all_reduce_accuracy(context, train_stats, device)
        val_stats = all_reduce_accuracy(context, validate(model, val_loader, device), device)
        progress.finish()
        if not math.isfinite(val_stats.loss):
            raise DeployError(
                f"training diverged: the val loss of epoch {epoch} is {val_stats.loss}; nothing of it was saved (try a lower --lr)"
            )
        schedule.after_epoch(val_stats.loss)
        history.append(EpochMetrics.of(epoch, lr, train_stats, val_stats, time.perf_counter() - started, train_seconds))
        if not context.is_main:
            continue
        checkpoint = _epoch_checkpoint(plan, model, images, epoch, val_stats)
        checkpoint.check_weights()  # never save a NaN model
        save_resume(config, output, checkpoint, optimizer, schedule, scaler, history, device, fingerprint)
        write_epoch_outputs(output, checkpoint, history, on_epoch)

    # Nobody tears the process group down while rank 0 still writes the last epoch's
    # files: a rank leaving early aborted now and then in Gloo's shutdown.
    distributed.barrier(context)
    return TrainResult(
        output, log_path, history, model_config.num_classes, context.world_size, context.is_main, batch_size
    )


def _lr_schedule(optimizer: torch.optim.SGD, config: TrainConfig, steps_per_epoch: int) -> LrSchedule:
    assert config.epochs is not None and config.schedule is not None and config.warmup is not None  # with_recipe
    return LrSchedule(
        optimizer,
        config.schedule,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        warmup=config.warmup,
        step_size=config.step_size,
        gamma=config.gamma,
    )


def _continue(resume: Resume, model, optimizer, schedule, scaler, device, context, seed: int) -> list[EpochMetrics]:
    """A resumed run's weights, optimizer, schedule, loss scale and random states, as
    saved; its history so far."""
    model.load_state_dict(resume.checkpoint.state_dict)
    resume.restore(optimizer, schedule, scaler, device)
    if context.rank > 0:
        # The state holds rank 0's generators (restored above on every rank); the
        # other ranks draw their dropout masks from seed + rank again, as at the start.
        torch.manual_seed(seed + context.rank)
    return resume.history


def _data_loaders(plan: _RunPlan, images: ImageSet, context: distributed.DistributedContext, device: torch.device):
    """(training set, its sampler, its loader, the val loader) of one rank."""
    config = plan.config
    assert config.seed is not None and config.batch_size is not None  # with_recipe
    workers = config.workers if config.workers is not None else default_workers(images, context.local_world_size)
    options = loader_options(workers, device)
    train_set = TrainingDataset(plan.parts["train"], plan.preprocessing, config.augment, config.seed)
    # One permutation per (seed, epoch), cut into world_size shards (a single one
    # without torchrun): a pure function of (seed, epoch), so a resumed run needs no
    # saved shuffling state, and independent of the world size.
    sampler = distributed.train_sampler(train_set, context, config.seed, drop_last=True)
    batch_size = config.batch_size
    loader = batch_loader(train_set, batch_size, sampler=sampler, drop_last=len(sampler) > batch_size, **options)
    val_set = EvalDataset(plan.parts["val"], plan.preprocessing)
    val_loader = batch_loader(val_set, batch_size, sampler=distributed.StridedShard(len(val_set), context), **options)
    return train_set, sampler, loader, val_loader


def _epoch_checkpoint(
    plan: _RunPlan, model: torch.nn.Module, images: ImageSet, epoch: int, val: Accuracy
) -> Checkpoint:
    """The checkpoint an epoch writes: its weights (contiguous, on the CPU) and what
    later steps need to use them."""
    return Checkpoint(
        config=plan.model_config,
        state_dict={k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        classes=images.classes,
        preprocessing=plan.preprocessing,
        data_source=images.source,
        split=plan.split,
        metrics={"epoch": epoch, "val_top1": val.top1, "val_top5": val.top5, "val_loss": val.loss},
    )
