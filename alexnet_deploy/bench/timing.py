"""The timed loop (trtexec-style warm-up, then iterations or a duration) and what it
measures: per-iteration latency percentiles, throughput, its stability over timing
windows (perf_analyzer's ``-s``), and the harness's own cost against bare engine calls."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..inference import Runner, StageTiming
from .config import DEFAULT_ITERATIONS, DEFAULT_STABILITY, DEFAULT_WARMUP, DEFAULT_WINDOW_S

HARNESS_TOLERANCE = 0.02  # the bench loop may cost at most 2% against bare session.run
# Pairs of the harness check: 6 is the fewest with a 95% interval for the median (the
# range of 6 covers it with 97%); 12 bounds its cost (about 30 s at batch 128 on 2 cores).
# A shared 2-core machine's pair ratios spread by ~±3%, which 12 pairs may not settle
# against a 2% tolerance: the check then says "inconclusive", as it should.
HARNESS_MIN_PAIRS, HARNESS_MAX_PAIRS = 6, 12


STABLE_WINDOWS = 3  # perf_analyzer judges the last three measurement windows


@dataclass(frozen=True)
class Stability:
    """The throughput of each timing window of a row, judged as perf_analyzer's ``-s``
    judges its measurements: stable when the last three windows' fastest is within
    ``tolerance`` of their slowest. ``spread`` is half their range over their mean (the
    ``±x%`` a reader adds to the row's figure); None with fewer than three windows."""

    windows_ips: tuple[float, ...]
    tolerance: float = DEFAULT_STABILITY

    @property
    def judged(self) -> tuple[float, ...]:
        return self.windows_ips[-STABLE_WINDOWS:] if len(self.windows_ips) >= STABLE_WINDOWS else ()

    @property
    def stable(self) -> bool | None:
        judged = self.judged
        return None if not judged else max(judged) <= min(judged) * (1 + self.tolerance)

    @property
    def spread(self) -> float | None:
        judged = self.judged
        return None if not judged else (max(judged) - min(judged)) / 2 / (sum(judged) / len(judged))

    def note(self) -> str | None:
        """The row's note when its windows never agreed."""
        return None if self.stable is not False else f"unstable (±{self.spread:.1%} over the last three windows)"

    def to_dict(self) -> dict:
        return {
            "windows_ips": list(self.windows_ips),
            "tolerance": self.tolerance,
            "stable": self.stable,
            "spread": self.spread,
        }


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
    stability: Stability = field(default_factory=lambda: Stability(()))

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
    min_iterations: int = 1,
    window_s: float = DEFAULT_WINDOW_S,
    tolerance: float = DEFAULT_STABILITY,
) -> Timing:
    """trtexec-style: ``warmup`` untimed calls, then timed calls until ``iterations``
    were made or ``duration_s`` passed with at least ``min_iterations`` made. Input ``i``
    is ``batches[i % n]``.

    The timed calls fall into windows of at least ``window_s`` (a window closes after
    the call that fills it). A row bounded by ``duration_s`` alone also stops as soon
    as its last three windows agree within ``tolerance`` (perf_analyzer's stability
    rule; ``tolerance`` 0 never stops early); a row of a fixed count runs it all. The
    last, partial window counts as one."""
    if iterations is None and duration_s is None:
        raise ValueError("time_iterations needs iterations or duration_s")
    for i in range(warmup):
        runner.infer(batches[i % len(batches)])
    latencies: list[float] = []
    stages: list[StageTiming] = []
    outputs: list[np.ndarray] = []
    clock = time.perf_counter
    begin = clock()
    windows: list[float] = []
    window_start, window_first = begin, 0
    while True:
        start = clock()
        logits = runner.infer(batches[len(latencies) % len(batches)])
        end = clock()
        latencies.append((end - start) * 1e3)
        if runner.last_timing is not None:
            stages.append(runner.last_timing)
        if len(outputs) < len(batches):
            outputs.append(logits)
        out_of_time = duration_s is not None and end - begin >= duration_s and len(latencies) >= min_iterations
        if end - window_start >= window_s:
            windows.append(len(batches[0]) * (len(latencies) - window_first) / (end - window_start))
            window_start, window_first = end, len(latencies)
            settled = Stability(tuple(windows), tolerance).stable and tolerance > 0 and iterations is None
            if settled and len(latencies) >= min_iterations:
                break
        if len(latencies) == iterations or out_of_time:
            break
    wall = clock() - begin
    if len(latencies) > window_first:  # the last, partial window
        windows.append(len(batches[0]) * (len(latencies) - window_first) / (begin + wall - window_start))
    return Timing(len(batches[0]), latencies, wall, stages, outputs, Stability(tuple(windows), tolerance))


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free ``confidence`` interval for the median of ``values``: the
    order statistics [x_(k), x_(n-k+1)] with the largest k whose binomial(n, 1/2) tails
    leave at most 1 - confidence outside. None when n is too small for any (n < 6 at 95%).

    Order statistics, not a normal approximation: per-call times on a shared 2-core
    machine are skewed, with rare large spikes."""
    ordered = sorted(values)
    n = len(ordered)
    outside, k = 0.0, 0
    while k < n // 2 and 2 * (outside + math.comb(n, k) / 2**n) <= 1 - confidence:
        outside += math.comb(n, k) / 2**n
        k += 1
    return None if k == 0 else (ordered[k - 1], ordered[n - k])


@dataclass(frozen=True)
class HarnessCheck:
    """The bench loop against bare ``session.run`` on one onnxruntime session and the
    same inputs, as paired per-iteration wall times (ms).

    ``ratio`` is the median over pairs of bare time / bench time: 1.0 means the harness
    costs nothing, below ``1 - HARNESS_TOLERANCE`` it would be costing speed. The median
    of pairs, not the ratio of totals, because one call on a shared 2-core machine
    jitters by a few percent and now and then spikes by ten; pairing cancels drift, the
    median ignores the spikes.

    The verdict comes with the 95% interval of that median: ``holds`` when the whole
    interval clears the target, ``FAILS`` when all of it falls short, ``inconclusive``
    (with the interval) when the noise straddles the target. A single ratio near the
    target flips with noise (0.979 "FAILS" and 0.991 "holds" in two runs of one
    machine), which is no verdict at all. Totals are reported as throughputs."""

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
    def pair_ratios(self) -> list[float]:
        return [bare / bench for bench, bare in zip(self.bench_ms, self.bare_ms, strict=True)]

    @property
    def ratio(self) -> float:
        return float(np.median(self.pair_ratios))

    @property
    def interval(self) -> tuple[float, float] | None:
        return median_interval(self.pair_ratios)

    @property
    def verdict(self) -> str:
        target = 1 - HARNESS_TOLERANCE
        interval = self.interval
        if interval is not None and interval[0] >= target:
            return "holds"
        if interval is not None and interval[1] < target:
            return "FAILS"
        return "inconclusive"

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "iterations": self.iterations,
            "bench_ips": self.bench_ips,
            "bare_ips": self.bare_ips,
            "ratio": self.ratio,
            "interval95": list(self.interval) if self.interval else None,
            "tolerance": HARNESS_TOLERANCE,
            "verdict": self.verdict,
            "holds": self.holds,
            "bench_ms": list(self.bench_ms),
            "bare_ms": list(self.bare_ms),
        }

    def summary(self) -> str:
        interval = self.interval
        spread = (
            f", 95% interval {interval[0]:.3f}-{interval[1]:.3f}" if interval else ", too few pairs for an interval"
        )
        return (
            f"harness overhead at batch {self.batch}, {self.iterations} interleaved pairs: "
            f"bench loop {self.bench_ips:.2f} img/s, bare session.run {self.bare_ips:.2f} img/s; "
            f"median bare/bench time {self.ratio:.3f}{spread} (target >= {1 - HARNESS_TOLERANCE:.2f}: {self.verdict})"
        )


def harness_overhead(
    runner: Runner,
    bare_call: Callable[[np.ndarray], object],
    batches: Sequence[np.ndarray],
    min_pairs: int = HARNESS_MIN_PAIRS,
    max_pairs: int = HARNESS_MAX_PAIRS,
) -> HarnessCheck:
    """Alternate one bench-loop iteration (:func:`time_iterations` through
    ``runner.infer``) with one bare call of the runner's engine (``bare_call``: for
    onnxruntime, ``session.run`` and nothing else) on the same input, switching which
    goes first each round so neither always finds the input cache-warm. Interleaving call
    by call means a busy machine slows both alike.

    At least ``min_pairs`` pairs, then more until the verdict is no longer inconclusive
    or ``max_pairs`` were timed: a quiet machine settles it in a few pairs, a noisy one
    gets the pairs its spread needs (or an honest "inconclusive")."""
    bench_ms: list[float] = []
    bare_ms: list[float] = []
    for i in range(max_pairs):
        batch = batches[i % len(batches)]
        for bench_turn in (True, False) if i % 2 == 0 else (False, True):
            if bench_turn:
                bench_ms.append(time_iterations(runner, [batch], warmup=0, iterations=1).wall_s * 1e3)
            else:
                start = time.perf_counter()
                bare_call(batch)
                bare_ms.append((time.perf_counter() - start) * 1e3)
        check = HarnessCheck(len(batches[0]), tuple(bench_ms), tuple(bare_ms))
        if len(bench_ms) >= min_pairs and check.verdict != "inconclusive":
            break
    return check
