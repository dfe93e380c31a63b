"""What a bench run measures: :class:`BenchConfig`, its defaults and its checks.

Light on purpose (no numpy, onnx or torch): the CLI takes its defaults from here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..artifacts import DEFAULT_LAYOUT, ENGINES_DIR, ArtifactLayout
from ..choices import BenchBackend, BenchPrecision, Choice, DeviceChoice
from ..errors import DeployError

BACKENDS = BenchBackend.values()
# torch-compile is opt-in: on 2 CPU cores it compiles for ~30 s per precision, and runs
# 1.1x eager torch at batch 128 (docs/bench.md), which the main job's budget cannot spare.
DEFAULT_BACKENDS = tuple(b for b in BACKENDS if b != BenchBackend.TORCH_COMPILE)
PRECISIONS = BenchPrecision.values()
# Without --iterations or --duration a row keeps timing windows until the stability rule
# below is met, once it has DEFAULT_MIN_ITERATIONS, or until DEFAULT_ROW_SECONDS: full
# AlexNet at batch 128 runs ~1-2 s an iteration on 2 CPU cores, and the main job's
# ten-odd rows must fit its time budget. DEFAULT_ITERATIONS is the timed loop's own
# default count, for callers that give neither.
DEFAULT_ITERATIONS = 10
DEFAULT_ROW_SECONDS = 8.0
DEFAULT_MIN_ITERATIONS = 3
DEFAULT_WARMUP = 2
# The stability rule (perf_analyzer's -s, whose default is also 10%): a row bounded by
# time keeps timing windows of DEFAULT_WINDOW_S until its last three agree within this
# tolerance, or its time runs out; the row then says "unstable (±x%)".
DEFAULT_STABILITY = 0.10
DEFAULT_WINDOW_S = 1.0
DEFAULT_MAX_IMAGES = 512
MAX_DURATION_S = 3600.0  # per row and batch: a bound, so a typo cannot run for ever
MAX_ITERATIONS = 1_000_000


def check_choices(chosen: Sequence[str], allowed: Sequence[str], option: str) -> None:
    """``chosen`` must be a non-empty subset of ``allowed`` without repeats."""
    unknown = [c for c in chosen if c not in allowed]
    if unknown:
        what = option.lstrip("-").rstrip("s")  # --backends -> backend
        raise DeployError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")
    if not chosen:
        raise DeployError(f"{option} is empty; choose from {', '.join(allowed)}")
    if len(set(chosen)) != len(chosen):
        raise DeployError(f"{option} lists a value twice: {','.join(chosen)}")


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (128,)
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    # None: every precision, listing those not built yet as skipped. Named precisions
    # were asked for on purpose, so their missing ONNX or engine is an error instead.
    precisions: tuple[str, ...] | None = None
    iterations: int | None = None  # None and no duration: the stability rule within DEFAULT_ROW_SECONDS
    duration_s: float | None = None
    warmup: int = DEFAULT_WARMUP
    cuda_graphs: bool = False
    onnx: Path = DEFAULT_LAYOUT.export_onnx  # the FP32 export (the reference); its twins sit beside it
    engines_dir: Path = ENGINES_DIR
    checkpoint: Path = DEFAULT_LAYOUT.checkpoint
    device: DeviceChoice | str = DeviceChoice.AUTO
    max_images: int = DEFAULT_MAX_IMAGES
    stability: float = DEFAULT_STABILITY  # 0: no early stop (the spread is still reported)
    window_s: float = DEFAULT_WINDOW_S

    @property
    def layout(self) -> ArtifactLayout:
        return ArtifactLayout.from_onnx(self.onnx, engines_dir=self.engines_dir)

    @property
    def chosen_precisions(self) -> tuple[str, ...]:
        return self.precisions or PRECISIONS

    @property
    def defaults_bound_rows(self) -> bool:
        """Neither --iterations nor --duration: rows run until stable or DEFAULT_ROW_SECONDS."""
        return self.iterations is None and self.duration_s is None

    @property
    def timed_iterations(self) -> int | None:
        """None where the stability rule ends the row (defaults, or --duration alone)."""
        return self.iterations

    @property
    def timed_duration_s(self) -> float | None:
        return DEFAULT_ROW_SECONDS if self.defaults_bound_rows else self.duration_s

    @property
    def min_iterations(self) -> int:
        """The fewest timed iterations a duration may stop a row at."""
        return DEFAULT_MIN_ITERATIONS if self.defaults_bound_rows else 1

    def check(self) -> None:
        if not self.batches or any(not isinstance(b, int) or b <= 0 for b in self.batches):
            raise DeployError(f"--batch must be positive integers, got {', '.join(map(str, self.batches)) or 'none'}")
        check_choices(self.backends, BACKENDS, "--backends")
        check_choices(self.chosen_precisions, PRECISIONS, "--precisions")
        if self.iterations is not None and self.duration_s is not None:
            raise DeployError("give --iterations or --duration, not both")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise DeployError(f"--iterations must be at least 1 and at most {MAX_ITERATIONS}, got {self.iterations}")
        if self.duration_s is not None and not 0 < self.duration_s <= MAX_DURATION_S:
            raise DeployError(f"--duration must be positive seconds, at most {MAX_DURATION_S:g}, got {self.duration_s}")
        if not 0 <= self.warmup <= MAX_ITERATIONS:
            raise DeployError(f"--warmup must be 0 or more and at most {MAX_ITERATIONS}, got {self.warmup}")
        if self.device not in DeviceChoice.values():
            raise DeployError(f"unknown device {str(self.device)!r}; choose one of {', '.join(DeviceChoice.values())}")
        if not 0 <= self.stability < 1:
            raise DeployError(f"--stability must be a fraction in [0, 1), got {self.stability}")
        if not 0 < self.window_s <= MAX_DURATION_S:
            raise DeployError(f"--window must be positive seconds, got {self.window_s}")
        if self.max_images < 1:
            raise DeployError(f"--max-images must be at least 1, got {self.max_images}")

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, (Path, Choice)) else v for k, v in asdict(self).items()}
