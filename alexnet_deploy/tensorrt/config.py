"""``EngineBuildConfig``: what a TensorRT engine build needs besides its files, with the
one statement of the build's defaults (the CLI and the build stage take them from here).

Light on purpose (standard library and ``artifacts``/``errors`` only), so the CLI can
read the defaults at import time without loading TensorRT, onnx or numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..artifacts import ENGINES_DIR, PRECISIONS, Precision
from ..errors import DeployError

TIMING_CACHE = "timing.cache"  # in the engines folder, shared by every build there


@dataclass
class EngineBuildConfig:
    """What ``build_engine`` needs besides the files. Defaults match the bench: opt 128, max 256."""

    precision: Precision | str | None = None  # None: read from the ONNX (Q/DQ -> int8, FP16 tensors -> fp16)
    min_batch: int = 1
    opt_batch: int = 128
    max_batch: int = 256
    workspace_gib: float = 4.0  # TensorRT's workspace memory pool limit
    timing_cache: Path | None = ENGINES_DIR / TIMING_CACHE
    tf32: bool = False  # let FP32 convolutions use TF32 (faster, ~1e-3 relative error)
    optimization_level: int | None = None  # builder optimization level 0-5; None: TensorRT's default

    def check(self) -> None:
        """Raise DeployError for settings no build can use; a plain-string precision
        ("fp16") becomes its ``Precision``."""
        if self.precision is not None:
            try:
                self.precision = Precision(self.precision)
            except ValueError:
                raise DeployError(
                    f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
                ) from None
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise DeployError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got min {self.min_batch}, "
                f"opt (--opt-batch) {self.opt_batch}, max (--max-batch) {self.max_batch}"
            )
        if self.workspace_gib <= 0:
            raise DeployError(f"workspace must be positive, got {self.workspace_gib} GiB")
