"""``alexnet-deploy train``: options (the recipe's among them), one call of
``train.loop.train``, and the per-epoch table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..artifacts import ArtifactLayout
from ..choices import DeviceChoice, Recipe, Schedule, TrainingPrecision, Variant
from ..errors import DeployError
from ..train.config import DEFAULT_SEED, TrainConfig
from ..train.recipe import recipe_summary
from .console import RichProgress, console, one_line_errors, table
from .options import Device


@one_line_errors
def train(
    data: Annotated[
        str, typer.Option(help="'digits' (embedded, no download) or an ImageFolder directory.")
    ] = TrainConfig.data,
    recipe: Annotated[
        Recipe | None,
        typer.Option(
            help=f"Defaults for the options marked (recipe) below: {recipe_summary()}. With --resume: the run's own.",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="(recipe) Total epochs. With --resume: unset finishes the run as planned; more extends it.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="(recipe) Images per SGD step and process; under torchrun the effective batch is this x world size.",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="(recipe) Peak learning rate (SGD, momentum 0.9), for the recipe's batch.", show_default=False
        ),
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay (paper: 5e-4).")] = TrainConfig.weight_decay,
    schedule: Annotated[
        Schedule | None,
        typer.Option(
            help="(recipe) cosine: linear warm-up over --warmup of the steps, then cosine decay to 0, per step; "
            "plateau: divide lr by 10 when val loss stalls (the paper); step: every --step-size epochs.",
            show_default=False,
        ),
    ] = None,
    warmup: Annotated[
        float | None,
        typer.Option(help="(recipe) Fraction of all steps the cosine schedule's warm-up takes.", show_default=False),
    ] = None,
    nesterov: Annotated[
        bool | None, typer.Option("--nesterov/--no-nesterov", help="(recipe) Nesterov momentum.", show_default=False)
    ] = None,
    label_smoothing: Annotated[
        float | None,
        typer.Option(
            help="(recipe) Label smoothing of the training loss (0: plain cross-entropy).", show_default=False
        ),
    ] = None,
    step_size: Annotated[
        int, typer.Option(help="Epochs between lr drops with --schedule step.")
    ] = TrainConfig.step_size,
    device: Device = DeviceChoice(TrainConfig.device),
    output: Annotated[
        Path, typer.Option(help="Checkpoint path; its resume state, metrics and curves go beside it.")
    ] = TrainConfig.output,
    seed: Annotated[
        int | None,
        typer.Option(
            help=f"Seed for weights, shuffling and augmentation. Default: {DEFAULT_SEED}, or with --resume the run's own.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Use at most this many images (smoke runs); the split is made among them.")
    ] = None,
    variant: Annotated[
        Variant | None,
        typer.Option(
            help="paper = the 2012 network (default); torchvision = torchvision's alexnet (no LRN, no groups, 224 px).",
            show_default=False,
        ),
    ] = None,
    groups: Annotated[
        int | None,
        typer.Option(
            help="2 = the paper's two-GPU split of conv2/4/5 (default; 1 for --variant torchvision); 1 = dense."
        ),
    ] = None,
    width: Annotated[
        float | None, typer.Option(help="Channel multiplier in (0, 1] (default 1); below 1 only for quick experiments.")
    ] = None,
    augment: Annotated[
        bool, typer.Option(help="Random crops, flips and PCA colour jitter (paper, Section 4.1); --no-augment: none.")
    ] = True,
    flip: Annotated[
        bool | None,
        typer.Option(
            "--flip/--no-flip",
            help="Random horizontal flips. Unset: on for an ImageFolder (photos survive a mirror), "
            "off for the embedded digits (a mirrored digit is no digit).",
            show_default=False,
        ),
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(
            help="Dropout before fc6 and fc7 (default 0.5, the paper's; with --resume the run's own).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Data-loading worker processes per training process (unset: 0 for the in-memory digits, min(4, cores) for an ImageFolder).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the run saved at --output (same --data; --limit, --variant, --groups, --width, --dropout default to the run's)."
        ),
    ] = False,
    precision: Annotated[
        TrainingPrecision,
        typer.Option(
            help="bf16: autocast, CPU or CUDA; fp16: autocast + gradient scaler, CUDA only. Weights stay fp32."
        ),
    ] = TrainingPrecision(TrainConfig.precision),
    dist_timeout: Annotated[
        float,
        typer.Option(help="Under torchrun: seconds to wait for the rendezvous and for any collective before failing."),
    ] = TrainConfig.dist_timeout_s,
) -> None:
    """Train AlexNet and write the checkpoint (weights + classes + preprocessing).

    Under torchrun (`torchrun --nproc-per-node N $(which alexnet-deploy) train ...`)
    it trains data-parallel with DistributedDataParallel; rank 0 writes the files.
    """
    from ..data.augmentation import Augmentation
    from ..plots import curves_writer
    from ..train.loop import train as run_training

    if flip and not augment:
        raise DeployError("--flip contradicts --no-augment (which turns every augmentation off)")
    config = TrainConfig(
        data=data,
        output=output,
        recipe=recipe,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup=warmup,
        nesterov=nesterov,
        label_smoothing=label_smoothing,
        step_size=step_size,
        device=device,
        seed=seed,
        limit=limit,
        variant=variant,
        groups=groups,
        width=width,
        augment=Augmentation(horizontal_flip=flip) if augment else Augmentation(False, False, 0.0),
        dropout=dropout,
        workers=workers,
        resume=resume,
        precision=precision,
        dist_timeout_s=dist_timeout,
    )
    # the curves are drawn beside the checkpoint after every epoch (rank 0)
    result = run_training(config, RichProgress(), on_epoch=curves_writer(ArtifactLayout.from_checkpoint(output).curves))
    if not result.is_main:
        return  # rank 0 reports for every rank
    rows = [
        (m.epoch, m.lr, m.train_loss, m.train_top1, m.val_loss, m.val_top1, m.val_top5, f"{m.train_images_per_s:.1f}")
        for m in result.history
    ]
    console.print(
        table(
            "training",
            ["epoch", "lr", "train loss", "train top-1", "val loss", "val top-1", "val top-5", "img/s"],
            rows,
        )
    )
    last = result.history[-1]
    console.print(
        f"checkpoint {result.checkpoint}  val top-1 {last.val_top1:.2%} (chance {1 / result.num_classes:.0%})  "
        f"top-5 {last.val_top5:.2%}  metrics {result.metrics_log}"
        + (
            f"  ({result.world_size} processes, effective batch {result.batch_size * result.world_size})"
            if result.world_size > 1
            else ""
        ),
        soft_wrap=True,
    )
