"""Benchmark every inference backend, at every precision, against the onnxruntime FP32
reference — the last step of the pipeline (``alexnet-deploy bench``).

Conventions, and where they come from:

* trtexec: warm-up iterations, then timed iterations (a count or a duration); throughput
  is images over the wall time of the timed loop; latency is reported as p50/p90/p99 and
  mean of the per-iteration times; GPU runners also report compute time (CUDA events)
  apart from the host<->device copies.
* Ultralytics' benchmark: one table across formats (here backends x precisions) with
  accuracy next to speed, so a fast row that lost accuracy cannot hide.
* Inputs are the checkpoint's held-out val images (never zeros), cut into batches that
  are rotated across iterations, so no backend is timed on one cache-hot buffer.
* Parity: every row's logits on those same images against onnxruntime FP32 on CPU (the
  reference): max |Δ logits|, top-1 agreement, and top-1/top-5 against the labels.
* Honesty about the harness itself: beside the onnxruntime FP32 row, the same session
  runs the same inputs through bare ``session.run`` calls, interleaved call by call
  with the bench loop so machine load hits both alike; the two throughputs must agree
  within 2% (:class:`HarnessCheck`).

INT8 on onnxruntime is two rows: ``int8`` times the onnxruntime-targeted graph
(``alexnet.int8-ort.onnx``, integer kernels); ``int8-sim`` runs the TensorRT-targeted
graph (``alexnet.int8.onnx``), whose Q/DQ onnxruntime can only simulate in float — its
parity is the INT8 engine's graph's, its speed is no INT8 figure.

A backend or precision that cannot run here (no TensorRT, no GPU, an FP16 ONNX not built
yet, torch at INT8, bf16 without a bf16-capable CPU) is a row that says "skipped" and why; its numbers stay empty. Nothing
here prints: the CLI renders the :class:`BenchReport`.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from .checkpoint import Checkpoint, load_checkpoint
from .data import held_out_images
from .errors import DeployError
from .artifacts import ORT_INT8, ArtifactLayout
from .metrics import FP32_TOLERANCE, parity
from .files import atomic_output, check_png_path, sha256_file
from .graph import INPUT_NAME, OUTPUT_NAME, export_metadata, load_model, read_metadata, verify_weights
from .progress import ProgressReporter, SilentProgress
from .errors import BackendUnavailable
from .runners.base import Runner, StageTiming

BACKENDS = ("tensorrt", "onnxruntime", "torch", "torch-compile")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
ONNX_PRECISIONS = ("fp32", "fp16", "int8")  # those `build` writes as ONNX; bf16 is torch's alone
SIMULATED_INT8 = "int8-sim"  # the row of the TensorRT-targeted INT8 graph run by onnxruntime
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_ITERATIONS = 10  # full AlexNet at batch 128 runs ~1-2 s an iteration on 2 CPU cores
DEFAULT_WARMUP = 2
DEFAULT_MAX_IMAGES = 512
HARNESS_TOLERANCE = 0.02  # the bench loop may cost at most 2% against bare session.run
PERCENTILES = (50, 90, 99)
MAX_DURATION_S = 3600.0  # per row and batch: a bound, so a typo cannot run for ever
MAX_ITERATIONS = 1_000_000
# Peak memory per image of batch, as a multiple of one preprocessed input image
# (3 x crop x crop float32): the rotated input copies, onnxruntime's activations and
# the logits. Measured: see docs/bench.md ("Memory").
MEMORY_PER_INPUT_BYTES = 12


# ------------------------------------------------------------------------ options


def parse_batches(text: str) -> tuple[int, ...]:
    """``"128"`` or ``"1,8,32,128"`` -> positive batch sizes, in the given order."""
    batches = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise DeployError(f"--batch takes positive integers such as 128 or 1,8,32,128; got {part or text!r}")
        batches.append(int(part))
    if len(set(batches)) != len(batches):
        raise DeployError(f"--batch lists a size twice: {text!r}")
    return tuple(batches)


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


def parse_choices(text: str, allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """A comma-separated subset of ``allowed``, order kept."""
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    check_choices(chosen, allowed, option)
    return chosen


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (128,)
    backends: tuple[str, ...] = BACKENDS
    # None: every precision, listing those not built yet as skipped. Named precisions
    # were asked for on purpose, so their missing ONNX or engine is an error instead.
    precisions: tuple[str, ...] | None = None
    iterations: int | None = None  # None and no duration: DEFAULT_ITERATIONS
    duration_s: float | None = None
    warmup: int = DEFAULT_WARMUP
    cuda_graphs: bool = False
    onnx_dir: Path = Path("export")
    engines_dir: Path = Path("engines")
    checkpoint: Path = Path("export/alexnet.pt")
    device: str = "auto"
    max_images: int = DEFAULT_MAX_IMAGES

    @property
    def chosen_precisions(self) -> tuple[str, ...]:
        return self.precisions or PRECISIONS

    @property
    def timed_iterations(self) -> int | None:
        return self.iterations if self.iterations is not None or self.duration_s is not None else DEFAULT_ITERATIONS

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
        if self.device not in DEVICES:
            raise DeployError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.max_images < 1:
            raise DeployError(f"--max-images must be at least 1, got {self.max_images}")

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


# --------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between order statistics
    (numpy's default method): rank ``(n - 1) * q / 100`` in the sorted samples."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencyStats:
    """Per-iteration latency in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> LatencyStats:
        p50, p90, p99 = (percentile(samples_ms, q) for q in PERCENTILES)
        return cls(p50, p90, p99, sum(samples_ms) / len(samples_ms))


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
        return percentile([bare / bench for bench, bare in zip(self.bench_ms, self.bare_ms)], 50)

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


def harness_overhead(runner: Runner, session, batches: Sequence[np.ndarray], iterations: int) -> HarnessCheck:
    """Alternate one bench-loop iteration (:func:`time_iterations` through
    ``runner.infer``) with one bare ``session.run`` on the same input, ``iterations``
    times, switching which goes first each round so neither always finds the input
    cache-warm. Interleaving call by call means a busy machine slows both alike."""
    feeds = [{INPUT_NAME: b} for b in batches]
    bench_ms, bare_ms = [], []
    for i in range(iterations):
        batch = batches[i % len(batches)]
        for bench_turn in (True, False) if i % 2 == 0 else (False, True):
            if bench_turn:
                bench_ms.append(time_iterations(runner, [batch], warmup=0, iterations=1).wall_s * 1e3)
            else:
                start = time.perf_counter()
                session.run([OUTPUT_NAME], feeds[i % len(feeds)])
                bare_ms.append((time.perf_counter() - start) * 1e3)
    return HarnessCheck(len(batches[0]), tuple(bench_ms), tuple(bare_ms))


# ------------------------------------------------------------------------- inputs


@dataclass
class Rotation:
    """A pool of images cut into ``batch``-sized inputs that together cover it:
    contiguous views where they fit, one wrapped copy at the end."""

    batches: list[np.ndarray]
    indices: list[np.ndarray]  # the pool index of each image of each batch

    @classmethod
    def of(cls, pool: np.ndarray, batch: int) -> Rotation:
        count = math.ceil(len(pool) / batch)
        indices = [(r * batch + np.arange(batch)) % len(pool) for r in range(count)]
        batches = [
            pool[idx[0] : idx[0] + batch] if idx[-1] == idx[0] + batch - 1 else np.ascontiguousarray(pool[idx])
            for idx in indices
        ]
        return cls(batches, indices)

    def per_image(self, outputs: Sequence[np.ndarray], pool_size: int) -> np.ndarray:
        """Outputs of every batch, reassembled into one row per pool image."""
        result = np.empty((pool_size, outputs[0].shape[1]), np.float32)
        for idx, logits in zip(self.indices, outputs):
            result[idx] = logits
        return result


# ------------------------------------------------------------------------ results


@dataclass
class BenchRow:
    """One backend x precision x batch. Keys are stable; what was not measured is None."""

    backend: str
    precision: str
    device: str
    batch: int
    throughput_ips: float | None = None
    latency_ms: LatencyStats | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    top1: float | None = None
    top5: float | None = None
    gpu_compute_ms: float | None = None  # median of the runner's CUDA-event stage times
    h2d_ms: float | None = None
    d2h_ms: float | None = None
    iterations: int | None = None
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


TABLE_COLUMNS = ("backend", "precision", "device", "batch", "img/s", "p50 ms", "p90 ms", "p99 ms", "mean ms")
GPU_COLUMNS = ("GPU compute ms", "H2D ms", "D2H ms")
ACCURACY_COLUMNS = ("top-1", "top-5", "agree", "max |Δ|", "note")


def _fixed(value: float | None, decimals: int) -> str | None:
    return None if value is None else f"{value:.{decimals}f}"


@dataclass
class BenchReport:
    rows: list[BenchRow]
    harness: list[HarnessCheck]
    images: int
    image_source: str
    reference: str
    config: BenchConfig
    machine: dict
    date: str

    @property
    def measured(self) -> list[BenchRow]:
        return [r for r in self.rows if r.skipped is None]

    def to_dict(self) -> dict:
        return {
            "date": self.date,
            "machine": self.machine,
            "config": self.config.to_dict(),
            "reference": self.reference,
            "images": {"count": self.images, "source": self.image_source},
            "results": [r.to_dict() for r in self.rows],
            "harness_overhead": [h.to_dict() for h in self.harness],
        }

    def table(self) -> tuple[tuple[str, ...], list[tuple], list[str]]:
        """Columns, rows and footnotes for display. Notes and skip reasons are numbered
        footnotes, so the table stays narrow; GPU stage columns appear only when some
        row has them; a row skipped at every batch is shown once, its batch as "all"."""
        gpu = any(r.gpu_compute_ms is not None for r in self.rows)
        columns = TABLE_COLUMNS + (GPU_COLUMNS if gpu else ()) + ACCURACY_COLUMNS
        rows: list[tuple] = []
        footnotes: list[str] = []
        shown_skips = set()
        for r in self.rows:
            if r.skipped is not None:
                if (r.backend, r.precision, r.skipped) in shown_skips:
                    continue
                shown_skips.add((r.backend, r.precision, r.skipped))
            texts = [f"skipped: {r.skipped}"] if r.skipped else r.notes
            for text in texts:
                if text not in footnotes:
                    footnotes.append(text)
            refs = ", ".join(str(footnotes.index(t) + 1) for t in texts) or None
            lat = r.latency_ms
            latencies = (lat.p50, lat.p90, lat.p99, lat.mean) if lat else (None,) * 4
            speed = (_fixed(r.throughput_ips, 1), *(_fixed(v, 2) for v in latencies))
            stages = tuple(_fixed(v, 3) for v in (r.gpu_compute_ms, r.h2d_ms, r.d2h_ms)) if gpu else ()
            accuracy = tuple(None if v is None else f"{v:.2%}" for v in (r.top1, r.top5, r.top1_agreement))
            diff = None if r.max_abs_diff is None else f"{r.max_abs_diff:.2g}"
            batch = "all" if r.skipped is not None and len(self.config.batches) > 1 else r.batch
            rows.append((r.backend, r.precision, r.device, batch, *speed, *stages, *accuracy, diff, refs))
        return columns, rows, [f"{i}. {text}" for i, text in enumerate(footnotes, 1)]


# --------------------------------------------------------------------- the plan


@dataclass
class _Planned:
    """A backend x precision about to be measured: how to open its runner, or why not."""

    backend: str
    precision: str
    device: str
    open: Callable[[], Runner] | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    harness_check: bool = False  # also time bare session.run on this row's session


@dataclass
class _Context:
    """What every planner may need, resolved once."""

    config: BenchConfig
    torch_device: str  # "cpu" or "cuda"
    onnxruntime_device: str
    reference_model: onnx.ModelProto  # the FP32 export
    reference_runner: Runner
    checkpoint: Checkpoint | None  # loaded when a torch backend runs


BUILD_COMMANDS = {p: f"alexnet-deploy build --{p}" for p in ONNX_PRECISIONS}
BF16_NOT_BUILT = "bf16 has no ONNX or engine here: its rows are torch's (CPU with AVX512-BF16/AMX, or CUDA)"


def onnx_path(onnx_dir: Path, precision: str) -> Path:
    return ArtifactLayout(export_dir=Path(onnx_dir)).onnx(precision)


def _onnxruntime_graph(onnx_dir: Path, precision: str) -> tuple[Path, str | None]:
    """The ONNX an onnxruntime row runs, and the note that says which graph it is."""
    if precision == "int8":
        return onnx_path(onnx_dir, ORT_INT8), "onnxruntime-targeted INT8 graph (QLinearConv/QGemm integer kernels)"
    if precision == SIMULATED_INT8:
        return onnx_path(onnx_dir, "int8"), (
            "TensorRT-targeted INT8 graph, quantization simulated in float by onnxruntime: "
            "parity of the engine's graph, speed not an INT8 figure"
        )
    return onnx_path(onnx_dir, precision), None


def _missing(context: _Context, path: Path, precision: str) -> str:
    """The skip reason for an artifact not built yet, or an error if it was asked for."""
    message = f"{path} not found; run `{BUILD_COMMANDS[precision]}`"
    if context.config.precisions is not None:
        raise DeployError(f"{message} (--precisions {precision} asked for it)")
    return message


def _plan_onnxruntime(context: _Context, precision: str) -> _Planned:
    planned = _Planned("onnxruntime", precision, context.onnxruntime_device, harness_check=precision == "fp32")
    if precision == "bf16":
        planned.skipped = BF16_NOT_BUILT
        return planned
    if precision == "fp32" and context.onnxruntime_device == "cpu":
        planned.open = lambda: context.reference_runner  # the reference session itself
        return planned
    path, note = _onnxruntime_graph(context.config.onnx_dir, precision)
    planned.notes += [note] if note else []
    stored = "int8" if precision == SIMULATED_INT8 else precision  # what the file's metadata says
    if not path.is_file():
        planned.skipped = _missing(context, path, stored)
        return planned

    # loaded and verified now, so a wrong or modified file fails before any timing
    model = context.reference_model if precision == "fp32" else load_verified(path)
    carried = export_metadata(model, str(path)).precision
    if carried != stored:
        raise DeployError(f"{path} holds a {carried} model, expected {stored}")

    def open_runner() -> Runner:
        from .runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model, stored, context.onnxruntime_device)

    planned.open = open_runner
    return planned


def load_verified(path: Path) -> onnx.ModelProto:
    """One of our ONNX files, its weights checked against the digest written with it."""
    model = load_model(path, require_plugin=False)
    verify_weights(model, str(path))
    return model


def _plan_torch(context: _Context, precision: str, compile: bool) -> _Planned:
    from .runners.torch import TorchRunner

    planned = _Planned("torch-compile" if compile else "torch", precision, context.torch_device)
    planned.open = lambda: TorchRunner(
        context.checkpoint, precision, context.torch_device, compile=compile, cuda_graphs=context.config.cuda_graphs
    )
    return planned


def _plan_tensorrt(context: _Context, precision: str) -> _Planned:
    planned = _Planned("tensorrt", precision, "cuda")
    if precision == "bf16":
        planned.skipped = BF16_NOT_BUILT
        return planned
    if context.config.device == "cpu":
        planned.skipped = "TensorRT runs only on a GPU (--device cpu)"
        return planned
    try:
        from .tensorrt.availability import runner_unavailable_reason
        from .tensorrt.runner import TensorRTRunner
        from .tensorrt.sidecar import read_sidecar
    except ImportError as error:
        planned.skipped = f"the TensorRT runner cannot be imported ({error})"
        return planned
    reason = runner_unavailable_reason()
    if reason is not None:
        planned.skipped = reason
        return planned
    path = ArtifactLayout(engines_dir=context.config.engines_dir).plan(precision)
    if not path.is_file():
        planned.skipped = _missing(context, path, precision)
        return planned
    # the sidecar knows the profile: a batch it cannot take fails now, not minutes into the run
    check_batches(read_sidecar(path).profile.max[0], context.config.batches, f"{path}'s profile")
    planned.open = lambda: TensorRTRunner(path, precision, cuda_graphs=context.config.cuda_graphs)
    return planned


_PLANNERS: dict[str, Callable[[_Context, str], _Planned]] = {
    "tensorrt": _plan_tensorrt,
    "onnxruntime": _plan_onnxruntime,
    "torch": lambda context, precision: _plan_torch(context, precision, compile=False),
    "torch-compile": lambda context, precision: _plan_torch(context, precision, compile=True),
}


def _load_matching_checkpoint(config: BenchConfig, reference_model: onnx.ModelProto) -> Checkpoint:
    """The checkpoint for the torch rows, refused if the ONNX was exported from another:
    their parity against the reference would then measure the wrong thing."""
    checkpoint = load_checkpoint(config.checkpoint)
    exported_from = read_metadata(reference_model).get("checkpoint_sha256")
    if exported_from is not None and exported_from != sha256_file(config.checkpoint):
        reference = onnx_path(config.onnx_dir, "fp32")
        raise DeployError(
            f"{config.checkpoint} is not the checkpoint {reference} was exported from; "
            "re-run `alexnet-deploy export` or pass the right --checkpoint"
        )
    return checkpoint


def _devices(config: BenchConfig) -> tuple[str, str]:
    """(torch device, onnxruntime device). onnxruntime follows torch onto the GPU only
    when its CUDA execution provider is installed; otherwise its rows say "cpu"."""
    from .devices import resolve_device
    from .runners.onnxruntime import available_providers

    torch_device = resolve_device(config.device).type
    cuda_ep = "CUDAExecutionProvider" in available_providers()
    return torch_device, "cuda" if torch_device == "cuda" and cuda_ep else "cpu"


def machine_description() -> dict:
    """Where the numbers were taken: CPU, cores, GPU and the versions that matter."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    versions = {}
    for package in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "triton"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    import torch

    from .devices import cpu_precision_features

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_precision_features": list(cpu_precision_features()),
        "gpu": gpu,
        "platform": platform.platform(),
        "versions": versions,
    }


# ---------------------------------------------------------------------- the run


def _measure_row(
    runner: Runner, planned: _Planned, rotation: Rotation, config: BenchConfig, reference: np.ndarray, labels: np.ndarray
) -> tuple[BenchRow, Timing]:
    """Time one batch size; judge parity on the timed outputs, completed by untimed runs
    of any rotated batch the timed loop did not reach."""
    timing = time_iterations(runner, rotation.batches, config.warmup, config.timed_iterations, config.duration_s)
    rest = [runner.infer(b) for b in rotation.batches[len(timing.outputs) :]]
    logits = rotation.per_image(timing.outputs + rest, len(reference))
    match = parity(reference, logits, labels)
    stage = {
        name: percentile([getattr(s, attribute) for s in timing.stages], 50) if timing.stages else None
        for name, attribute in (("gpu_compute_ms", "compute_ms"), ("h2d_ms", "h2d_ms"), ("d2h_ms", "d2h_ms"))
    }
    notes = planned.notes + runner.notes + parity_warnings(runner.precision, runner.device, match.max_abs_diff, logits)
    row = BenchRow(
        planned.backend,
        planned.precision,
        runner.device,
        timing.batch,
        throughput_ips=timing.throughput_ips,
        latency_ms=LatencyStats.of(timing.latencies_ms),
        top1_agreement=match.top1_agreement,
        max_abs_diff=match.max_abs_diff,
        top1=match.top1,
        top5=match.top5,
        iterations=timing.iterations,
        notes=list(dict.fromkeys(notes)),
        **stage,
    )
    return row, timing


def parity_warnings(precision: str, device: str, max_abs_diff: float, logits: np.ndarray) -> list[str]:
    """Notes for a row whose outputs cannot be trusted: non-finite logits anywhere, or
    an FP32 CPU row further from the reference than the export's own tolerance (the
    torch checkpoint and the ONNX then compute different things). ``not <=`` so that
    a NaN difference is flagged too."""
    if not np.isfinite(logits).all():
        return ["PARITY FAILED: non-finite logits"]
    if precision == "fp32" and device == "cpu" and not max_abs_diff <= FP32_TOLERANCE:
        return [
            f"PARITY FAILED: max |Δ| {max_abs_diff:.3g} vs the reference exceeds {FP32_TOLERANCE:g} "
            "(the checkpoint and the ONNX differ: re-export)"
        ]
    return []


def memory_limit_bytes() -> int | None:
    """The memory this process could ever have: physical memory (MemTotal), or the
    cgroup's limit when a container sets a lower one; None where neither is known.
    Not MemAvailable: on a shared machine that swings by gigabytes from one second to
    the next, and a batch that fits must not be refused because a neighbour is busy."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        limits = []  # no readable /proc/meminfo (not Linux): only a cgroup limit can bound the batch
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limits.append(int(Path(cgroup).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            continue
    return min(limits) if limits else None


def check_memory(batches: Sequence[int], crop: int, limit: int | None) -> None:
    """Refuse a batch whose estimated working set exceeds the machine's memory,
    before allocating it (numpy would otherwise try, and the OOM killer end it)."""
    if limit is None:
        return
    per_image = MEMORY_PER_INPUT_BYTES * 3 * crop * crop * 4
    largest = max(batches)
    if largest * per_image > limit:
        fits = max(1, limit // per_image)
        raise DeployError(
            f"--batch {largest} needs about {largest * per_image / 2**30:.1f} GiB "
            f"({per_image / 2**20:.1f} MiB per {crop}×{crop} image), more than this machine's "
            f"{limit / 2**30:.1f} GiB of memory; use --batch {fits} or less"
        )


def check_batches(max_batch: int | None, batches: Sequence[int], what: str) -> None:
    """Every batch of the sweep must fit ``what`` (an engine's profile, or a runner)."""
    if max_batch is not None and max(batches) > max_batch:
        raise DeployError(
            f"batch {max(batches)} exceeds {what} maximum {max_batch}; "
            f"rebuild with `alexnet-deploy build --max-batch {max(batches)}` or lower --batch"
        )


def run_bench(config: BenchConfig, progress: ProgressReporter | None = None) -> BenchReport:
    """Measure every requested backend x precision x batch; see the module docstring.

    Everything that can fail on bad input (options, missing files, a checkpoint that
    does not match the ONNX) fails before the first image is timed."""
    from .runners.onnxruntime import OnnxRuntimeRunner

    config.check()
    progress = progress or SilentProgress()
    torch_device, onnxruntime_device = _devices(config)
    reference_path = onnx_path(config.onnx_dir, "fp32")
    if not reference_path.is_file():
        raise DeployError(f"reference ONNX {reference_path} not found; run `alexnet-deploy export` first")
    reference_model = load_verified(reference_path)
    metadata = export_metadata(reference_model, str(reference_path))
    if metadata.precision != "fp32":
        raise DeployError(f"{reference_path} is not the FP32 export the reference must be")
    check_memory(config.batches, metadata.preprocessing.crop, memory_limit_bytes())
    torch_rows = any(b.startswith("torch") for b in config.backends)
    checkpoint = _load_matching_checkpoint(config, reference_model) if torch_rows else None
    reference_runner = OnnxRuntimeRunner(reference_model, "fp32", "cpu")
    context = _Context(config, torch_device, onnxruntime_device, reference_model, reference_runner, checkpoint)
    plans = []
    for backend in config.backends:
        for precision in config.chosen_precisions:
            plans.append(_PLANNERS[backend](context, precision))
            if (backend, precision) == ("onnxruntime", "int8"):
                plans.append(_plan_onnxruntime(context, SIMULATED_INT8))

    data_source = metadata.data_source
    images, labels = held_out_images(data_source, metadata.split, metadata.preprocessing, "val", config.max_images)
    rotations = {b: Rotation.of(images, b) for b in config.batches}
    rows: list[BenchRow] = []
    harness: list[HarnessCheck] = []
    with reference_runner:
        reference = reference_runner.infer_all(images)
        progress.begin("bench", len(plans) * len(config.batches))
        try:
            for planned in plans:
                rows += _run_planned(planned, context, rotations, reference, labels, harness, progress)
        finally:
            progress.finish()
    return BenchReport(
        rows,
        harness,
        len(images),
        f"held-out val images of {Path(data_source).name}",
        "onnxruntime fp32 on cpu",
        config,
        machine_description(),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _run_planned(
    planned: _Planned,
    context: _Context,
    rotations: dict[int, Rotation],
    reference: np.ndarray,
    labels: np.ndarray,
    harness: list[HarnessCheck],
    progress: ProgressReporter,
) -> list[BenchRow]:
    """Every batch of one backend x precision: one runner, loaded once."""
    batches = list(rotations)

    def skipped(reason: str) -> list[BenchRow]:
        progress.advance(len(batches), row=f"{planned.backend}/{planned.precision} skipped")
        return [BenchRow(planned.backend, planned.precision, planned.device, b, skipped=reason) for b in batches]

    if planned.skipped is not None:
        return skipped(planned.skipped)
    runner = planned.open()
    try:
        runner.load()
    except BackendUnavailable as error:
        return skipped(str(error))
    is_reference = runner is context.reference_runner
    try:
        check_batches(runner.max_batch, batches, f"{runner.name}'s")
        rows = []
        for batch, rotation in rotations.items():
            row, timing = _measure_row(runner, planned, rotation, context.config, reference, labels)
            rows.append(row)
            if planned.harness_check:
                harness.append(harness_overhead(runner, runner.session, rotation.batches, timing.iterations))
            progress.advance(1, row=f"{planned.backend}/{planned.precision} @ {batch}")
        return rows
    finally:
        if not is_reference:
            runner.close()


# -------------------------------------------------------------------------- plot

PLOT_SIZE_INCHES = (8.0, 5.0)
PLOT_DPI = 100


def bench_figure(report: BenchReport):
    """Throughput against batch per backend/precision for a sweep; for one batch,
    top-1 accuracy against throughput (the speed/accuracy trade-off)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    measured = report.measured
    series: dict[str, list[BenchRow]] = {}
    for row in measured:
        series.setdefault(f"{row.backend} {row.precision} ({row.device})", []).append(row)
    if len(report.config.batches) > 1:
        for label, rows in series.items():
            rows = sorted(rows, key=lambda r: r.batch)
            axes.plot([r.batch for r in rows], [r.throughput_ips for r in rows], "o-", label=label)
        axes.set_xscale("log", base=2)
        axes.set_xticks(report.config.batches, [str(b) for b in report.config.batches])
        axes.set(title="throughput against batch size", xlabel="batch", ylabel="images / s")
    else:
        for label, rows in series.items():
            axes.scatter([r.throughput_ips for r in rows], [100 * r.top1 for r in rows], label=label, s=60)
        axes.set(
            title=f"top-1 against throughput at batch {report.config.batches[0]}",
            xlabel="images / s",
            ylabel="top-1 on held-out val (%)",
        )
    if not measured:
        axes.text(0.5, 0.5, "no backend could be measured here", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return figure


def save_bench_plot(report: BenchReport, path: Path) -> None:
    check_png_path(Path(path), "--plot")
    figure = bench_figure(report)
    with atomic_output(Path(path)) as tmp:
        figure.savefig(tmp, format="png")
