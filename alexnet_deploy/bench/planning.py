"""Which bench rows can run here, decided before anything is timed: for each backend x
precision, how to open its runner, or the one-line reason it is skipped (or the error,
when a precision the user named has nothing to run)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx

from ..checkpoint import Checkpoint, load_checkpoint
from ..errors import DeployError
from ..files import sha256_file
from ..inference import Runner
from ..metadata import export_metadata
from ..runners.registry import ArtifactMissing, ModelFiles, RunOptions, backend_entry, load_artifact
from .config import BenchConfig


@dataclass
class Planned:
    """A backend x precision about to be measured: how to open its runner, or why not."""

    backend: str
    precision: str
    device: str
    open: Callable[[], Runner] | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    harness_check: bool = False  # also time bare session.run on this row's session


@dataclass
class PlanContext:
    """What every row's plan may need, resolved once."""

    config: BenchConfig
    torch_device: str  # "cpu" or "cuda"
    reference_model: onnx.ModelProto  # the FP32 export
    reference_runner: Runner
    checkpoint: Checkpoint | None  # loaded when a torch backend runs

    @property
    def files(self) -> ModelFiles:
        return ModelFiles(self.config.onnx, self.config.layout.engines_dir, self.config.checkpoint)


def plan_row(context: PlanContext, name: str, precision: str) -> Planned:
    """One row, decided by asking the registry: the backend cannot run here or has no
    such precision (skipped), its file is not built (skipped, or an error when
    ``--precisions`` named it), or how to open its runner on the verified file."""
    entry = backend_entry(name)
    device = entry.device_for(context.torch_device)
    planned = Planned(name, precision, device, harness_check=(name, precision) == ("onnxruntime", "fp32"))
    if name == "tensorrt" and context.config.device == "cpu":
        planned.skipped = "TensorRT runs only on a GPU (--device cpu)"
        return planned
    reason = entry.unsupported_reason(precision) or entry.unavailable_reason()
    if reason is not None:
        planned.skipped = reason
        return planned
    if planned.harness_check and device == "cpu":
        planned.open = lambda: context.reference_runner  # the reference session itself
        return planned
    artifact = entry.artifact(context.files, precision)
    planned.notes += [artifact.note] if artifact.note else []
    if artifact.kind == "checkpoint":
        source: object = context.checkpoint
        if source is None:  # run_bench loads it whenever a torch backend is asked for
            raise RuntimeError("torch rows planned without a checkpoint")
    else:
        try:
            source = load_artifact(artifact, context.reference_model)
        except ArtifactMissing as missing:
            if context.config.precisions is not None:
                raise DeployError(f"{missing} (--precisions {artifact.stored} asked for it)") from None
            planned.skipped = str(missing)
            return planned
    if artifact.kind == "plan":
        from ..tensorrt.sidecar import read_sidecar

        # the sidecar knows the profile: a batch it cannot take fails now, not minutes into the run
        check_batches(read_sidecar(artifact.path).profile.max[0], context.config.batches, f"{artifact.path}'s profile")
    options = RunOptions(device, cuda_graphs=context.config.cuda_graphs)
    planned.open = lambda: entry.open(source, precision, options)
    return planned


def plan_rows(context: PlanContext) -> list[Planned]:
    """One plan per backend x precision asked for, in that order; a row the registry
    names a follow-up of (onnxruntime's and OpenVINO's int8: the TensorRT-layout graph
    in their ways) comes right after it."""
    plans = []
    for name in context.config.backends:
        for precision in context.config.chosen_precisions:
            plans.append(plan_row(context, name, precision))
            follow_up = backend_entry(name).follow_ups.get(precision)
            if follow_up is not None:
                plans.append(plan_row(context, name, follow_up))
    return plans


def load_matching_checkpoint(config: BenchConfig, reference_model: onnx.ModelProto) -> Checkpoint:
    """The checkpoint for the torch rows, refused if the ONNX was exported from another:
    their parity against the reference would then measure the wrong thing."""
    checkpoint = load_checkpoint(config.checkpoint)
    exported_from = export_metadata(reference_model, str(config.onnx)).checkpoint_sha256
    if exported_from is not None and exported_from != sha256_file(config.checkpoint):
        raise DeployError(
            f"{config.checkpoint} is not the checkpoint {config.onnx} was exported from; "
            "re-run `alexnet-deploy export` or pass the right --checkpoint"
        )
    return checkpoint


def check_batches(max_batch: int | None, batches: Sequence[int], what: str) -> None:
    """Every batch of the sweep must fit ``what`` (an engine's profile, or a runner)."""
    if max_batch is not None and max(batches) > max_batch:
        raise DeployError(
            f"batch {max(batches)} exceeds {what} maximum {max_batch}; "
            f"rebuild with `alexnet-deploy build --max-batch {max(batches)}` or lower --batch"
        )
