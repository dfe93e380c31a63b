"""The profile run: for every backend x precision x batch measure the machine's limits,
time the runner end to end, profile it in a run of its own, and put its ops onto
AlexNet's layers. Everything that can fail on bad input fails before the first image is timed."""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone

import numpy as np

from ..bench.config import BenchConfig
from ..bench.planning import load_matching_checkpoint
from ..data.preprocessing import held_out_images
from ..doctor import machine_description
from ..errors import BackendUnavailable, DeployError
from ..files import require_file
from ..graph import load_verified
from ..inference import Runner
from ..layer_names import output_layers
from ..metadata import export_metadata
from ..progress import ProgressReporter, SilentProgress
from ..runners import registry
from .config import ProfileConfig
from .layers import LayerWork, layer_profiles, layer_work
from .limits import Limits, measure_limits
from .report import ProfileReport, ProfileRow

INTEGER_BACKENDS = ("onnxruntime", "openvino")  # whose int8 rows compute in integers on this CPU


def end_to_end_ms(runner: Runner, images: np.ndarray, iterations: int) -> list[float]:
    """Wall time of ``iterations`` unprofiled ``infer`` calls, in ms."""
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        runner.infer(images)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def profile_row(
    runner: Runner,
    images: np.ndarray,
    config: ProfileConfig,
    work: list[LayerWork],
    limits: Limits | None,
    aliases: dict[str, str],
) -> ProfileRow:
    """One row: end-to-end calls split around the profiling run (so drift in the
    machine's load hits both), the profiled ops, and the layers they make."""
    runner.infer(images)  # warm-up
    before = config.iterations // 2
    e2e = end_to_end_ms(runner, images, before)
    ops = runner.profile(images, config.runs)
    e2e += end_to_end_ms(runner, images, config.iterations - before)
    integer = runner.precision == "int8" and runner.backend in INTEGER_BACKENDS
    on_cpu = runner.device == "cpu"
    layers = layer_profiles(ops, work, len(images), runner.precision, limits if on_cpu else None, integer, aliases)
    return ProfileRow(
        backend=runner.backend,
        precision=runner.precision,
        batch=len(images),
        device=runner.device,
        profiler=runner.profiler or "?",
        end_to_end_ms=statistics.median(e2e),
        limit=("INT8" if integer else "FP32") if on_cpu else "",
        layers=layers,
        left_out=runner.profiler_leaves_out,
        limits=limits.to_dict() if limits is not None and on_cpu else {},
        notes=list(runner.notes),
    )


def median_limits(measured: list[dict]) -> dict:
    """The rows' limits, each the median over the rows (for the roofline of all rows)."""
    keys = ("fp32_gflops", "int8_gops", "copy_gbps")
    if not measured:
        return dict.fromkeys(keys, 0.0)
    return {key: statistics.median(m[key] for m in measured) for key in keys}


def run_profile(config: ProfileConfig, progress: ProgressReporter | None = None) -> ProfileReport:
    """Profile every requested backend x precision x batch; see the module docstring."""
    config.check()
    progress = progress or SilentProgress()
    require_file(config.onnx, "FP32 export", "run `alexnet-deploy export` first")
    model = load_verified(config.onnx)
    metadata = export_metadata(model, str(config.onnx))
    if metadata.precision != "fp32":
        raise DeployError(f"{config.onnx} is not the FP32 export profile reads the layers from")
    try:
        work = layer_work(model)
    except ValueError as error:
        raise DeployError(f"{config.onnx}: {error}") from None
    aliases = output_layers(model)
    checkpoint = None
    if "torch" in config.backends:
        checkpoint = config.checkpoint
        load_matching_checkpoint(BenchConfig(onnx=config.onnx, checkpoint=config.checkpoint), model)
    files = registry.ModelFiles(config.onnx, config.engines_dir, checkpoint)
    from ..devices import resolve_device

    torch_device = resolve_device("auto").type  # torch rows on the GPU where there is one
    pool, _ = held_out_images(
        metadata.data_source,
        metadata.split,
        metadata.preprocessing,
        "val",
        max(config.batches),
        metadata.classes,
        metadata.class_ids,
    )
    rows: list[ProfileRow] = []
    skipped: list[tuple[str, str, str]] = []
    progress.begin("profile", len(config.backends) * len(config.precisions) * len(config.batches))
    try:
        for backend in config.backends:
            for precision in config.precisions:
                try:
                    runner = registry.open_profiled(backend, precision, files, torch_device).load()
                except (BackendUnavailable, registry.ArtifactMissing) as error:
                    skipped.append((backend, precision, str(error)))
                    progress.advance(len(config.batches), row=f"{backend}/{precision} skipped")
                    continue
                try:
                    for batch in config.batches:
                        images = np.ascontiguousarray(pool[np.arange(batch) % len(pool)])
                        # measured just before each row, so a shared machine's load meets both alike
                        limits = measure_limits(config.limit_size, config.limit_rounds)
                        rows.append(profile_row(runner, images, config, work, limits, aliases))
                        progress.advance(1, row=f"{backend}/{precision} @ {batch}")
                finally:
                    runner.close()
    finally:
        progress.finish()
    return ProfileReport(
        rows,
        skipped,
        median_limits([row.limits for row in rows]),
        machine_description(),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config.to_dict(),
    )
