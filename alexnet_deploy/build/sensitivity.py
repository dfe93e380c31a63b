"""``alexnet-deploy sensitivity``: which layer an INT8 build loses its accuracy in.

It calibrates (or reuses the scale cache) exactly as ``build`` does, then runs
:func:`alexnet_deploy.quantize.sensitivity.analyse` on the export's held-out val
images: each layer alone in INT8, all but each layer in INT8, and the all-INT8
graph's per-layer SQNR, ranked most sensitive first. It writes no ONNX; only the
scale cache, like ``build``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..choices import CalibrationMethod, QdqLayout
from ..data.preprocessing import held_out_images
from ..digests import verify_weights
from ..errors import DeployError
from ..files import sha256_file
from ..graph import load_model
from ..metadata import export_metadata, require_fp32_export
from ..progress import ProgressReporter, SilentProgress
from ..quantize.images import fill_calibration_dir
from ..quantize.mixed import LAYOUTS
from ..quantize.sensitivity import Evaluator, SensitivityReport, analyse
from ..runners.registry import reference_runner
from .config import BuildConfig
from .run import BuildReport, calibrated_amax, check_outputs


@dataclass
class SensitivityConfig:
    """What ``sensitivity`` measures; the calibration options mean what they mean for
    ``build`` (and default the same)."""

    onnx: Path = BuildConfig.onnx
    calibration_dir: Path = BuildConfig.calibration_dir
    calib_from_data: bool = False
    calib_images: int | None = None
    calib_method: CalibrationMethod | str = BuildConfig.calib_method
    percentile: float = BuildConfig.percentile
    layout: QdqLayout | str = QdqLayout.BOTH

    @property
    def build_config(self) -> BuildConfig:
        """The INT8 build whose calibration this measures."""
        return BuildConfig(
            onnx=self.onnx,
            precisions=("int8",),
            calibration_dir=self.calibration_dir,
            calib_from_data=self.calib_from_data,
            calib_images=self.calib_images,
            calib_method=self.calib_method,
            percentile=self.percentile,
        )

    @property
    def layouts(self) -> tuple[str, ...]:
        return LAYOUTS if self.layout == QdqLayout.BOTH else (str(QdqLayout(self.layout)),)

    def check(self) -> None:
        if self.layout not in QdqLayout.values():
            raise DeployError(f"unknown --layout {self.layout!r}; choose one of {', '.join(QdqLayout.values())}")
        self.build_config.check()


def run_sensitivity(config: SensitivityConfig, progress: ProgressReporter | None = None) -> SensitivityReport:
    progress = progress or SilentProgress()
    config.check()
    build_config = config.build_config
    check_outputs(build_config)  # the scale cache it may write
    path = Path(config.onnx)
    model = load_model(path)
    require_fp32_export(model, str(path))
    verify_weights(model, str(path))
    metadata = export_metadata(model, str(path))
    images, labels = held_out_images(
        metadata.data_source,
        metadata.split,
        metadata.preprocessing,
        "val",
        classes=metadata.classes,
        class_ids=metadata.class_ids,
    )
    with reference_runner(model) as fp32_runner:
        reference = fp32_runner.infer_all(images)
    if not np.isfinite(reference).all():
        raise DeployError(f"{path} outputs non-finite logits on its val images; re-train and re-export it")
    if config.calib_from_data:
        fill_calibration_dir(
            config.calibration_dir, metadata.data_source, metadata.split, metadata.classes, metadata.class_ids
        )
    notes = BuildReport()
    caches, _ = calibrated_amax(build_config, model, sha256_file(path), metadata.preprocessing, notes, progress)
    cache = caches[str(CalibrationMethod(config.calib_method))]
    report = analyse(Evaluator(model, cache.amax, images, labels, reference), config.layouts, progress)
    report.method, report.calibration_images, report.notes = cache.method, cache.images, notes.calibration
    return report
