"""Every inference backend in one table (as Ultralytics' ``export_formats()``): what it
runs, which file serves each precision, whether it can run here, how to open, serve and
profile it. Commands that loop over backends ask this module and never import a concrete
runner, so adding a backend is one runner file plus one :class:`Backend` entry in
:data:`BACKENDS` (docs/architecture.md). Runner modules are imported lazily inside each
entry's functions: asking the table imports no onnxruntime, OpenVINO, torch or TensorRT."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifacts import ORT_INT8, ArtifactLayout, Precision
from ..errors import BackendUnavailable, DeployError

if TYPE_CHECKING:
    import onnx

    from ..inference import Runner

# The bench rows that run one precision's graph in another backend's way: the
# TensorRT-layout (Q/DQ) INT8 graph, simulated in float by onnxruntime and run as
# integers by OpenVINO. Each follows its backend's int8 row.
SIMULATED_INT8 = "int8-sim"
QDQ_INT8 = "int8-qdq"

BF16_NOT_BUILT = "bf16 has no ONNX or engine here: its rows are torch's and OpenVINO's (where the CPU computes bf16)"


@dataclass(frozen=True)
class ModelFiles:
    """Where one model's artifacts are: its FP32 export (the twins sit beside it), its
    engines folder and its checkpoint (torch rows)."""

    onnx: Path
    engines_dir: Path
    checkpoint: Path | None = None  # only the torch backends run it

    @property
    def layout(self) -> ArtifactLayout:
        return ArtifactLayout.from_onnx(Path(self.onnx), Path(self.engines_dir))


@dataclass(frozen=True)
class Artifact:
    """The file one backend runs for one precision, and what that file must hold."""

    path: Path
    kind: str  # "onnx", "plan" or "checkpoint"
    stored: str  # the precision the file's metadata carries (fp32 for a checkpoint)
    build_command: str  # the command that writes it
    note: str | None = None  # which graph this is, where the precision alone does not say


@dataclass(frozen=True)
class RunOptions:
    """How to open a runner, beyond what it runs: the device a GPU-capable backend runs
    on, CUDA-graph replay (TensorRT, torch on CUDA)."""

    device: str = "cpu"
    cuda_graphs: bool = False


@dataclass(frozen=True)
class Backend:
    """One row of the table: everything a command may ask about a backend."""

    name: str
    summary: str
    precisions: tuple[str, ...]  # what it runs, in bench's row order (variants included)
    served: tuple[str, ...]  # the precisions a Triton repository serves with it
    follow_ups: dict[str, str]  # bench: after the row of key, also the row of value
    unavailable_reason: Callable[[], str | None]  # None when it can run here
    artifact: Callable[[ModelFiles, str], Artifact]
    open: Callable[[object, str, RunOptions], Runner]  # (model or file, precision, options)
    device_for: Callable[[str], str]  # torch's resolved device -> where this backend runs
    describe: Callable[[], str] | None = None  # what doctor adds when it can run
    profiler: str | None = None  # its own per-layer profiler (``Runner.profile``); None: none

    def unsupported_reason(self, precision: str) -> str | None:
        if precision in self.precisions:
            return None
        if precision == "bf16":
            return BF16_NOT_BUILT
        return f"the {self.name} backend runs {', '.join(self.precisions)}, not {precision}"


def _onnx_artifact(files: ModelFiles, precision: str, note: str | None = None) -> Artifact:
    stored = Precision.INT8.value if precision in (SIMULATED_INT8, QDQ_INT8, ORT_INT8) else precision
    if precision == "bf16":
        stored = "fp32"
    command = "alexnet-deploy export" if stored == "fp32" else f"alexnet-deploy build --{stored}"
    tag = {SIMULATED_INT8: Precision.INT8.value, QDQ_INT8: Precision.INT8.value, "bf16": "fp32"}.get(
        precision, precision
    )
    return Artifact(files.layout.onnx(tag), "onnx", stored, command, note)


def _onnxruntime_artifact(files: ModelFiles, precision: str) -> Artifact:
    if precision == "int8":  # the integer-kernel layout: what makes onnxruntime's INT8 fast
        return _onnx_artifact(files, ORT_INT8, "onnxruntime-targeted INT8 graph (QLinearConv/QGemm integer kernels)")
    if precision == SIMULATED_INT8:
        return _onnx_artifact(
            files,
            precision,
            "TensorRT-targeted INT8 graph, quantization simulated in float by onnxruntime: "
            "parity of the engine's graph, speed not an INT8 figure",
        )
    return _onnx_artifact(files, precision)


def _openvino_artifact(files: ModelFiles, precision: str) -> Artifact:
    if precision == "int8":  # OpenVINO runs this layout fastest and closest to FP32 (docs/bench.md)
        return _onnx_artifact(files, ORT_INT8, "onnxruntime-layout INT8 graph (alexnet.int8-ort.onnx)")
    if precision == QDQ_INT8:
        return _onnx_artifact(files, precision, "TensorRT-layout Q/DQ INT8 graph (alexnet.int8.onnx)")
    if precision == "bf16":
        return _onnx_artifact(files, precision, "the FP32 export at OpenVINO's bf16 inference precision")
    return _onnx_artifact(files, precision)


def _tensorrt_artifact(files: ModelFiles, precision: str) -> Artifact:
    return Artifact(files.layout.plan(precision), "plan", precision, f"alexnet-deploy build --{precision}")


def _checkpoint_artifact(files: ModelFiles, precision: str) -> Artifact:
    if files.checkpoint is None:
        raise DeployError("the torch backends run a checkpoint; give --checkpoint")
    return Artifact(Path(files.checkpoint), "checkpoint", "fp32", "alexnet-deploy train")


def _runs_as(precision: str) -> str:
    """The precision a runner is opened at: int8 for a bench variant row, fp32 for ""."""
    return Precision.INT8.value if precision in (SIMULATED_INT8, QDQ_INT8) else precision or "fp32"


def _open_onnxruntime(source, precision: str, options: RunOptions) -> Runner:
    from .onnxruntime import OnnxRuntimeRunner

    lrn = "window-sum" if precision == Precision.INT8.value else "kernel"  # why: runners/onnxruntime.py
    return OnnxRuntimeRunner(source, _runs_as(precision), options.device, lrn=lrn)


def _open_openvino(source, precision: str, options: RunOptions) -> Runner:
    from .openvino import OpenVinoRunner

    return OpenVinoRunner(source, _runs_as(precision))


def _torch_backend(compile: bool) -> Backend:
    """The checkpoint in torch, eager or through torch.compile: two rows of one runner."""

    def open_torch(source, precision: str, options: RunOptions) -> Runner:
        from .torch import TorchRunner

        return TorchRunner(source, precision, options.device, compile=compile, cuda_graphs=options.cuda_graphs)

    return Backend(
        name="torch-compile" if compile else "torch",
        summary="the checkpoint through torch.compile"
        if compile
        else "the checkpoint in eager torch (channels-last; LRN through the Triton kernel on CUDA)",
        precisions=("fp32", "fp16", "bf16"),
        served=(),
        follow_ups={},
        unavailable_reason=_always,
        artifact=_checkpoint_artifact,
        open=open_torch,
        device_for=lambda torch_device: torch_device,
        profiler=None if compile else "torch.profiler",
    )


def _open_tensorrt(source, precision: str, options: RunOptions) -> Runner:
    from ..tensorrt.runner import TensorRTRunner

    return TensorRTRunner(Path(source), precision or None, cuda_graphs=options.cuda_graphs)


def _openvino_unavailable() -> str | None:
    from .openvino import openvino_unavailable_reason

    return openvino_unavailable_reason()


def _openvino_describe() -> str:
    from .openvino import cpu_capabilities

    return f"OpenVINO's CPU capabilities: {', '.join(cpu_capabilities())}"


def _tensorrt_unavailable() -> str | None:
    try:
        from ..tensorrt.availability import runner_unavailable_reason
    except ImportError as error:
        return f"the TensorRT runner cannot be imported ({error})"
    return runner_unavailable_reason()


def _onnxruntime_device(torch_device: str) -> str:
    """onnxruntime follows torch onto the GPU only when its CUDA execution provider is
    installed; otherwise its rows say "cpu"."""
    if torch_device != "cuda":
        return "cpu"
    from .onnxruntime import available_providers

    return "cuda" if "CUDAExecutionProvider" in available_providers() else "cpu"


def _always() -> str | None:  # a backend that runs wherever this package is installed
    return None


BACKENDS: dict[str, Backend] = {
    entry.name: entry
    for entry in (
        Backend(
            name="tensorrt",
            summary="TensorRT engines (FP16/INT8 from the strongly typed ONNX twins) with the Triton LRN plugin",
            precisions=("fp32", "fp16", "int8"),
            served=("fp32", "fp16", "int8"),
            follow_ups={},
            unavailable_reason=_tensorrt_unavailable,
            artifact=_tensorrt_artifact,
            open=_open_tensorrt,
            device_for=lambda _torch_device: "cuda",
            profiler="TensorRT IProfiler (per-layer time, a profiling run of its own)",
        ),
        Backend(
            name="onnxruntime",
            summary="the reference: onnxruntime on the standard-op twin (its own LRN kernel)",
            precisions=("fp32", "fp16", "int8", SIMULATED_INT8),
            served=("fp32",),
            follow_ups={"int8": SIMULATED_INT8},
            unavailable_reason=_always,
            artifact=_onnxruntime_artifact,
            open=_open_onnxruntime,
            device_for=_onnxruntime_device,
            profiler="onnxruntime session profiling",
        ),
        Backend(
            name="openvino",
            summary="OpenVINO's CPU plugin on the standard-op twin; INT8 graphs as integer kernels",
            precisions=("fp32", "fp16", "bf16", "int8", QDQ_INT8),
            served=("fp32", "int8"),
            follow_ups={"int8": QDQ_INT8},
            unavailable_reason=_openvino_unavailable,
            artifact=_openvino_artifact,
            open=_open_openvino,
            device_for=lambda _torch_device: "cpu",
            describe=_openvino_describe,
            profiler="OpenVINO PERF_COUNT",
        ),
        _torch_backend(compile=False),
        _torch_backend(compile=True),
    )
}

# The order a command picks a backend in when none is given: the fastest measured first
# (docs/bench.md); onnxruntime, which always runs, last.
FASTEST_FIRST = ("tensorrt", "openvino", "onnxruntime")


def backend_entry(name: str) -> Backend:
    if name not in BACKENDS:
        raise DeployError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]


class ArtifactMissing(DeployError):
    """The file a backend needs for a precision has not been written yet; the message
    names it and the command that writes it (bench skips such a row unless asked for it)."""


def load_artifact(artifact: Artifact, reference: onnx.ModelProto | None = None) -> object:
    """What a runner opens: the ONNX at ``artifact.path`` loaded and verified now (weights
    digest, and the precision its metadata carries), so a wrong or modified file fails
    before any work; the plan or checkpoint path as it is (their runners check them).
    ``reference``: the FP32 export already loaded and verified, reused for fp32 graphs."""
    if not Path(artifact.path).is_file():
        raise ArtifactMissing(f"{artifact.path} not found; run `{artifact.build_command}`")
    if artifact.kind != "onnx":
        return Path(artifact.path)
    from ..graph import load_verified
    from ..metadata import export_metadata

    model = reference if reference is not None and artifact.stored == "fp32" else load_verified(artifact.path)
    carried = export_metadata(model, str(artifact.path)).precision
    if carried != artifact.stored:
        raise DeployError(f"{artifact.path} holds a {carried} model, expected {artifact.stored}")
    return model


def open_runner(
    name: str,
    precision: str,
    files: ModelFiles,
    torch_device: str = "cpu",
    cuda_graphs: bool = False,
    reference: onnx.ModelProto | None = None,
) -> Runner:
    """The (unloaded) runner of backend ``name`` at ``precision`` on ``files``, on the
    device the backend takes given torch's (``device_for``). Raises BackendUnavailable
    when the backend cannot run here or has no such precision, ArtifactMissing when its
    file is not written yet, DeployError for a bad file."""
    entry = backend_entry(name)
    reason = entry.unsupported_reason(precision) or entry.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(reason)
    source = load_artifact(entry.artifact(files, precision), reference)
    return entry.open(source, precision, RunOptions(entry.device_for(torch_device), cuda_graphs))


def open_profiled(name: str, precision: str, files: ModelFiles, torch_device: str = "cpu") -> Runner:
    """Like :func:`open_runner`, for ``profile``: an ONNX graph goes to the backend with
    its nodes named after AlexNet's layers (``layer_names.name_nodes``), so what the
    backend's profiler reports maps back onto them. BackendUnavailable when the backend
    has no profiler."""
    entry = backend_entry(name)
    reason = entry.unsupported_reason(precision) or entry.unavailable_reason()
    if reason is None and entry.profiler is None:
        reason = f"the {name} backend has no per-layer profiler"
    if reason is not None:
        raise BackendUnavailable(reason)
    source = load_artifact(entry.artifact(files, precision))
    if not isinstance(source, Path):  # an ONNX graph (a plan or checkpoint stays a path)
        from ..layer_names import name_nodes

        source = name_nodes(source)  # type: ignore[arg-type]  # load_artifact's ONNX case
    return entry.open(source, precision, RunOptions(entry.device_for(torch_device)))


def open_model(name: str, source: object, precision: str = "", device: str = "cpu") -> Runner:
    """The runner of backend ``name`` on a model in hand (an ONNX ModelProto or file, a
    plan, a checkpoint): for callers that hold the exact graph to run, such as export's
    validation, build's accuracy table and the served models inside Triton. ``precision``
    "": what the file holds (an ONNX runner then runs fp32 I/O, TensorRT reads its sidecar)."""
    return backend_entry(name).open(source, precision, RunOptions(device))


def reference_runner(model: onnx.ModelProto | Path) -> Runner:
    """The project's reference: onnxruntime FP32 on the CPU, on the standard-op twin."""
    return open_model("onnxruntime", model, "fp32")


def fastest_backend(precision: str, files: ModelFiles, served: bool = False) -> str:
    """The backend a command uses when none is given: the first of :data:`FASTEST_FIRST`
    that can run here, has ``precision`` (among what it serves, when ``served``) and
    whose file for it exists; onnxruntime when none does (its error then names the
    file to build)."""
    for name in FASTEST_FIRST:
        entry = BACKENDS[name]
        if (served and precision not in entry.served) or entry.unsupported_reason(precision):
            continue
        if entry.unavailable_reason() is None and entry.artifact(files, precision).path.is_file():
            return name
    return FASTEST_FIRST[-1]


def unserved_reason(precision: str, files: ModelFiles) -> str:
    """Why no backend can serve ``precision`` here (``fastest_backend`` found none):
    each that serves it and why not, so a user who named no backend is not told
    about one they never chose."""
    reasons = []
    for name in FASTEST_FIRST:
        entry = BACKENDS[name]
        if precision not in entry.served:
            continue
        artifact = entry.artifact(files, precision)
        reason = entry.unavailable_reason()
        if reason is None and not artifact.path.is_file():
            reason = f"{artifact.path} not found; run `{artifact.build_command}`"
        reasons.append(f"{name}: {reason}")
    return f"no backend here serves {precision} ({'; '.join(reasons) or 'none runs it'})"


def ready_reason(name: str) -> str:
    """doctor's line for a backend: "yes" (with what it adds), or "no: why"."""
    entry = backend_entry(name)
    reason = entry.unavailable_reason()
    if reason is not None:
        return f"no: {reason}"
    return f"yes ({entry.describe()})" if entry.describe is not None else "yes"


def read_files(files: ModelFiles) -> dict[str, Path | None]:
    """Every file a command that opens runners on ``files`` may read, named for an error
    message: the export and its twins, each engine and its sidecar, the checkpoint. No
    output option may name one of them (``files.check_output_paths``)."""
    layout = files.layout
    named: dict[str, Path | None] = {"--onnx": Path(files.onnx), "--checkpoint": files.checkpoint}
    named |= {f"the {tag} ONNX": layout.onnx(tag) for tag in (Precision.FP16, Precision.INT8, ORT_INT8)}
    for precision in Precision:
        named |= {
            f"the {precision} engine": layout.plan(precision),
            f"the {precision} engine's sidecar": layout.sidecar(precision),
        }
    return named
