"""What an eval run scores: :class:`EvalConfig`, its defaults and its checks.

Light on purpose (no numpy, onnx or torch): the CLI takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import DEFAULT_LAYOUT, Precision
from ..choices import PredictBackend
from ..errors import DeployError


@dataclass
class EvalConfig:
    data: Path
    onnx: Path = DEFAULT_LAYOUT.export_onnx
    engines: Path = DEFAULT_LAYOUT.engines_dir
    checkpoint: Path = DEFAULT_LAYOUT.checkpoint
    backends: tuple[str, ...] = (
        PredictBackend.ONNXRUNTIME.value,  # first: the reference row the others are compared with
        PredictBackend.OPENVINO.value,
        PredictBackend.TENSORRT.value,
    )
    # None: every precision, a row whose file is not built yet kept as skipped. Named
    # precisions must run: a missing or modified file is then an error.
    precisions: tuple[str, ...] | None = None
    limit: int | None = None  # at most this many images, drawn evenly over the classes

    @property
    def chosen_precisions(self) -> tuple[str, ...]:
        return self.precisions or Precision.values()

    def check(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise DeployError(f"--limit must be a positive number of images, got {self.limit}")
        if not self.backends or self.precisions == ():
            raise DeployError("give at least one --backends and one --precisions value")
