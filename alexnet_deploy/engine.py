"""TensorRT engine build: ONNX (FP32, FP16 or Q/DQ INT8) -> ``engines/alexnet.<precision>.plan``
plus its JSON sidecar, with polygraphy's loaders.

* Strongly typed on every TensorRT: precision comes from the ONNX (FP16 tensors, Q/DQ
  pairs), never from builder flags. TensorRT 10 needs the STRONGLY_TYPED network flag;
  TensorRT 11 removed the FP16/INT8 flags and accepts-and-ignores that one, so one code
  path serves both. polygraphy leaves TF32 off unless asked, so an FP32 engine computes
  in FP32 and can be compared with onnxruntime tightly.
* One optimization profile over the batch axis (min 1, opt = the bench batch, max),
  a workspace limit, and a timing cache in ``engines/`` shared by every build.
* The LRN plugin is registered before parsing; the parser maps the custom node onto it.
* The sidecar records what the engine is tied to (TensorRT version, GPU, compute
  capability) so runners can refuse a mismatch, plus the profile, ONNX hash, build time
  and per-layer precision from the engine inspector.

Nothing here prints: polygraphy's and TensorRT's log goes to ``<plan>.log`` beside the plan.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import DeployError
from .files import atomic_output, check_writable_destination, sha256_file, write_text_atomic
from .plugin import PLUGIN_ID, PLUGIN_VERSION
from .plugin.trt_plugin import (
    MIN_TENSORRT,
    CudaDevice,
    clear_plugin_errors,
    cuda_device,
    parse_version,
    plugin_errors,
    register_lrn_plugin,
    tensorrt_version,
)
from .progress import ProgressReporter, SilentProgress
from .errors import BackendUnavailable

PRECISIONS = ("fp32", "fp16", "int8")
ENGINES_DIR = Path("engines")
SIDECAR_FORMAT = 1


def plan_path_for(precision: str, engines_dir: Path = ENGINES_DIR) -> Path:
    return Path(engines_dir) / f"alexnet.{precision}.plan"


def sidecar_path(plan_path: Path) -> Path:
    """``engines/alexnet.fp16.plan`` -> ``engines/alexnet.fp16.json``."""
    return Path(plan_path).with_suffix(".json")


def log_path(plan_path: Path) -> Path:
    return Path(plan_path).with_suffix(".log")


@dataclass
class EngineBuildConfig:
    """What ``build_engine`` needs besides the files. Defaults match the bench: opt 128, max 256."""

    precision: str | None = None  # None: read from the ONNX (Q/DQ -> int8, FP16 tensors -> fp16)
    min_batch: int = 1
    opt_batch: int = 128
    max_batch: int = 256
    workspace_gib: float = 4.0  # TensorRT's workspace memory pool limit
    timing_cache: Path | None = ENGINES_DIR / "timing.cache"
    tf32: bool = False  # let FP32 convolutions use TF32 (faster, ~1e-3 relative error)
    optimization_level: int | None = None  # builder optimization level 0-5; None: TensorRT's default

    def check(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise DeployError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise DeployError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got min {self.min_batch}, "
                f"opt (--opt-batch) {self.opt_batch}, max (--max-batch) {self.max_batch}"
            )
        if self.workspace_gib <= 0:
            raise DeployError(f"workspace must be positive, got {self.workspace_gib} GiB")


@dataclass
class BatchProfile:
    """The optimization profile of the engine's single input; shapes are NCHW."""

    input: str
    min: list[int]
    opt: list[int]
    max: list[int]


@dataclass
class LayerPrecision:
    """One engine layer as the inspector reports it: precision is that of its first
    output (``"fp16"``, ``"int8"``, ...), ``outputs`` the raw format/datatype strings."""

    name: str
    type: str
    precision: str
    outputs: list[str] = field(default_factory=list)


@dataclass
class EngineSidecar:
    plan: str
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profile: BatchProfile
    onnx_path: str
    onnx_sha256: str
    build_seconds: float
    workspace_gib: float
    tf32: bool
    plugin: str
    built_at: str
    layers: list[LayerPrecision]
    format: int = SIDECAR_FORMAT

    def precision_counts(self) -> dict[str, int]:
        """How many engine layers run in each precision."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.precision] = counts.get(layer.precision, 0) + 1
        return counts

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> EngineSidecar:
        data = json.loads(text)
        data["profile"] = BatchProfile(**data["profile"])
        data["layers"] = [LayerPrecision(**layer) for layer in data["layers"]]
        return cls(**data)


@dataclass
class BuildResult:
    plan: Path
    sidecar_path: Path
    log: Path
    sidecar: EngineSidecar


def read_sidecar(plan_path: Path) -> EngineSidecar:
    path = sidecar_path(plan_path)
    if not path.is_file():
        raise DeployError(f"{plan_path} has no sidecar {path}; rebuild the engine with `alexnet-deploy build`")
    try:
        return EngineSidecar.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as error:
        raise DeployError(f"{path} is not a valid engine sidecar ({error.__class__.__name__}: {error})") from None


def sidecar_mismatches(sidecar: EngineSidecar, installed_tensorrt: str | None, device: CudaDevice | None) -> list[str]:
    """Why an engine built as ``sidecar`` describes cannot run here; empty when it can.

    A plan is tied to the exact TensorRT version and to the GPU it was tuned on (its
    kernels, including the LRN plugin's PTX, were chosen for that compute capability).
    """
    problems = []
    if installed_tensorrt != sidecar.tensorrt_version:
        have = f"TensorRT {installed_tensorrt}" if installed_tensorrt else "no TensorRT"
        problems.append(f"built with TensorRT {sidecar.tensorrt_version}, this machine has {have}")
    if device is None:
        problems.append(f"built for {sidecar.gpu_name} (compute {sidecar.compute_capability}), this machine has no CUDA GPU")
    elif device.name != sidecar.gpu_name or device.compute_capability != sidecar.compute_capability:
        problems.append(
            f"built for {sidecar.gpu_name} (compute {sidecar.compute_capability}), "
            f"this machine has {device.name} (compute {device.compute_capability})"
        )
    return problems


def tensorrt_unavailable_reason(version: str | None = None, device: CudaDevice | None = None) -> str | None:
    """None when engines can be built here (TensorRT >= 10.10 and a CUDA GPU), else one
    line saying why. ``version``/``device`` default to what this machine has."""
    version = version if version is not None else tensorrt_version()
    if version is None:
        return "TensorRT is not installed (pip install 'alexnet-deploy[gpu]' on a CUDA machine)"
    if parse_version(version) < MIN_TENSORRT:
        return (
            f"TensorRT {version} is too old: the LRN plugin needs TensorRT >= {'.'.join(map(str, MIN_TENSORRT))} "
            "(ONNX parsers before 10.10 look Python plugins up by node name)"
        )
    if (device or cuda_device()) is None:
        return f"TensorRT {version} is installed but no CUDA GPU is visible"
    return None


def runner_unavailable_reason() -> str | None:
    """None when engines can be *run* here: what building needs, plus pycuda (the
    runner's device buffers, stream and events)."""
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        return reason
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed: the TensorRT runner needs it (pip install 'alexnet-deploy[gpu]')"
    return None


def onnx_precision(model) -> str:
    """The precision an ONNX graph carries: Q/DQ nodes -> int8, FP16 weights -> fp16."""
    from onnx import TensorProto

    if any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node):
        return "int8"
    if any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def _single_input(model, source: Path) -> tuple[str, list[int]]:
    """Name and per-image shape (C, H, W) of the ONNX graph's one input."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise DeployError(f"{source}: expected one input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.dim_value > 0 for d in dims[1:]):
        raise DeployError(f"{source}: input {inputs[0].name!r} must be [batch, C, H, W] with fixed C, H, W")
    return inputs[0].name, [d.dim_value for d in dims[1:]]


_DATATYPES = (  # inspector spellings -> ours; specific names before the ones they contain
    (("INT8",), "int8"),
    (("INT32",), "int32"),
    (("INT64",), "int64"),
    (("BOOL",), "bool"),
    (("FP8", "FLOAT8", "E4M3"), "fp8"),
    (("BF16", "BFLOAT16"), "bf16"),
    (("FP16", "HALF", "FLOAT16"), "fp16"),
    (("FP32", "FLOAT"), "fp32"),
)


def datatype_of(format_string: str) -> str:
    """'Row major linear FP16 format' -> 'fp16'; 'unknown' when no datatype is named."""
    upper = format_string.upper()
    for spellings, name in _DATATYPES:
        if any(spelling in upper for spelling in spellings):
            return name
    return "unknown"


def _tensor_format(tensor: dict) -> str:
    # TensorRT 10 writes one "Format/Datatype" string; 11 split it into "Datatype" and "Format".
    if "Format/Datatype" in tensor:
        return tensor["Format/Datatype"]
    return " ".join(str(tensor[key]) for key in ("Datatype", "DataType", "Format") if tensor.get(key))


def layer_precisions(engine_information: dict) -> list[LayerPrecision]:
    """Per-layer precision from ``IEngineInspector.get_engine_information(JSON)``, built
    with DETAILED profiling verbosity (otherwise layers are bare names: precision 'unknown')."""
    layers = []
    for layer in engine_information.get("Layers", []):
        if isinstance(layer, str):
            layers.append(LayerPrecision(layer, "unknown", "unknown"))
            continue
        outputs = [_tensor_format(t) for t in layer.get("Outputs", [])]
        inputs = [_tensor_format(t) for t in layer.get("Inputs", [])]
        first = (outputs or inputs or [""])[0]
        layers.append(LayerPrecision(layer.get("Name", "?"), layer.get("LayerType", "?"), datatype_of(first), outputs))
    return layers


def _inspect_layers(engine_bytes: bytes, profile: BatchProfile) -> list[LayerPrecision]:
    """Deserialize the fresh plan and ask its inspector; an execution context with the
    opt shape set lets the inspector resolve dynamic dims and report formats."""
    import tensorrt as trt
    from polygraphy.backend.trt import EngineFromBytes

    engine = EngineFromBytes(engine_bytes)()
    context = engine.create_execution_context()
    context.set_input_shape(profile.input, tuple(profile.opt))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return layer_precisions(info)


def _build_failure(plan_path: Path, onnx_path: Path, log: str, error: Exception) -> str:
    """One line for a failed build: TensorRT's last error, and the LRN plugin's own error.

    The plugin's error matters most and is the hardest to see: an exception inside
    ``aot_impl`` is printed by TensorRT's C++ layer straight to the process's stderr and
    the builder logs only that a plugin failed, so ``trt_plugin`` records it for us.
    """
    errors = [line.strip() for line in log.splitlines() if "[E]" in line]
    detail = errors[-1] if errors else f"{error.__class__.__name__}: {error}"
    plugin = plugin_errors()
    plugin_detail = f"; {plugin[-1]}" if plugin else ""
    return f"TensorRT could not build {plan_path} from {onnx_path}: {detail}{plugin_detail} (log: {log_path(plan_path)})"


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    config: EngineBuildConfig | None = None,
    progress: ProgressReporter | None = None,
) -> BuildResult:
    """Build ``plan_path`` (and its sidecar and log) from ``onnx_path``.

    Raises ``BackendUnavailable`` (from ``errors``) with the one-line reason when
    TensorRT or a GPU is missing, and ``DeployError`` for bad input or a failed build.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    config = config or EngineBuildConfig()
    config.check()
    if not onnx_path.is_file():
        raise DeployError(f"ONNX file {onnx_path} not found (write it with `alexnet-deploy export`)")
    check_writable_destination(plan_path)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(reason)

    import onnx
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile
    from polygraphy.exception import PolygraphyException

    progress = progress or SilentProgress()
    progress.begin(f"building {plan_path.name}", total=3)
    model = onnx.load(str(onnx_path), load_external_data=False)
    input_name, image_shape = _single_input(model, onnx_path)
    precision = config.precision or onnx_precision(model)
    profile = BatchProfile(
        input_name,
        [config.min_batch, *image_shape],
        [config.opt_batch, *image_shape],
        [config.max_batch, *image_shape],
    )
    register_lrn_plugin()  # before parsing: the parser resolves the custom node from the registry

    timing_cache = str(config.timing_cache) if config.timing_cache else None
    if config.timing_cache:
        Path(config.timing_cache).parent.mkdir(parents=True, exist_ok=True)
    create_config = CreateConfig(
        tf32=config.tf32,
        profiles=[Profile().add(profile.input, min=profile.min, opt=profile.opt, max=profile.max)],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(config.workspace_gib * 2**30)},
        load_timing_cache=timing_cache,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,  # the inspector's per-layer precision needs it
        builder_optimization_level=config.optimization_level,
    )
    build = EngineBytesFromNetwork(
        NetworkFromOnnxPath(str(onnx_path), strongly_typed=True),
        config=create_config,
        save_timing_cache=timing_cache,
    )

    log = io.StringIO()
    started = time.perf_counter()
    clear_plugin_errors()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            engine_bytes = bytes(build())
    # polygraphy reports a failed build as PolygraphyException; TensorRT's bindings raise
    # TypeError/RuntimeError when the core itself fails (e.g. no builder could be created).
    except (PolygraphyException, RuntimeError, TypeError) as error:
        write_text_atomic(log_path(plan_path), log.getvalue())
        raise DeployError(_build_failure(plan_path, onnx_path, log.getvalue(), error)) from None
    build_seconds = time.perf_counter() - started
    progress.advance(stage="built")

    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        layers = _inspect_layers(engine_bytes, profile)
    progress.advance(stage="inspected")

    device = cuda_device()
    sidecar = EngineSidecar(
        plan=plan_path.name,
        precision=precision,
        tensorrt_version=trt.__version__,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        profile=profile,
        onnx_path=str(onnx_path),
        onnx_sha256=sha256_file(onnx_path),
        build_seconds=round(build_seconds, 3),
        workspace_gib=config.workspace_gib,
        tf32=config.tf32,
        plugin=f"{PLUGIN_ID} v{PLUGIN_VERSION}",
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        layers=layers,
    )
    with atomic_output(plan_path) as tmp:
        tmp.write_bytes(engine_bytes)
    write_text_atomic(sidecar_path(plan_path), sidecar.to_json())  # after the plan: no sidecar without it
    write_text_atomic(log_path(plan_path), log.getvalue())
    progress.advance(stage="written")
    progress.finish()
    return BuildResult(plan_path, sidecar_path(plan_path), log_path(plan_path), sidecar)
