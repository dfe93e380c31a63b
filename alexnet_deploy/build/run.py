"""The ``build`` run: write the FP16 / INT8 ONNX (see :mod:`alexnet_deploy.quantize`),
measure each precision's accuracy with onnxruntime on the held-out val set, then build
TensorRT engines where TensorRT and a GPU exist (see ``engine``). Without them the ONNX
half still runs and the report says in one line why no engine was built.

INT8 is written twice from one calibration: ``alexnet.int8.onnx`` laid out for TensorRT
(the engine's input, :mod:`.quantize.qdq`) and ``alexnet.int8-ort.onnx`` laid out for
onnxruntime's integer kernels (:mod:`.quantize.onnxruntime`); each carries its target
runtime and the calibration's provenance in its metadata."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import ORT_INT8, ArtifactLayout, Precision
from ..data.preprocessing import Preprocessing, held_out_images
from ..digests import seal, set_metadata, verify_weights
from ..errors import DeployError
from ..files import (
    atomic_output,
    check_distinct_paths,
    check_output_paths,
    check_writable_destination,
    sha256_file,
)
from ..graph import load_model
from ..metadata import CalibrationProvenance, export_metadata, require_fp32_export
from ..metrics import parity
from ..progress import ProgressReporter, SilentProgress
from ..quantize.baseline import onnxruntime_int8
from ..quantize.cache import CalibrationCache, read_cache, write_cache
from ..quantize.calibration import (
    activation_amax,
    collect_statistics,
    quantized_activations,
)
from ..quantize.fallback import FallbackChoice, choose_fallback
from ..quantize.fp16 import to_fp16
from ..quantize.images import fill_calibration_dir, load_calibration_set
from ..quantize.mixed import mixed_int8
from ..quantize.onnxruntime import output_activations
from ..quantize.sensitivity import Evaluator
from ..runners.registry import open_model, reference_runner
from .config import THROUGHPUT_BATCH, THROUGHPUT_ROUNDS, BuildConfig


@dataclass
class AccuracyRow:
    name: str  # "int8 (entropy)", "int8 (onnxruntime quantize_static)", ...
    precision: str
    path: Path | None  # the ONNX file written, None for comparison-only rows
    top1: float
    top5: float
    top1_agreement: float  # with the FP32 reference
    max_abs_diff: float  # max |Δ logits| vs the FP32 reference
    throughput_ips: float | None = None  # onnxruntime CPU img/s, measured by --compare-methods where meaningful


@dataclass
class BuildReport:
    onnx: dict[str, Path] = field(default_factory=dict)  # the graphs TensorRT engines are built from
    onnxruntime_int8: Path | None = None  # the INT8 graph laid out for onnxruntime
    accuracy: list[AccuracyRow] = field(default_factory=list)
    val_images: int = 0
    calibration: list[str] = field(default_factory=list)  # what happened with the cache
    engines: dict[str, Path] = field(default_factory=dict)
    mixed: FallbackChoice | None = None  # with a budget: the layers out of INT8 and why
    engine_note: str | None = None  # why no engine was built, if none was


def check_outputs(config: BuildConfig, extra: dict[str, Path | None] | None = None) -> None:
    """Every file the build may write (ONNX per precision, scale caches, ``extra``
    such as ``--json``) must be writable and none may be the input ONNX or another output."""
    config.check()
    fp32_path, files = Path(config.onnx), config.layout
    outputs: dict[str, Path | None] = {f"the {p} ONNX": files.onnx(p) for p in config.precisions if p != Precision.FP32}
    if Precision.INT8 in config.precisions:
        outputs["the int8 ONNX for onnxruntime"] = files.onnx(ORT_INT8)
        outputs |= {f"the {m} scale cache": files.scales(m) for m in config.methods}
    check_distinct_paths({"--onnx": fp32_path}, outputs | (extra or {}))
    # the scale caches belong in --calibration; a report there would replace an image
    check_output_paths({"--onnx": fp32_path}, extra or {}, {"--calibration": Path(config.calibration_dir)})
    # the ONNX's and the caches' folders may not exist yet: a missing --onnx or an
    # empty --calibration has its own, clearer message later
    for path in [p for p in outputs.values() if p is not None and p.parent.is_dir()]:
        check_writable_destination(path)


@dataclass
class _Candidate:
    """One model of the accuracy table, before it is measured (and, if it has a
    ``path``, written there once its logits proved finite)."""

    name: str
    precision: str
    model: onnx.ModelProto
    path: Path | None  # where it is written, None for comparison-only rows
    artifact: str | None = None  # its key in the report: "fp16", "int8", ORT_INT8...
    # timed by --compare-methods: FP32 and the graphs onnxruntime runs as INT8. Not FP16 or
    # the TensorRT layout (onnxruntime simulates those in float: no figure to compare),
    # which also keeps the sessions held at once, ~1 GB each at batch 128, few.
    timed: bool = False


def score_candidate(
    name: str,
    precision: str,
    model: onnx.ModelProto,
    images: np.ndarray,
    labels: np.ndarray,
    reference: np.ndarray,
    path: Path | None,
) -> AccuracyRow:
    """Accuracy of ``model`` on the val images. A model that is to be written (``path``
    given) must output finite logits: it is evaluated *before* it is saved, so a broken
    one (NaN scales, say) never replaces a good file."""
    with open_model("onnxruntime", model, precision) as runner:
        logits = runner.infer_all(images)
    if path is not None and not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise DeployError(
            f"{name} model outputs non-finite logits on {bad} of {len(logits)} val images; "
            f"{path} not written (any existing file is kept)"
        )
    match = parity(reference, logits, labels)
    return AccuracyRow(name, precision, path, match.top1, match.top5, match.top1_agreement, match.max_abs_diff)


def interleaved_throughput(
    models: list[tuple[onnx.ModelProto, str]], images: np.ndarray, batch: int, rounds: int
) -> list[float]:
    """img/s of each (model, precision) in onnxruntime on CPU, one ``batch`` call of each
    in turn for ``rounds`` rounds after one untimed warm-up call each, so load from
    other jobs on a shared machine slows every model alike and ratios stay fair."""
    batch_images = np.resize(images, (batch, *images.shape[1:]))  # repeats images if there are fewer
    runners = [open_model("onnxruntime", model, precision) for model, precision in models]
    seconds = [0.0] * len(runners)
    try:
        for runner in runners:
            runner.load().infer(batch_images)
        for _ in range(rounds):
            for i, runner in enumerate(runners):
                start = time.perf_counter()
                runner.infer(batch_images)
                seconds[i] += time.perf_counter() - start
    finally:
        for runner in runners:
            runner.close()
    return [batch * rounds / s for s in seconds]


def calibration_provenance(
    cache: CalibrationCache, runtime: str, mixed: FallbackChoice | None = None
) -> dict[str, object]:
    """The metadata an INT8 file carries: which runtime its Q/DQ layout targets, where
    its ranges came from (so a file separated from its cache still says) and, built
    under a budget, the layers left out of INT8 and that budget; read back by
    ``metadata.export_metadata``."""
    provenance = CalibrationProvenance(
        cache.method,
        cache.images,
        cache.data_fingerprint,
        cache.model_sha256,
        cache.percentile,
        None if mixed is None else dict(mixed.fallback),
        None if mixed is None else mixed.budget.to_dict(),
    )
    return {"precision": Precision.INT8.value, "target_runtime": runtime, "calibration": provenance.to_dict()}


def calibrated_amax(
    config: BuildConfig,
    model: onnx.ModelProto,
    model_sha: str,
    preprocessing: Preprocessing,
    report: BuildReport,
    progress,
) -> tuple[dict[str, CalibrationCache], np.ndarray]:
    """The calibration of the chosen method (and of all methods with --compare-methods),
    from the cache when it matches this model and these images and holds exactly the
    tensors either INT8 layout quantizes, else calibrating."""
    calibration = load_calibration_set(config.calibration_dir, preprocessing, config.calib_images)
    methods, files = config.methods, config.layout
    cached = {m: read_cache(files.scales(m)) for m in methods}
    # the Conv/Gemm inputs (both layouts) and the LRN inputs (onnxruntime's outputs Q/DQ)
    tensors = quantized_activations(model) + output_activations(model)
    valid = {
        m: c
        for m, c in cached.items()
        if c is not None
        and c.model_sha256 == model_sha
        and c.data_fingerprint == calibration.fingerprint
        and c.amax.keys() == set(tensors)
        and (m != "percentile" or c.percentile == config.percentile)
    }
    stale = [m for m in methods if files.scales(m).exists() and m not in valid]
    if stale:
        report.calibration.append(
            f"calibration cache for {', '.join(stale)} is invalid or from another model, image set, percentile or calibration rule: recalibrating"
        )
    if valid.keys() == set(methods) and not config.recalibrate:
        report.calibration.append(
            f"reused calibration cache ({', '.join(methods)}) for {len(calibration.images)} images in {config.calibration_dir}"
        )
        return {m: valid[m] for m in methods}, calibration.images
    statistics = collect_statistics(model, calibration.images, progress=progress, tensors=tensors)
    result = {}
    for method in methods:
        cache = CalibrationCache(
            method,
            model_sha,
            calibration.fingerprint,
            len(calibration.images),
            activation_amax(statistics, method, config.percentile),
            config.percentile if method == "percentile" else None,
        )
        write_cache(files.scales(method), cache)
        result[method] = cache
    report.calibration.append(
        f"calibrated {len(calibration.images)} images from {config.calibration_dir} ({', '.join(methods)}); cache written"
    )
    return result, calibration.images


def build(config: BuildConfig, progress: ProgressReporter | None = None) -> BuildReport:
    progress = progress or SilentProgress()
    config.check()
    fp32_path = Path(config.onnx)
    check_outputs(config)
    model = load_model(fp32_path)
    source = str(fp32_path)
    require_fp32_export(model, source)
    verify_weights(model, source)
    metadata = export_metadata(model, source)
    preprocessing, split, data_source = metadata.preprocessing, metadata.split, metadata.data_source
    report = BuildReport()

    images, labels = held_out_images(
        data_source, split, preprocessing, "val", classes=metadata.classes, class_ids=metadata.class_ids
    )
    report.val_images = len(images)
    with reference_runner(model) as fp32_runner:
        reference = fp32_runner.infer_all(images)
    if not np.isfinite(reference).all():
        raise DeployError(f"{fp32_path} outputs non-finite logits on its val images; re-train and re-export it")

    candidates: list[_Candidate] = []
    if Precision.FP32 in config.precisions:
        candidates.append(_Candidate("fp32", "fp32", model, fp32_path, "fp32", timed=True))
    if Precision.FP16 in config.precisions:
        candidates.append(_Candidate("fp16", "fp16", to_fp16(model), config.layout.onnx(Precision.FP16), "fp16"))
    if Precision.INT8 in config.precisions:
        if config.calib_from_data:
            count = fill_calibration_dir(
                config.calibration_dir, data_source, split, metadata.classes, metadata.class_ids
            )
            report.calibration.append(f"wrote {count} held-out calibration images to {config.calibration_dir}")
        validation = (images, labels, reference)
        candidates += _int8_candidates(config, model, fp32_path, preprocessing, validation, report, progress)

    for candidate in candidates:
        report.accuracy.append(
            score_candidate(
                candidate.name, candidate.precision, candidate.model, images, labels, reference, candidate.path
            )
        )
        if candidate.path is None or candidate.artifact is None:  # evaluated only (--compare-methods)
            continue
        if candidate.path != fp32_path:
            save_onnx(candidate.model, candidate.path)
        if candidate.artifact == ORT_INT8:
            report.onnxruntime_int8 = candidate.path
        else:
            report.onnx[candidate.artifact] = candidate.path
    if config.compare_methods:
        timed = [(c, row) for c, row in zip(candidates, report.accuracy, strict=True) if c.timed]
        speeds = interleaved_throughput(
            [(c.model, c.precision) for c, _ in timed], images, THROUGHPUT_BATCH, THROUGHPUT_ROUNDS
        )
        for (_, row), speed in zip(timed, speeds, strict=True):
            row.throughput_ips = speed

    _build_engines(config, report, progress)
    return report


def _int8_candidates(
    config: BuildConfig,
    model: onnx.ModelProto,
    fp32_path: Path,
    preprocessing: Preprocessing,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    report: BuildReport,
    progress,
) -> list[_Candidate]:
    """Both INT8 layouts per calibration method (the chosen method's to be written,
    with the layers a budget takes out of INT8), and onnxruntime's quantize_static
    with --compare-methods. ``validation``: the val images, labels, FP32 logits."""
    calibrations, calibration_images = calibrated_amax(
        config, model, sha256_file(fp32_path), preprocessing, report, progress
    )
    # row names: "int8 (entropy)" is the TensorRT graph (simulated in float by onnxruntime),
    # "int8 (entropy; onnxruntime graph)" the one onnxruntime runs in integer kernels
    qdq_layouts = (("tensorrt", "int8", ""), ("onnxruntime", ORT_INT8, "; onnxruntime graph"))
    candidates = []
    for method, cache in calibrations.items():
        chosen = method == config.calib_method
        mixed = None
        if chosen and config.budget.active:
            evaluator = Evaluator(model, cache.amax, *validation)
            mixed = report.mixed = choose_fallback(evaluator, config.budget, calibration_images, progress)
        fallback = {} if mixed is None else mixed.fallback
        out = "".join(f"; {layer} {precision}" for layer, precision in fallback.items())
        for runtime, artifact, suffix in qdq_layouts:
            quantized = mixed_int8(model, cache.amax, runtime, fallback)
            set_metadata(quantized, calibration_provenance(cache, runtime, mixed))
            path = config.layout.onnx(artifact) if chosen else None
            candidates.append(
                _Candidate(
                    f"int8 ({method}{suffix}{out})", "int8", quantized, path, artifact, timed=runtime == "onnxruntime"
                )
            )
    if config.compare_methods:
        for activations in ("int8", "uint8"):
            with tempfile.TemporaryDirectory() as workdir:
                baseline = onnxruntime_int8(model, calibration_images, Path(workdir), activations)
            candidates.append(
                _Candidate(
                    f"int8 (onnxruntime quantize_static, {activations} activations)", "int8", baseline, None, timed=True
                )
            )
    return candidates


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write a derived ONNX with the digests of its own weights and metadata, which
    bench and predict verify."""
    seal(model)
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))


def _build_engines(config: BuildConfig, report: BuildReport, progress: ProgressReporter) -> None:
    from ..tensorrt.availability import tensorrt_unavailable_reason
    from ..tensorrt.config import TIMING_CACHE, EngineBuildConfig
    from ..tensorrt.engine import build_engine

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        report.engine_note = f"no TensorRT engine built: {reason}; the ONNX files above are ready for one"
        return
    for precision, onnx_path in report.onnx.items():
        # engines keep the default stem whatever --onnx is called: bench, predict and
        # serve look for engines/alexnet.<precision>.plan
        plan = ArtifactLayout(engines_dir=Path(config.engines_dir)).plan(precision)
        engine_config = EngineBuildConfig(
            precision=precision,
            opt_batch=config.opt_batch,
            max_batch=config.max_batch,
            workspace_gib=config.workspace_gib,
            timing_cache=Path(config.engines_dir) / TIMING_CACHE,
        )
        build_engine(onnx_path, plan, engine_config, progress=progress)
        report.engines[precision] = plan
