"""What a profile run measures: :class:`ProfileConfig`, its defaults and its checks.

Light on purpose (no numpy, onnx or torch): the CLI takes its defaults from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..artifacts import DEFAULT_LAYOUT, ENGINES_DIR
from ..bench.config import check_choices
from ..errors import DeployError

BACKENDS = ("tensorrt", "onnxruntime", "openvino", "torch")
DEFAULT_BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEFAULT_PRECISIONS = ("fp32", "int8")
DEFAULT_RUNS = 5  # profiled calls per row, after one warm-up
DEFAULT_ITERATIONS = 5  # unprofiled end-to-end calls per row, after one warm-up
DEFAULT_LIMIT_SIZE = 2048  # the GEMMs' size; 2048³ is at the rate of 4096³ on 2 cores, 8x sooner
DEFAULT_LIMIT_ROUNDS = 3
MAX_RUNS = 10_000


@dataclass(frozen=True)
class ProfileConfig:
    batches: tuple[int, ...] = (128,)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    runs: int = DEFAULT_RUNS
    iterations: int = DEFAULT_ITERATIONS
    limit_size: int = DEFAULT_LIMIT_SIZE
    limit_rounds: int = DEFAULT_LIMIT_ROUNDS
    onnx: Path = DEFAULT_LAYOUT.export_onnx
    engines_dir: Path = ENGINES_DIR
    checkpoint: Path = DEFAULT_LAYOUT.checkpoint

    def check(self) -> None:
        if not self.batches or any(not isinstance(b, int) or b <= 0 for b in self.batches):
            raise DeployError(f"--batch must be positive integers, got {', '.join(map(str, self.batches)) or 'none'}")
        check_choices(self.backends, BACKENDS, "--backends")
        check_choices(self.precisions, PRECISIONS, "--precisions")
        for option, value in (("--runs", self.runs), ("--iterations", self.iterations)):
            if not 1 <= value <= MAX_RUNS:
                raise DeployError(f"{option} must be at least 1 and at most {MAX_RUNS}, got {value}")
        if not 16 <= self.limit_size <= 16384 or self.limit_rounds < 1:
            raise DeployError(f"the GEMM limits need a size in [16, 16384] and a round, got {self.limit_size}")

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
