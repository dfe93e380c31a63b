"""What a run writes after each epoch and how ``--resume`` reads it back.

Per epoch, each atomically and in this order: a self-contained resume state
``<output>.state.pt`` (the checkpoint's payload plus optimizer, scheduler, history and
every random generator's state), the checkpoint, the metrics log and whatever the caller
draws (the curves). The state goes first so that a run killed between two writes leaves
a state at least as new as the checkpoint; ``--resume`` continues from the state alone,
rewrites a checkpoint that fell behind it, and continues exactly as the uninterrupted
run would have (same shuffling, dropout and augmentation): the shuffling is a pure
function of (seed, epoch) and needs no saved state, the augmentation one of (seed,
epoch, image), and the generators behind dropout are saved and restored. Under torchrun
rank 0's generators are saved; on resume rank 0 restores them and every other rank
reseeds its dropout with seed + rank, as at the start of a run (a resumed
single-process run is bit-identical; a resumed multi-rank run is identical on rank 0 only)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..artifacts import ArtifactLayout
from ..checkpoint import (
    Checkpoint,
    checkpoint_from_payload,
    load_checkpoint,
    load_payload,
    save_checkpoint,
    save_payload,
)
from ..choices import Recipe
from ..data.sources import ImageSet
from ..errors import DeployError
from ..files import atomic_output, write_text_atomic
from .config import RECIPE_OPTIONS, TrainConfig
from .recipe import recipe_defaults
from .results import EpochCallback, EpochMetrics

# 3: no sampler generator (the order is a function of seed and epoch); 4: the recipe's options;
# 5: the batch size among them
STATE_FORMAT = "alexnet-deploy/train-state/5"


def write_epoch_outputs(
    output: Path, checkpoint: Checkpoint, history: list[EpochMetrics], on_epoch: EpochCallback | None
) -> None:
    """Everything that follows from the resume state: checkpoint, metrics log, then
    whatever the caller draws from the history (the curves)."""
    save_checkpoint(checkpoint, output)
    write_text_atomic(
        ArtifactLayout.from_checkpoint(output).metrics_log, "".join(json.dumps(asdict(m)) + "\n" for m in history)
    )
    if on_epoch is not None:
        on_epoch(history)


def _rng_state(device: torch.device) -> dict:
    # the legacy generator's state is a tuple (numpy types it as tuple | dict)
    name, keys, position, has_gauss, gauss = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }


def save_resume(
    config: TrainConfig,
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
        "options": {name: _plain(getattr(config, name)) for name in (*RECIPE_OPTIONS, "epochs")},
        "checkpoint": checkpoint.to_payload(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),  # empty unless fp16
        "history": [asdict(m) for m in history],
        "rng": _rng_state(device),
        "data_fingerprint": fingerprint,
        "seed": config.seed,  # optional on reading: states written before it was kept lack it
    }
    with atomic_output(ArtifactLayout.from_checkpoint(output).resume_state) as tmp:
        save_payload(state, tmp)


def _plain(value):
    """An option as a plain value (an Enum's string), so the state unpickles without our classes."""
    return value.value if isinstance(value, Enum) else value


@dataclass
class Resume:
    """A checked resume state: the checkpoint it holds and what restores the rest."""

    path: Path
    checkpoint: Checkpoint
    history: list[EpochMetrics]
    state: dict
    replanned: bool = False  # --epochs extends the run: its per-step schedule is planned anew

    def continue_run(self, config: TrainConfig) -> TrainConfig:
        """``config`` with the recipe options it leaves unset taken from the run; one it
        sets to another value than the run's is refused. ``epochs`` left unset is the
        run's planned total (an interrupted run is finished as planned); a larger one
        extends it, and a per-step schedule is then re-planned over the new total."""
        options = self.state["options"]
        taken = {} if config.epochs is not None else {"epochs": options["epochs"]}
        self.replanned = config.epochs is not None and config.epochs != options["epochs"]
        own_seed = self.state.get("seed")
        if config.seed is None:
            taken["seed"] = own_seed
        elif own_seed is not None and config.seed != own_seed:
            raise DeployError(f"cannot --resume {config.output}: the run has --seed {own_seed}, not {config.seed}")
        for name in RECIPE_OPTIONS:
            given, own = _plain(getattr(config, name)), options[name]
            if given is None:
                taken[name] = own
            elif given != own:
                flag = "--" + name.replace("_", "-")
                raise DeployError(f"cannot --resume {config.output}: the run has {flag} {own}, not {given}")
        return replace(config, **taken)

    def restore(self, optimizer, scheduler, scaler: torch.amp.GradScaler, device: torch.device) -> None:
        try:
            optimizer.load_state_dict(self.state["optimizer"])
            scheduler.load_state_dict(self.state["scheduler"], replanned=self.replanned)
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
            raise DeployError(
                f"{self.path} is a damaged resume state: {error.__class__.__name__}: {error}".splitlines()[0]
            ) from None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for param in params:
            buffer = optimizer.state.get(param, {}).get("momentum_buffer")
            if buffer is not None and buffer.shape != param.shape:
                raise DeployError(f"{self.path} is a damaged resume state: optimizer buffers do not fit the model")


def prepare_resume(config: TrainConfig, output: Path, images: ImageSet, on_epoch: EpochCallback | None) -> Resume:
    """Everything ``--resume`` does before training: read the state of the run at
    ``output``, check it against this run's options and data, and rewrite a checkpoint
    that fell behind its state (a kill between the two writes)."""
    state_path = ArtifactLayout.from_checkpoint(output).resume_state
    if not state_path.is_file():
        raise DeployError(f"--resume needs {state_path} from an earlier run of --output {output}; it is missing")
    resume, epoch, fingerprint = _read_state(state_path)
    _check_same_run(config, output, resume.checkpoint, images, fingerprint)
    _catch_up_checkpoint(output, resume, epoch, on_epoch)
    return resume


def _read_state(state_path: Path) -> tuple[Resume, int, str]:
    """The resume state at ``state_path``, every field type-checked: (the state, its
    epoch, the fingerprint of the images it trained on)."""
    state = load_payload(state_path, "an alexnet-deploy resume state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DeployError(f"{state_path} is not an alexnet-deploy resume state (expected format {STATE_FORMAT!r})")
    checkpoint = checkpoint_from_payload(state.get("checkpoint"), state_path)
    checkpoint.check_weights()
    try:
        history = [EpochMetrics(**m) for m in state["history"]]
        epoch, fingerprint, options = state["epoch"], state["data_fingerprint"], state["options"]
        if not isinstance(options, dict) or set(options) != {*RECIPE_OPTIONS, "epochs"}:
            raise ValueError(f"its training options are {options!r}")
        # read back from a file: checked, not coerced (int("2"), bool("no"))
        mistyped = [
            f"{name} {value!r}" for name, value in options.items() if not _of_type(value, _option_example(name))
        ]
        mistyped += [f"epoch {m.epoch!r}" for m in history if not _of_type(m.epoch, 1)]
        mistyped += [f"{k} {v!r}" for m in history for k, v in asdict(m).items() if not _of_type(v, 1.0)]
        seed = state.get("seed")
        mistyped += [] if seed is None or _of_type(seed, 1) else [f"seed {seed!r}"]
        if not _of_type(epoch, 1) or not isinstance(fingerprint, str) or mistyped:
            raise ValueError(
                f"mistyped values: {', '.join(mistyped[:3]) or f'epoch {epoch!r}, fingerprint {fingerprint!r}'}"
            )
    except (KeyError, TypeError, ValueError) as error:
        raise DeployError(f"{state_path} is a damaged resume state: {error}") from None
    if not history or [m.epoch for m in history] != list(range(1, epoch + 1)):
        raise DeployError(f"{state_path} is a damaged resume state: its history does not end at epoch {epoch}")
    return Resume(state_path, checkpoint, history, state), epoch, fingerprint


def _check_same_run(
    config: TrainConfig, output: Path, checkpoint: Checkpoint, images: ImageSet, fingerprint: str
) -> None:
    """This run's data and options contradict nothing the saved run was trained with."""
    contradictions = [
        (
            checkpoint.classes != images.classes,
            f"the run was trained on classes {checkpoint.classes}, the data has {images.classes}",
        ),
        (
            checkpoint.data_source != images.source,
            f"the run was trained on --data {checkpoint.data_source}, not {images.source}",
        ),
        (fingerprint != images.fingerprint(), f"the images in {images.source} changed since the run began"),
        (
            config.variant not in (None, checkpoint.config.variant),
            f"the run has --variant {checkpoint.config.variant}, not {config.variant}",
        ),
        (
            config.groups not in (None, checkpoint.config.groups),
            f"the run has --groups {checkpoint.config.groups}, not {config.groups}",
        ),
        (
            config.width not in (None, checkpoint.config.width),
            f"the run has --width {checkpoint.config.width}, not {config.width}",
        ),
        (
            config.dropout not in (None, checkpoint.config.dropout),
            f"the run has --dropout {checkpoint.config.dropout}, not {config.dropout}",
        ),
        (
            config.limit not in (None, checkpoint.split.limit),
            f"the run has --limit {checkpoint.split.limit}, not {config.limit}",
        ),
        (
            replace(config.split, limit=checkpoint.split.limit) != checkpoint.split,
            f"the run's split is {checkpoint.split}, not {config.split}",
        ),
    ]
    for contradicts, message in contradictions:
        if contradicts:
            raise DeployError(f"cannot --resume {output}: {message}")


def _catch_up_checkpoint(output: Path, resume: Resume, epoch: int, on_epoch: EpochCallback | None) -> None:
    """The checkpoint at ``output`` belongs to the state's run and is not ahead of it;
    one left an epoch behind (a kill between the two writes) is rewritten from the state."""
    state_path, checkpoint, history = resume.path, resume.checkpoint, resume.history
    saved_epoch: int | None = None
    if output.exists():
        on_disk = load_checkpoint(output)
        saved_epoch = on_disk.metrics.get("epoch")
        if not isinstance(saved_epoch, int) or saved_epoch > epoch:
            raise DeployError(
                f"cannot --resume {output}: it is at epoch {saved_epoch} but {state_path} at epoch {epoch}"
            )
        differences = _run_differences(on_disk, checkpoint, same_epoch=saved_epoch == epoch)
        if differences:  # continuing would replace another run's checkpoint with this state's run
            raise DeployError(
                f"cannot --resume {output}: it and {state_path} come from different runs "
                f"(checkpoint vs state: {', '.join(differences)}); give --output the checkpoint the state belongs to"
            )
    if saved_epoch is None or saved_epoch < epoch:
        write_epoch_outputs(output, checkpoint, history, on_epoch)  # the pair was cut between its two writes


def _run_differences(on_disk: Checkpoint, saved: Checkpoint, same_epoch: bool) -> list[str]:
    """How the checkpoint at --output differs from the one the state saved, as far as a
    checkpoint of an earlier epoch of the same run may not (architecture, classes,
    data, split, preprocessing); at the same epoch its weights must be the state's too."""
    ours, theirs = on_disk.config.to_dict(), saved.config.to_dict()
    differences = [f"{name} {ours[name]} vs {theirs.get(name)}" for name in ours if ours[name] != theirs.get(name)]
    differences += [
        name
        for name in ("classes", "data_source", "split", "preprocessing")
        if getattr(on_disk, name) != getattr(saved, name)
    ]
    if not differences and same_epoch:
        weights = on_disk.state_dict
        if any(
            name not in weights or not torch.equal(weights[name], value) for name, value in saved.state_dict.items()
        ):
            differences.append("weights of the same epoch")
    return differences


def _option_example(name: str) -> object:
    """A value of the type option ``name`` has: the default recipe's (a name for ``recipe``)."""
    return Recipe.FAST.value if name == "recipe" else _plain(getattr(recipe_defaults(Recipe.FAST), name, None))


def _of_type(value: object, example: object) -> bool:
    """``value`` is of ``example``'s type (any, for None), an int counting as a float but
    a bool as neither."""
    if example is None:
        return True
    if isinstance(example, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(example, bool)
    if isinstance(example, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(example))
