"""Building a TensorRT engine: ONNX (FP32, FP16 or Q/DQ INT8) -> ``engines/alexnet.<precision>.plan``
plus its sidecar and build log, with polygraphy's loaders.

* Strongly typed on every TensorRT: precision comes from the ONNX (FP16 tensors, Q/DQ
  pairs), never from builder flags. TensorRT 10 needs the STRONGLY_TYPED network flag;
  TensorRT 11 removed the FP16/INT8 flags and accepts-and-ignores that one, so one code
  path serves both. polygraphy leaves TF32 off unless asked, so an FP32 engine computes
  in FP32 and can be compared with onnxruntime tightly.
* One optimization profile over the batch axis (min 1, opt = the bench batch, max),
  a workspace limit, and a timing cache in ``engines/`` shared by every build.
* The LRN plugin is registered before parsing; the parser maps the custom node onto it.
* The sidecar (``sidecar``) records what the engine is tied to, the profile, the ONNX
  hash, build time and per-layer precision from the engine inspector (``inspector``).

Nothing here prints: polygraphy's and TensorRT's log goes to ``<plan>.log`` beside the plan.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..artifacts import Precision, build_log_of
from ..cuda_driver import cuda_device
from ..errors import BackendUnavailable, DeployError
from ..files import atomic_output, check_writable_destination, require_file, sha256_file, write_text_atomic
from ..layer_names import name_nodes
from ..metadata import graph_precision
from ..plugin import PLUGIN_ID, PLUGIN_VERSION
from ..plugin.registration import clear_plugin_errors, plugin_errors, register_lrn_plugin
from ..progress import ProgressReporter, SilentProgress
from .availability import tensorrt_unavailable_reason
from .config import EngineBuildConfig
from .inspector import inspect_layers
from .sidecar import BatchProfile, EngineSidecar, write_sidecar


@dataclass
class BuildResult:
    plan: Path
    sidecar_path: Path
    log: Path
    sidecar: EngineSidecar


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


def _build_failure(plan_path: Path, onnx_path: Path, log: str, error: Exception) -> str:
    """One line for a failed build: TensorRT's last error, and the LRN plugin's own error.

    The plugin's error matters most and is the hardest to see: an exception inside
    ``aot_impl`` is printed by TensorRT's C++ layer straight to the process's stderr and
    the builder logs only that a plugin failed, so ``plugin.registration`` records it for us.
    """
    errors = [line.strip() for line in log.splitlines() if "[E]" in line]
    detail = errors[-1] if errors else f"{error.__class__.__name__}: {error}"
    plugin = plugin_errors()
    plugin_detail = f"; {plugin[-1]}" if plugin else ""
    return f"TensorRT could not build {plan_path} from {onnx_path}: {detail}{plugin_detail} (log: {build_log_of(plan_path)})"


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
    require_file(onnx_path, "ONNX file", "write it with `alexnet-deploy export`")
    check_writable_destination(plan_path)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(reason)

    import onnx
    from polygraphy.exception import PolygraphyException

    progress = progress or SilentProgress()
    progress.begin(f"building {plan_path.name}", total=3)
    model = onnx.load(str(onnx_path), load_external_data=False)
    input_name, image_shape = _single_input(model, onnx_path)
    precision = Precision(config.precision or graph_precision(model))
    profile = BatchProfile(
        input_name,
        [config.min_batch, *image_shape],
        [config.opt_batch, *image_shape],
        [config.max_batch, *image_shape],
    )
    register_lrn_plugin()  # before parsing: the parser resolves the custom node from the registry

    log = io.StringIO()
    started = time.perf_counter()
    clear_plugin_errors()
    try:
        # The network is parsed from the graph with its nodes named after AlexNet's layers,
        # so the engine's layer names (and IProfiler's, inspector's) say conv1 ... fc8.
        with tempfile.TemporaryDirectory(prefix="alexnet-trt-") as folder:
            named = Path(folder) / onnx_path.name
            onnx.save(name_nodes(onnx.load(str(onnx_path))), str(named))
            build = _engine_loader(named, config, profile)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                engine_bytes = bytes(build())
    # polygraphy reports a failed build as PolygraphyException; TensorRT's bindings raise
    # TypeError/RuntimeError when the core itself fails (e.g. no builder could be created).
    except (PolygraphyException, RuntimeError, TypeError) as error:
        write_text_atomic(build_log_of(plan_path), log.getvalue())
        raise DeployError(_build_failure(plan_path, onnx_path, log.getvalue(), error)) from None
    build_seconds = time.perf_counter() - started
    progress.advance(stage="built")

    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        layers = inspect_layers(engine_bytes, profile)
    progress.advance(stage="inspected")
    sidecar = _sidecar(plan_path, onnx_path, config, precision, profile, build_seconds, layers)
    with atomic_output(plan_path) as tmp:
        tmp.write_bytes(engine_bytes)
    sidecar_path = write_sidecar(plan_path, sidecar)  # after the plan: no sidecar without it
    write_text_atomic(build_log_of(plan_path), log.getvalue())
    progress.advance(stage="written")
    progress.finish()
    return BuildResult(plan_path, sidecar_path, build_log_of(plan_path), sidecar)


def _engine_loader(onnx_path: Path, config: EngineBuildConfig, profile: BatchProfile):
    """polygraphy's lazy loader that builds the serialized engine: strongly typed (the
    precision is the ONNX's), one optimization profile, the timing cache, detailed
    profiling verbosity (the inspector's per-layer precisions need it)."""
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    timing_cache = str(config.timing_cache) if config.timing_cache else None
    if config.timing_cache:
        Path(config.timing_cache).parent.mkdir(parents=True, exist_ok=True)
    create_config = CreateConfig(
        tf32=config.tf32,
        profiles=[Profile().add(profile.input, min=profile.min, opt=profile.opt, max=profile.max)],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(config.workspace_gib * 2**30)},
        load_timing_cache=timing_cache,
        profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        builder_optimization_level=config.optimization_level,
    )
    return EngineBytesFromNetwork(
        NetworkFromOnnxPath(str(onnx_path), strongly_typed=True),
        config=create_config,
        save_timing_cache=timing_cache,
    )


def _sidecar(
    plan_path: Path,
    onnx_path: Path,
    config: EngineBuildConfig,
    precision: Precision,
    profile: BatchProfile,
    build_seconds: float,
    layers: list,
) -> EngineSidecar:
    """What the plan was built with and for (TensorRT's version, this GPU, the profile,
    the ONNX's digest), read back before any run."""
    import tensorrt as trt

    device = cuda_device()
    assert device is not None, "tensorrt_unavailable_reason() saw a GPU before the build"
    sidecar = EngineSidecar(
        plan=plan_path.name,
        precision=precision.value,
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
    return sidecar
