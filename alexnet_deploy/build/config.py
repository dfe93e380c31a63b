"""What ``alexnet-deploy build`` is asked to do, with every default stated once and one
``check()`` that rejects a bad option before any file is read (the engine options'
defaults are ``tensorrt.config.EngineBuildConfig``'s). Imports nothing heavy, so the
CLI takes its defaults from here at import time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import CALIBRATION_DIR, DEFAULT_LAYOUT, ENGINES_DIR, PRECISIONS, ArtifactLayout, Precision
from ..choices import CalibrationMethod
from ..errors import DeployError
from ..quantize.budget import Budget
from ..tensorrt.config import EngineBuildConfig

DEFAULT_PERCENTILE = 99.99
THROUGHPUT_BATCH = 128  # --compare-methods times every model at this batch (the bench default)
THROUGHPUT_ROUNDS = 3  # timed calls per model, interleaved across the models


@dataclass
class BuildConfig:
    """``precisions`` and ``calib_method`` take the enums' members or their values."""

    onnx: Path = DEFAULT_LAYOUT.export_onnx
    precisions: tuple[str, ...] = PRECISIONS
    calibration_dir: Path = CALIBRATION_DIR
    calib_from_data: bool = False
    calib_images: int | None = None  # None: up to quantize.images.DEFAULT_CALIBRATION_IMAGES
    calib_method: CalibrationMethod | str = CalibrationMethod.ENTROPY
    percentile: float = DEFAULT_PERCENTILE
    recalibrate: bool = False
    compare_methods: bool = False
    # the INT8 accuracy budget on the held-out val images (quantize.budget): top-1
    # agreement with FP32 (a fraction) and top-1 drop against the labels (points)
    min_agreement: float | None = None
    max_drop: float | None = None
    engines_dir: Path = ENGINES_DIR
    # the TensorRT engine options, handed to the engine builder; their defaults are its
    opt_batch: int = EngineBuildConfig.opt_batch
    max_batch: int = EngineBuildConfig.max_batch
    workspace_gib: float = EngineBuildConfig.workspace_gib

    def check(self) -> None:
        unknown = [str(p) for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise DeployError(
                f"unknown precision {', '.join(unknown) or '(none)'}; choose from {', '.join(PRECISIONS)}"
            )
        if self.calib_method not in CalibrationMethod.values():
            raise DeployError(
                f"unknown --calib-method {self.calib_method!r}; choose one of {', '.join(CalibrationMethod.values())}"
            )
        if not 0 < self.percentile <= 100:
            raise DeployError(f"--percentile must be in (0, 100], got {self.percentile}")
        self.budget.check()
        if self.budget.active and Precision.INT8 not in self.precisions:
            raise DeployError("--min-agreement and --max-drop are budgets for the INT8 build: add --int8")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise DeployError(f"need 1 <= --opt-batch ({self.opt_batch}) <= --max-batch ({self.max_batch})")
        if not (math.isfinite(self.workspace_gib) and self.workspace_gib > 0):
            raise DeployError(f"--workspace-gib must be a positive number of GiB, got {self.workspace_gib}")

    @property
    def layout(self) -> ArtifactLayout:
        """The export's twins beside ``onnx``, the caches in ``calibration_dir``, the
        engines in ``engines_dir``."""
        return ArtifactLayout.from_onnx(
            Path(self.onnx), calibration_dir=Path(self.calibration_dir), engines_dir=Path(self.engines_dir)
        )

    @property
    def budget(self) -> Budget:
        return Budget(self.min_agreement, self.max_drop)

    @property
    def methods(self) -> tuple[str, ...]:
        """The calibration methods this build computes: all with --compare-methods."""
        return CalibrationMethod.values() if self.compare_methods else (str(CalibrationMethod(self.calib_method)),)
