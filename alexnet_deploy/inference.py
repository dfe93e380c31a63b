"""The one interface every inference backend implements, in the spirit of
polygraphy's BaseRunner: construction is cheap and does nothing; ``load`` acquires
the session/engine; ``infer`` maps a float32 NCHW batch to float32 logits; ``close``
releases everything. Bench, compare and accuracy code only ever see this class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class StageTiming:
    """Where one ``infer`` call spent its time, for runners that can tell (GPU ones,
    measured with CUDA events): host-to-device copy, compute, device-to-host copy."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float


@dataclass(frozen=True)
class OpTime:
    """One op as a backend's own profiler reports it: its name (the backend's, after
    fusing), its type, its mean time per ``infer`` call, the precision it ran in where
    the profiler says, and the graph's nodes fused into it where the backend lists them."""

    name: str
    type: str
    ms: float
    precision: str = ""
    fused: tuple[str, ...] = ()


def median_per_call(times: list[float], calls: int) -> float:
    """An op's time per call from the times it reported over ``calls`` profiled calls:
    the median, counting a call in which it did not run as 0 (a load spike in one call
    then moves nothing)."""
    padded = sorted(times + [0.0] * max(0, calls - len(times)))
    middle = len(padded) // 2
    return padded[middle] if len(padded) % 2 else (padded[middle - 1] + padded[middle]) / 2


class Runner(ABC):
    backend: str = "?"  # "onnxruntime", "tensorrt", "torch"
    # the backend's own per-op profiler, named for the reader; None: it has none here
    profiler: str | None = None
    profiler_leaves_out = "whatever the runner does outside the profiled ops"
    # the backend's own call and nothing around it, where it has one (onnxruntime's
    # session.run): the baseline bench's harness check times ``infer`` against
    run_bare: Callable[[np.ndarray], object] | None = None

    def __init__(self, precision: str, device: str) -> None:
        self.precision = precision  # "fp32", "fp16", "int8"
        self.device = device  # "cpu", "cuda", or a GPU name once loaded
        self.max_batch: int | None = None  # None: any batch size
        self.last_timing: StageTiming | None = None  # set by infer() where measurable
        self.notes: list[str] = []  # how it actually ran, where that differs from what was asked
        self.is_loaded = False

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision}"

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, images: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:  # noqa: B027 -- an optional hook, not an abstract method
        """Release what ``_load`` acquired; backends holding nothing extra keep this."""

    def load(self) -> Runner:
        if not self.is_loaded:
            self._load()
            self.is_loaded = True
        return self

    def infer(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, 3, H, W) -> float32 (N, classes) logits."""
        if not self.is_loaded:
            raise RuntimeError(f"{self.name}: call load() before infer()")
        if self.max_batch is not None and len(images) > self.max_batch:
            from .errors import DeployError

            raise DeployError(f"{self.name}: batch {len(images)} exceeds this runner's maximum {self.max_batch}")
        return self._infer(images)

    def infer_all(
        self, images: np.ndarray, chunk: int = 64, on_chunk: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Logits of any number of images, inferred ``chunk`` at a time (for one-off
        reference and accuracy passes, not for timing); ``on_chunk`` hears how many
        images each call took (a progress bar)."""
        outputs = []
        for start in range(0, len(images), chunk):
            outputs.append(self.infer(images[start : start + chunk]))
            if on_chunk is not None:
                on_chunk(len(outputs[-1]))
        return np.concatenate(outputs)

    def profile(self, images: np.ndarray, runs: int) -> list[OpTime]:
        """Per-op times of ``runs`` calls on ``images`` (after one untimed call), from the
        backend's own profiler in a run of its own (trtexec's ``--separateProfileRun``):
        profiling slows a backend down, so ``infer`` stays unprofiled. Needs ``load()``."""
        from .errors import BackendUnavailable

        raise BackendUnavailable(f"the {self.backend} runner has no per-layer profiler")

    def close(self) -> None:
        if self.is_loaded:
            self._close()
            self.is_loaded = False

    def __enter__(self) -> Runner:
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()
