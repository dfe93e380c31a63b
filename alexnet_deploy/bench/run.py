"""The bench run: plan the rows, time each backend x precision at every batch on the
rotated held-out images, judge its parity against the reference, and collect the
:class:`~alexnet_deploy.bench.report.BenchReport`. Everything that can fail on bad input
fails before the first image is timed."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..data.preprocessing import held_out_images
from ..doctor import machine_description
from ..errors import BackendUnavailable, DeployError
from ..files import require_file
from ..graph import load_verified
from ..inference import Runner
from ..metadata import export_metadata
from ..metrics import LatencyStats, fp32_tolerance, parity
from ..progress import ProgressReporter, SilentProgress
from ..runners import registry
from .config import BenchConfig
from .inputs import Rotation, check_memory, memory_limit_bytes
from .planning import (
    PlanContext,
    Planned,
    check_batches,
    load_matching_checkpoint,
    plan_rows,
)
from .report import BenchReport, BenchRow
from .timing import HarnessCheck, harness_overhead, time_iterations


def _measure_row(
    runner: Runner, planned: Planned, rotation: Rotation, config: BenchConfig, reference: np.ndarray, labels: np.ndarray
) -> BenchRow:
    """Time one batch size; judge parity on the timed outputs, completed by untimed runs
    of any rotated batch the timed loop did not reach."""
    timing = time_iterations(
        runner,
        rotation.batches,
        config.warmup,
        config.timed_iterations,
        config.timed_duration_s,
        config.min_iterations,
        config.window_s,
        config.stability,
    )
    rest = [runner.infer(b) for b in rotation.batches[len(timing.outputs) :]]
    logits = rotation.per_image(timing.outputs + rest, len(reference))
    match = parity(reference, logits, labels)

    def median_stage(attribute: str) -> float | None:
        return float(np.median([getattr(s, attribute) for s in timing.stages])) if timing.stages else None

    notes = planned.notes + runner.notes + parity_warnings(runner.precision, runner.device, match.max_abs_diff, logits)
    unstable = timing.stability.note()
    notes += [unstable] if unstable else []
    row = BenchRow(
        planned.backend,
        planned.precision,
        runner.device,
        timing.batch,
        throughput_ips=timing.throughput_ips,
        latency_ms=LatencyStats.of(timing.latencies_ms),
        top1_agreement=match.top1_agreement,
        max_abs_diff=match.max_abs_diff,
        top1=match.top1,
        top5=match.top5,
        iterations=timing.iterations,
        stability=timing.stability.to_dict(),
        notes=list(dict.fromkeys(notes)),
        gpu_compute_ms=median_stage("compute_ms"),
        h2d_ms=median_stage("h2d_ms"),
        d2h_ms=median_stage("d2h_ms"),
    )
    return row


def parity_warnings(precision: str, device: str, max_abs_diff: float, logits: np.ndarray) -> list[str]:
    """Notes for a row whose outputs cannot be trusted: non-finite logits anywhere, or
    an FP32 CPU row further from the reference than the export's own tolerance (the
    torch checkpoint and the ONNX then compute different things). ``not <=`` so that
    a NaN difference is flagged too."""
    if not np.isfinite(logits).all():
        return ["PARITY FAILED: non-finite logits"]
    tolerance = fp32_tolerance(logits)
    if precision == "fp32" and device == "cpu" and not max_abs_diff <= tolerance:
        return [
            f"PARITY FAILED: max |Δ| {max_abs_diff:.3g} vs the reference exceeds {tolerance:g} "
            "(the checkpoint and the ONNX differ: re-export)"
        ]
    return []


def run_bench(config: BenchConfig, progress: ProgressReporter | None = None) -> BenchReport:
    """Measure every requested backend x precision x batch; see the module docstring.

    Everything that can fail on bad input (options, missing files, a checkpoint that
    does not match the ONNX) fails before the first image is timed."""
    config.check()
    progress = progress or SilentProgress()
    from ..devices import resolve_device

    torch_device = resolve_device(config.device).type
    reference_path = config.onnx
    require_file(reference_path, "reference ONNX", "run `alexnet-deploy export` first")
    reference_model = load_verified(reference_path)
    metadata = export_metadata(reference_model, str(reference_path))
    if metadata.precision != "fp32":
        raise DeployError(f"{reference_path} is not the FP32 export the reference must be")
    check_memory(config.batches, metadata.preprocessing.crop, memory_limit_bytes())
    torch_rows = any(b.startswith("torch") for b in config.backends)
    checkpoint = load_matching_checkpoint(config, reference_model) if torch_rows else None
    reference_runner = registry.reference_runner(reference_model)
    context = PlanContext(config, torch_device, reference_model, reference_runner, checkpoint)
    plans = plan_rows(context)

    data_source = metadata.data_source
    images, labels = held_out_images(
        data_source,
        metadata.split,
        metadata.preprocessing,
        "val",
        config.max_images,
        metadata.classes,
        metadata.class_ids,
    )
    rotations = {b: Rotation.of(images, b) for b in config.batches}
    rows: list[BenchRow] = []
    harness: list[HarnessCheck] = []
    with reference_runner:
        reference = reference_runner.infer_all(images)
        progress.begin("bench", len(plans) * len(config.batches))
        try:
            for planned in plans:
                rows += _run_planned(planned, context, rotations, reference, labels, harness, progress)
        finally:
            progress.finish()
    return BenchReport(
        rows,
        harness,
        len(images),
        f"held-out val images of {Path(data_source).name}",
        "onnxruntime fp32 on cpu",
        config,
        machine_description(),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _run_planned(
    planned: Planned,
    context: PlanContext,
    rotations: dict[int, Rotation],
    reference: np.ndarray,
    labels: np.ndarray,
    harness: list[HarnessCheck],
    progress: ProgressReporter,
) -> list[BenchRow]:
    """Every batch of one backend x precision: one runner, loaded once."""
    batches = list(rotations)

    def skipped(reason: str) -> list[BenchRow]:
        progress.advance(len(batches), row=f"{planned.backend}/{planned.precision} skipped")
        return [BenchRow(planned.backend, planned.precision, planned.device, b, skipped=reason) for b in batches]

    if planned.open is None:
        return skipped(planned.skipped or "nothing to run")
    runner = planned.open()
    try:
        runner.load()
    except BackendUnavailable as error:
        return skipped(str(error))
    is_reference = runner is context.reference_runner
    try:
        check_batches(runner.max_batch, batches, f"{runner.name}'s")
        rows = []
        for batch, rotation in rotations.items():
            row = _measure_row(runner, planned, rotation, context.config, reference, labels)
            rows.append(row)
            if planned.harness_check and runner.run_bare is not None:
                harness.append(harness_overhead(runner, runner.run_bare, rotation.batches))
            progress.advance(1, row=f"{planned.backend}/{planned.precision} @ {batch}")
        return rows
    finally:
        if not is_reference:
            runner.close()
