"""What this CPU can compute and move at most, measured in the run that uses it: the
rate of a large float32 GEMM (torch), of a large int8 GEMM, and the bandwidth of a
large memory copy. Each is the median of interleaved rounds, so load from other jobs
hits all alike.

Two int8 GEMMs are timed because they differ several-fold on a CPU with VNNI: torch's
``_int_mm`` (int8 x int8 -> int32, oneDNN) and onnxruntime's ``MatMulInteger`` (uint8 x
int8 -> int32, MLAS); the faster is the INT8 limit. The copy (numpy, a buffer far
larger than the last-level cache) counts the bytes read plus the bytes written, which
is how a layer's traffic is counted against it (``layers``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

COPY_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Limits:
    """Medians of interleaved rounds: G(FL)OP/s (2 per multiply-accumulate) and GB/s."""

    fp32_gflops: float
    int8_gops: float
    copy_gbps: float
    size: int
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def peak(self, integer: bool) -> float:
        return self.int8_gops if integer else self.fp32_gflops

    def to_dict(self) -> dict:
        return {
            "fp32_gflops": self.fp32_gflops,
            "int8_gops": self.int8_gops,
            "copy_gbps": self.copy_gbps,
            "gemm_size": self.size,
            "rounds": self.rounds,
        }


def rate_of(work: Callable[[], object], amount: float) -> Callable[[], float]:
    """A timer of ``work``, in ``amount`` per second / 1e9, after one warm-up call."""
    work()  # warm-up: thread pool, caches, lazy initialisation

    def run() -> float:
        start = time.perf_counter()
        work()
        return amount / (time.perf_counter() - start) / 1e9

    return run


def fp32_gemm(size: int) -> Callable[[], float]:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    return rate_of(lambda: torch.matmul(a, b), 2 * size**3)


def torch_int8_gemm(size: int) -> Callable[[], float]:
    import torch

    a = torch.randint(-128, 128, (size, size), dtype=torch.int8)
    b = torch.randint(-128, 128, (size, size), dtype=torch.int8)
    return rate_of(lambda: torch._int_mm(a, b), 2 * size**3)


def onnxruntime_int8_gemm(size: int) -> Callable[[], float]:
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.integers(0, 256, (size, size), dtype=np.uint8),
        "b": rng.integers(-128, 128, (size, size), dtype=np.int8),
    }
    return rate_of(lambda: session.run(None, feeds), 2 * size**3)


def copy_bandwidth(nbytes: int = COPY_BYTES) -> Callable[[], float]:
    source = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    target = np.empty_like(source)
    return rate_of(lambda: np.copyto(target, source), 2 * nbytes)


def kernels(size: int) -> dict[str, Callable[[], float]]:
    import torch

    return {
        f"FP32 GEMM (torch {torch.__version__} matmul)": fp32_gemm(size),
        "INT8 GEMM (torch _int_mm, s8 x s8)": torch_int8_gemm(size),
        "INT8 GEMM (onnxruntime MatMulInteger, u8 x s8)": onnxruntime_int8_gemm(size),
        "copy (numpy, read + write)": copy_bandwidth(),
    }


def measure_limits(size: int = 2048, rounds: int = 3) -> Limits:
    """The three limits, each the median of ``rounds`` interleaved rounds."""
    timers = kernels(size)
    measured: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, run in timers.items():  # interleaved: a load spike hits all
            measured[name].append(run())
    medians = {name: statistics.median(values) for name, values in measured.items()}
    return Limits(
        fp32_gflops=next(rate for name, rate in medians.items() if name.startswith("FP32")),
        int8_gops=max(rate for name, rate in medians.items() if name.startswith("INT8")),
        copy_gbps=next(rate for name, rate in medians.items() if name.startswith("copy")),
        size=size,
        rounds=measured,
    )
