"""Which bench rows can run here, decided before anything is timed: for each backend x
precision, how to open its runner, or the one-line reason it is skipped (or the error,
when a precision the user named has nothing to run)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..artifacts import ORT_INT8, PRECISIONS, ArtifactLayout, Precision
from ..checkpoint import Checkpoint, load_checkpoint
from ..errors import DeployError
from ..files import sha256_file
from ..graph import export_metadata, load_verified
from ..runners.base import Runner
from .config import BenchConfig

SIMULATED_INT8 = "int8-sim"  # the row of the TensorRT-targeted INT8 graph run by onnxruntime
QDQ_INT8 = "int8-qdq"  # the row of the TensorRT-targeted (Q/DQ) INT8 graph run by OpenVINO, in integers


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
    """What every planner may need, resolved once."""

    config: BenchConfig
    torch_device: str  # "cpu" or "cuda"
    onnxruntime_device: str
    reference_model: onnx.ModelProto  # the FP32 export
    reference_runner: Runner
    checkpoint: Checkpoint | None  # loaded when a torch backend runs


BUILD_COMMANDS = {p: f"alexnet-deploy build --{p}" for p in PRECISIONS}
BF16_NOT_BUILT = "bf16 has no ONNX or engine here: its rows are torch's (CPU with AVX512-BF16/AMX, or CUDA)"


def _onnxruntime_graph(layout: ArtifactLayout, precision: str) -> tuple[Path, str | None]:
    """The ONNX an onnxruntime row runs, and the note that says which graph it is."""
    if precision == "int8":
        return layout.onnx(ORT_INT8), "onnxruntime-targeted INT8 graph (QLinearConv/QGemm integer kernels)"
    if precision == SIMULATED_INT8:
        return layout.onnx(Precision.INT8), (
            "TensorRT-targeted INT8 graph, quantization simulated in float by onnxruntime: "
            "parity of the engine's graph, speed not an INT8 figure"
        )
    return layout.onnx(precision), None


def _missing(context: PlanContext, path: Path, precision: str) -> str:
    """The skip reason for an artifact not built yet, or an error if it was asked for."""
    message = f"{path} not found; run `{BUILD_COMMANDS[precision]}`"
    if context.config.precisions is not None:
        raise DeployError(f"{message} (--precisions {precision} asked for it)")
    return message


def _verified_model(context: PlanContext, path: Path, stored: str) -> onnx.ModelProto:
    """The ONNX at ``path``, loaded and verified now (so a wrong or modified file fails
    before any timing), holding a ``stored``-precision model as its metadata says."""
    model = context.reference_model if stored == "fp32" else load_verified(path)
    carried = export_metadata(model, str(path)).precision
    if carried != stored:
        raise DeployError(f"{path} holds a {carried} model, expected {stored}")
    return model


def _plan_onnxruntime(context: PlanContext, precision: str) -> Planned:
    planned = Planned("onnxruntime", precision, context.onnxruntime_device, harness_check=precision == "fp32")
    if precision == "bf16":
        planned.skipped = BF16_NOT_BUILT
        return planned
    if precision == "fp32" and context.onnxruntime_device == "cpu":
        planned.open = lambda: context.reference_runner  # the reference session itself
        return planned
    path, note = _onnxruntime_graph(context.config.layout, precision)
    planned.notes += [note] if note else []
    stored = "int8" if precision == SIMULATED_INT8 else precision  # what the file's metadata says
    if not path.is_file():
        planned.skipped = _missing(context, path, stored)
        return planned

    model = _verified_model(context, path, stored)

    def open_runner() -> Runner:
        from ..runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model, stored, context.onnxruntime_device)

    planned.open = open_runner
    return planned


def _openvino_graph(layout: ArtifactLayout, precision: str) -> tuple[Path, str, str | None]:
    """The ONNX an OpenVINO row runs, the precision its metadata carries, and the note
    that says which graph it is. Both INT8 layouts run as integers (the runner's
    runtime-graph note says so); bf16 is the FP32 export at bf16 inference precision."""
    if precision == "int8":
        return layout.onnx(ORT_INT8), "int8", "onnxruntime-layout INT8 graph (alexnet.int8-ort.onnx)"
    if precision == QDQ_INT8:
        return layout.onnx(Precision.INT8), "int8", "TensorRT-layout Q/DQ INT8 graph (alexnet.int8.onnx)"
    if precision == "bf16":
        return layout.onnx(Precision.FP32), "fp32", "the FP32 export at OpenVINO's bf16 inference precision"
    return layout.onnx(precision), precision, None


def _plan_openvino(context: PlanContext, precision: str) -> Planned:
    from ..runners.openvino import OpenVinoRunner, openvino_unavailable_reason

    planned = Planned("openvino", precision, "cpu")
    reason = openvino_unavailable_reason()
    if reason is not None:
        planned.skipped = reason
        return planned
    path, stored, note = _openvino_graph(context.config.layout, precision)
    planned.notes += [note] if note else []
    if not path.is_file():
        planned.skipped = _missing(context, path, stored)
        return planned
    model = _verified_model(context, path, stored)
    runner_precision = "int8" if precision == QDQ_INT8 else precision
    planned.open = lambda: OpenVinoRunner(model, runner_precision)
    return planned


def _plan_torch(context: PlanContext, precision: str, compile: bool) -> Planned:
    from ..runners.torch import TorchRunner

    planned = Planned("torch-compile" if compile else "torch", precision, context.torch_device)
    checkpoint = context.checkpoint
    if checkpoint is None:  # run_bench loads it whenever a torch backend is asked for
        raise RuntimeError("torch rows planned without a checkpoint")
    planned.open = lambda: TorchRunner(
        checkpoint, precision, context.torch_device, compile=compile, cuda_graphs=context.config.cuda_graphs
    )
    return planned


def _plan_tensorrt(context: PlanContext, precision: str) -> Planned:
    planned = Planned("tensorrt", precision, "cuda")
    if precision == "bf16":
        planned.skipped = BF16_NOT_BUILT
        return planned
    if context.config.device == "cpu":
        planned.skipped = "TensorRT runs only on a GPU (--device cpu)"
        return planned
    try:
        from ..tensorrt.availability import runner_unavailable_reason
        from ..tensorrt.runner import TensorRTRunner
        from ..tensorrt.sidecar import read_sidecar
    except ImportError as error:
        planned.skipped = f"the TensorRT runner cannot be imported ({error})"
        return planned
    reason = runner_unavailable_reason()
    if reason is not None:
        planned.skipped = reason
        return planned
    path = context.config.layout.plan(precision)
    if not path.is_file():
        planned.skipped = _missing(context, path, precision)
        return planned
    # the sidecar knows the profile: a batch it cannot take fails now, not minutes into the run
    check_batches(read_sidecar(path).profile.max[0], context.config.batches, f"{path}'s profile")
    planned.open = lambda: TensorRTRunner(path, precision, cuda_graphs=context.config.cuda_graphs)
    return planned


PLANNERS: dict[str, Callable[[PlanContext, str], Planned]] = {
    "tensorrt": _plan_tensorrt,
    "onnxruntime": _plan_onnxruntime,
    "openvino": _plan_openvino,
    "torch": lambda context, precision: _plan_torch(context, precision, compile=False),
    "torch-compile": lambda context, precision: _plan_torch(context, precision, compile=True),
}


def plan_rows(context: PlanContext) -> list[Planned]:
    """One plan per backend x precision asked for, in that order; onnxruntime's int8 is
    followed by the simulated-INT8 row of the TensorRT-targeted graph, OpenVINO's by
    its integer row of that graph."""
    plans = []
    for backend in context.config.backends:
        for precision in context.config.chosen_precisions:
            plans.append(PLANNERS[backend](context, precision))
            if (backend, precision) == ("onnxruntime", "int8"):
                plans.append(_plan_onnxruntime(context, SIMULATED_INT8))
            if (backend, precision) == ("openvino", "int8"):
                plans.append(_plan_openvino(context, QDQ_INT8))
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


def resolve_devices(config: BenchConfig) -> tuple[str, str]:
    """(torch device, onnxruntime device). onnxruntime follows torch onto the GPU only
    when its CUDA execution provider is installed; otherwise its rows say "cpu"."""
    from ..devices import resolve_device
    from ..runners.onnxruntime import available_providers

    torch_device = resolve_device(config.device).type
    cuda_ep = "CUDAExecutionProvider" in available_providers()
    return torch_device, "cuda" if torch_device == "cuda" and cuda_ep else "cpu"


def check_batches(max_batch: int | None, batches: Sequence[int], what: str) -> None:
    """Every batch of the sweep must fit ``what`` (an engine's profile, or a runner)."""
    if max_batch is not None and max(batches) > max_batch:
        raise DeployError(
            f"batch {max(batches)} exceeds {what} maximum {max_batch}; "
            f"rebuild with `alexnet-deploy build --max-batch {max(batches)}` or lower --batch"
        )
