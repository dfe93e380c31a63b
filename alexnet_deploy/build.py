"""``alexnet-deploy build``: write the FP16 / INT8 ONNX (see ``quantize``), measure each
precision's accuracy with onnxruntime on the held-out val set, then build TensorRT
engines where TensorRT and a GPU exist (see ``engine``). Without them the ONNX half
still runs and the report says in one line why no engine was built."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .data import Preprocessing, held_out_images
from .errors import DeployError
from .metrics import parity
from .files import atomic_output, check_distinct_paths, check_writable_destination, sha256_file
from .graph import (
    WEIGHTS_DIGEST_KEY,
    export_metadata,
    load_model,
    require_fp32_export,
    set_metadata,
    verify_weights,
    weights_digest,
)
from .progress import ProgressReporter, SilentProgress
from .quantize import (
    CALIBRATION_METHODS,
    PRECISIONS,
    CalibrationCache,
    activation_amax,
    cache_path,
    collect_statistics,
    fill_calibration_dir,
    insert_qdq,
    load_calibration_set,
    onnxruntime_int8,
    quantized_activations,
    read_cache,
    to_fp16,
    write_cache,
)
from .runners.onnxruntime import OnnxRuntimeRunner


@dataclass
class BuildConfig:
    onnx: Path = Path("export/alexnet.onnx")
    precisions: tuple[str, ...] = PRECISIONS
    calibration_dir: Path = Path("calibration")
    calib_from_data: bool = False
    calib_images: int | None = None  # None: up to quantize.DEFAULT_CALIBRATION_IMAGES
    calib_method: str = "entropy"
    percentile: float = 99.99
    recalibrate: bool = False
    compare_methods: bool = False
    engines_dir: Path = Path("engines")
    opt_batch: int = 128
    max_batch: int = 256
    workspace_gib: float = 4.0


@dataclass
class AccuracyRow:
    name: str  # "int8 (entropy)", "int8 (onnxruntime quantize_static)", ...
    precision: str
    path: Path | None  # the ONNX file written, None for comparison-only rows
    top1: float
    top5: float
    top1_agreement: float  # with the FP32 reference
    max_abs_diff: float  # max |Δ logits| vs the FP32 reference


@dataclass
class BuildReport:
    onnx: dict[str, Path] = field(default_factory=dict)
    accuracy: list[AccuracyRow] = field(default_factory=list)
    val_images: int = 0
    calibration: list[str] = field(default_factory=list)  # what happened with the cache
    engines: dict[str, Path] = field(default_factory=dict)
    engine_note: str | None = None  # why no engine was built, if none was


def precision_path(fp32_onnx: Path, precision: str) -> Path:
    """export/alexnet.onnx -> export/alexnet.fp16.onnx (FP32 is the export itself)."""
    return fp32_onnx if precision == "fp32" else fp32_onnx.with_suffix(f".{precision}.onnx")


def _validate(config: BuildConfig) -> None:
    unknown = [p for p in config.precisions if p not in PRECISIONS]
    if unknown or not config.precisions:
        raise DeployError(f"unknown precision {', '.join(unknown) or '(none)'}; choose from {', '.join(PRECISIONS)}")
    if config.calib_method not in CALIBRATION_METHODS:
        raise DeployError(f"unknown --calib-method {config.calib_method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    if not 0 < config.percentile <= 100:
        raise DeployError(f"--percentile must be in (0, 100], got {config.percentile}")
    if not 1 <= config.opt_batch <= config.max_batch:
        raise DeployError(f"need 1 <= --opt-batch ({config.opt_batch}) <= --max-batch ({config.max_batch})")
    if not (math.isfinite(config.workspace_gib) and config.workspace_gib > 0):
        raise DeployError(f"--workspace-gib must be a positive number of GiB, got {config.workspace_gib}")


def check_outputs(config: BuildConfig, extra: dict[str, Path | None] | None = None) -> None:
    """Every file the build may write (ONNX per precision, scale caches, ``extra``
    such as ``--json``) must be writable and none may be the input ONNX or another output."""
    fp32_path = Path(config.onnx)
    outputs: dict[str, Path | None] = {
        f"the {p} ONNX": precision_path(fp32_path, p) for p in config.precisions if p != "fp32"
    }
    if "int8" in config.precisions:
        methods = CALIBRATION_METHODS if config.compare_methods else (config.calib_method,)
        outputs |= {f"the {m} scale cache": cache_path(config.calibration_dir, m) for m in methods}
    check_distinct_paths({"--onnx": fp32_path}, outputs | (extra or {}))
    # the ONNX's and the caches' folders may not exist yet: a missing --onnx or an
    # empty --calibration has its own, clearer message later
    for path in [p for p in outputs.values() if p is not None and p.parent.is_dir()] + [
        p for p in (extra or {}).values() if p is not None
    ]:
        check_writable_destination(path)


def evaluate(
    name: str, precision: str, model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray, reference: np.ndarray, path: Path | None
) -> AccuracyRow:
    """Accuracy of ``model`` on the val images. A model that is to be written (``path``
    given) must output finite logits: it is evaluated *before* it is saved, so a broken
    one (NaN scales, say) never replaces a good file."""
    with OnnxRuntimeRunner(model, precision) as runner:
        logits = runner.infer_all(images)
    if path is not None and not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise DeployError(
            f"{name} model outputs non-finite logits on {bad} of {len(logits)} val images; "
            f"{path} not written (any existing file is kept)"
        )
    match = parity(reference, logits, labels)
    return AccuracyRow(name, precision, path, match.top1, match.top5, match.top1_agreement, match.max_abs_diff)


def _calibrated_amax(
    config: BuildConfig, model: onnx.ModelProto, model_sha: str, preprocessing: Preprocessing, report: BuildReport, progress
) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """amax per tensor for the chosen method (and all methods with --compare-methods),
    from the cache when it matches this model and these images, else calibrating."""
    calibration = load_calibration_set(config.calibration_dir, preprocessing, config.calib_images)
    methods = CALIBRATION_METHODS if config.compare_methods else (config.calib_method,)
    cached = {m: read_cache(cache_path(config.calibration_dir, m)) for m in methods}
    tensors = set(quantized_activations(model))
    valid = {
        m: c for m, c in cached.items()
        if c is not None
        and c.model_sha256 == model_sha
        and c.data_fingerprint == calibration.fingerprint
        and c.amax.keys() == tensors
        and (m != "percentile" or c.percentile == config.percentile)
    }
    stale = [m for m in methods if cache_path(config.calibration_dir, m).exists() and m not in valid]
    if stale:
        report.calibration.append(
            f"calibration cache for {', '.join(stale)} is invalid or from another model, image set or percentile: recalibrating"
        )
    if valid.keys() == set(methods) and not config.recalibrate:
        report.calibration.append(
            f"reused calibration cache ({', '.join(methods)}) for {len(calibration.images)} images in {config.calibration_dir}"
        )
        return {m: valid[m].amax for m in methods}, calibration.images
    statistics = collect_statistics(model, calibration.images, progress=progress)
    result = {}
    for method in methods:
        amax = activation_amax(statistics, method, config.percentile)
        write_cache(
            cache_path(config.calibration_dir, method),
            CalibrationCache(
                method, model_sha, calibration.fingerprint, len(calibration.images), amax,
                config.percentile if method == "percentile" else None,
            ),
        )
        result[method] = amax
    report.calibration.append(
        f"calibrated {len(calibration.images)} images from {config.calibration_dir} ({', '.join(methods)}); cache written"
    )
    return result, calibration.images


def build(config: BuildConfig, progress: ProgressReporter | None = None) -> BuildReport:
    progress = progress or SilentProgress()
    _validate(config)
    fp32_path = Path(config.onnx)
    check_outputs(config)
    model = load_model(fp32_path)
    source = str(fp32_path)
    require_fp32_export(model, source)
    verify_weights(model, source)
    metadata = export_metadata(model, source)
    preprocessing, split, data_source = metadata.preprocessing, metadata.split, metadata.data_source
    report = BuildReport()

    images, labels = held_out_images(data_source, split, preprocessing, "val")
    report.val_images = len(images)
    with OnnxRuntimeRunner(model) as reference_runner:
        reference = reference_runner.infer_all(images)
    if not np.isfinite(reference).all():
        raise DeployError(f"{fp32_path} outputs non-finite logits on its val images; re-train and re-export it")

    if "fp32" in config.precisions:
        report.onnx["fp32"] = fp32_path
        report.accuracy.append(evaluate("fp32", "fp32", model, images, labels, reference, fp32_path))

    if "fp16" in config.precisions:
        path = precision_path(fp32_path, "fp16")
        half = to_fp16(model)
        report.accuracy.append(evaluate("fp16", "fp16", half, images, labels, reference, path))
        save_onnx(half, path)
        report.onnx["fp16"] = path

    if "int8" in config.precisions:
        if config.calib_from_data:
            count = fill_calibration_dir(config.calibration_dir, data_source, split)
            report.calibration.append(f"wrote {count} held-out calibration images to {config.calibration_dir}")
        amax, calibration_images = _calibrated_amax(config, model, sha256_file(fp32_path), preprocessing, report, progress)
        path = precision_path(fp32_path, "int8")
        for method, ranges in amax.items():
            quantized = insert_qdq(model, ranges)
            chosen = method == config.calib_method
            report.accuracy.append(
                evaluate(f"int8 ({method})", "int8", quantized, images, labels, reference, path if chosen else None)
            )
            if chosen:
                save_onnx(quantized, path)
                report.onnx["int8"] = path
        if config.compare_methods:
            with tempfile.TemporaryDirectory() as workdir:
                baseline = onnxruntime_int8(model, calibration_images, Path(workdir))
            report.accuracy.append(
                evaluate("int8 (onnxruntime quantize_static)", "int8", baseline, images, labels, reference, None)
            )

    _build_engines(config, report, progress)
    return report


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write a derived ONNX with the digest of its own weights, which bench verifies."""
    set_metadata(model, {WEIGHTS_DIGEST_KEY: weights_digest(model)})
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))


def _build_engines(config: BuildConfig, report: BuildReport, progress: ProgressReporter) -> None:
    from .engine import EngineBuildConfig, build_engine, plan_path_for, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        report.engine_note = f"no TensorRT engine built: {reason}; the ONNX files above are ready for one"
        return
    for precision, onnx_path in report.onnx.items():
        plan = plan_path_for(precision, config.engines_dir)
        engine_config = EngineBuildConfig(
            precision=precision,
            opt_batch=config.opt_batch,
            max_batch=config.max_batch,
            workspace_gib=config.workspace_gib,
            timing_cache=Path(config.engines_dir) / "timing.cache",
        )
        build_engine(onnx_path, plan, engine_config, progress=progress)
        report.engines[precision] = plan
