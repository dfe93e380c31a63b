"""The timed loop (trtexec-style warm-up, then iterations or a duration) and what it
measures: per-iteration latency percentiles, throughput, and the harness's own cost
against bare engine calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..runners.base import Runner, StageTiming
from .config import DEFAULT_ITERATIONS, DEFAULT_WARMUP

HARNESS_TOLERANCE = 0.02  # the bench loop may cost at most 2% against bare session.run


@dataclass
class Timing:
    """What a timed loop measured: per-iteration latency, the loop's wall time, the
    runner's stage timings where it reports them, and the logits of the first pass
    over the batches (parity is judged on the very outputs that were timed)."""

    batch: int
    latencies_ms: list[float]
    wall_s: float
    stages: list[StageTiming] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput_ips(self) -> float:
        return self.batch * self.iterations / self.wall_s


def time_iterations(
    runner: Runner,
    batches: Sequence[np.ndarray],
    warmup: int = DEFAULT_WARMUP,
    iterations: int | None = DEFAULT_ITERATIONS,
    duration_s: float | None = None,
) -> Timing:
    """trtexec-style: ``warmup`` untimed calls, then timed calls until ``iterations``
    were made or ``duration_s`` passed (at least one). Input ``i`` is ``batches[i % n]``."""
    if iterations is None and duration_s is None:
        raise ValueError("time_iterations needs iterations or duration_s")
    for i in range(warmup):
        runner.infer(batches[i % len(batches)])
    latencies: list[float] = []
    stages: list[StageTiming] = []
    outputs: list[np.ndarray] = []
    clock = time.perf_counter
    begin = clock()
    while True:
        start = clock()
        logits = runner.infer(batches[len(latencies) % len(batches)])
        end = clock()
        latencies.append((end - start) * 1e3)
        if runner.last_timing is not None:
            stages.append(runner.last_timing)
        if len(outputs) < len(batches):
            outputs.append(logits)
        if len(latencies) == iterations or (duration_s is not None and end - begin >= duration_s):
            break
    return Timing(len(batches[0]), latencies, clock() - begin, stages, outputs)


@dataclass(frozen=True)
class HarnessCheck:
    """The bench loop against bare ``session.run`` on one onnxruntime session and the
    same inputs, as paired per-iteration wall times (ms).

    ``ratio`` is the median over iterations of bare time / bench time: 1.0 means the
    harness costs nothing, below ``1 - HARNESS_TOLERANCE`` it would be costing speed.
    The median of pairs, not the ratio of totals, because one iteration of a shared
    2-core machine jitters by a few percent and now and then spikes by ten; pairing
    cancels drift, the median ignores the spikes. Totals are reported as throughputs."""

    batch: int
    bench_ms: tuple[float, ...]
    bare_ms: tuple[float, ...]

    @property
    def iterations(self) -> int:
        return len(self.bench_ms)

    @property
    def bench_ips(self) -> float:
        return self.batch * self.iterations / (sum(self.bench_ms) / 1e3)

    @property
    def bare_ips(self) -> float:
        return self.batch * self.iterations / (sum(self.bare_ms) / 1e3)

    @property
    def ratio(self) -> float:
        return float(np.median([bare / bench for bench, bare in zip(self.bench_ms, self.bare_ms, strict=True)]))

    @property
    def holds(self) -> bool:
        return self.ratio >= 1 - HARNESS_TOLERANCE

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "iterations": self.iterations,
            "bench_ips": self.bench_ips,
            "bare_ips": self.bare_ips,
            "ratio": self.ratio,
            "tolerance": HARNESS_TOLERANCE,
            "holds": self.holds,
            "bench_ms": list(self.bench_ms),
            "bare_ms": list(self.bare_ms),
        }

    def summary(self) -> str:
        verdict = "holds" if self.holds else "FAILS"
        return (
            f"harness overhead at batch {self.batch}, {self.iterations} interleaved pairs: "
            f"bench loop {self.bench_ips:.2f} img/s, bare session.run {self.bare_ips:.2f} img/s; "
            f"median bare/bench time {self.ratio:.3f} (target >= {1 - HARNESS_TOLERANCE:.2f}: {verdict})"
        )


def harness_overhead(
    runner: Runner, bare_call: Callable[[np.ndarray], object], batches: Sequence[np.ndarray], iterations: int
) -> HarnessCheck:
    """Alternate one bench-loop iteration (:func:`time_iterations` through
    ``runner.infer``) with one bare call of the runner's engine (``bare_call``: for
    onnxruntime, ``session.run`` and nothing else) on the same input, ``iterations``
    times, switching which goes first each round so neither always finds the input
    cache-warm. Interleaving call by call means a busy machine slows both alike."""
    bench_ms: list[float] = []
    bare_ms: list[float] = []
    for i in range(iterations):
        batch = batches[i % len(batches)]
        for bench_turn in (True, False) if i % 2 == 0 else (False, True):
            if bench_turn:
                bench_ms.append(time_iterations(runner, [batch], warmup=0, iterations=1).wall_s * 1e3)
            else:
                start = time.perf_counter()
                bare_call(batch)
                bare_ms.append((time.perf_counter() - start) * 1e3)
    return HarnessCheck(len(batches[0]), tuple(bench_ms), tuple(bare_ms))
