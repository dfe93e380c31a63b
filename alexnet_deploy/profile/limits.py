"""What this CPU can compute and move at most, measured in the run that uses it: the
fastest float32 and int8 dense kernels the installed libraries have, and the bandwidth
of a large memory copy. Each is the median of interleaved rounds, so load from other
jobs hits all alike; each limit is the fastest of its kernels, and the report names it.

The kernels differ several-fold on one CPU, which is why there are several. On the
2-core AMD EPYC (AVX-512 VNNI) of docs/bench.md: torch's float32 ``matmul`` ran at a
third of OpenVINO's, and torch's ``_int_mm`` and onnxruntime's ``MatMulInteger`` below
OpenVINO's int8 GEMM, which in turn stays below OpenVINO's own int8 3x3 convolution.
A limit set by the slower libraries alone was no limit: OpenVINO's conv layers ran at
150% of it. OpenVINO's kernels are timed by its own PERF_COUNT node time, the clock its
layers are profiled with, so a layer's share of the limit compares like with like.

The copy (numpy, a buffer far larger than the last-level cache) counts the bytes read
plus the bytes written, which is how a layer's traffic is counted against it (``layers``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..runners.openvino_core import openvino_core

COPY_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Limits:
    """Medians of interleaved rounds: G(FL)OP/s (2 per multiply-accumulate) and GB/s;
    ``fastest`` names the kernel that set each limit ("fp32", "int8")."""

    fp32_gflops: float
    int8_gops: float
    copy_gbps: float
    size: int
    rounds: dict[str, list[float]] = field(default_factory=dict)
    fastest: dict[str, str] = field(default_factory=dict)

    def peak(self, integer: bool) -> float:
        return self.int8_gops if integer else self.fp32_gflops

    def to_dict(self) -> dict:
        return {
            "fp32_gflops": self.fp32_gflops,
            "int8_gops": self.int8_gops,
            "copy_gbps": self.copy_gbps,
            "gemm_size": self.size,
            "fastest": self.fastest,
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


def _openvino_graph(nodes: list, initializers: list, input_shape: list[int]):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "limit_kernel",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _int8_weighted(op: str, weight_shape: tuple[int, ...], axis: int, **attributes):
    """``op`` on int8 inputs the way our Q/DQ graphs write it: the activation through
    QuantizeLinear/DequantizeLinear (u8), the weight int8 with per-channel scales."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    channels = weight_shape[axis]
    initializers = [
        numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.uint8), "zero"),
        numpy_helper.from_array(rng.integers(-127, 128, weight_shape, dtype=np.int8), "w_int8"),
        numpy_helper.from_array(np.full(channels, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(channels, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["a", "scale", "zero"], ["a_q"]),
        helper.make_node("DequantizeLinear", ["a_q", "scale", "zero"], ["a_dq"]),
        helper.make_node("DequantizeLinear", ["w_int8", "w_scale", "w_zero"], ["w"], axis=axis),
        helper.make_node(op, ["a_dq", "w"], ["c"], **attributes),
    ]
    return nodes, initializers


def _float_weighted(op: str, weight_shape: tuple[int, ...], **attributes):
    from onnx import helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal(weight_shape).astype(np.float32)
    return [helper.make_node(op, ["a", "w"], ["c"], **attributes)], [numpy_helper.from_array(weight, "w")]


# AlexNet conv4's shape (384 -> 384 channels, 3x3, 13x13) at batch 32: large enough to
# run at the kernel's rate, small enough to take milliseconds in int8
CONV_SHAPE = (32, 384, 13, 13)


def openvino_kernel(kind: str, integer: bool, size: int) -> Callable[[], float]:
    """A timer of OpenVINO's own kernel for one dense layer (a ``size``³ GEMM or a 3x3
    convolution of ``CONV_SHAPE``), compiled as ``runners/openvino.py`` compiles ours
    (LATENCY hint, f32 where not integer), its rate from PERF_COUNT's node time."""
    weight: tuple[int, ...]
    if kind == "gemm":
        shape, weight, axis, attributes = [size, size], (size, size), 1, {}
        op, macs = "MatMul", size**3
    else:
        batch, channels, height, width = CONV_SHAPE
        shape, weight, axis, attributes = list(CONV_SHAPE), (channels, channels, 3, 3), 0, {"pads": [1, 1, 1, 1]}
        op, macs = "Conv", batch * channels * height * width * channels * 9
    nodes, initializers = (
        _int8_weighted(op, weight, axis, **attributes) if integer else _float_weighted(op, weight, **attributes)
    )
    model = openvino_core().read_model(_openvino_graph(nodes, initializers, shape).SerializeToString(), b"")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True}
    request = openvino_core().compile_model(model, "CPU", config).create_infer_request()
    feed = {0: np.abs(np.random.default_rng(1).standard_normal(shape)).astype(np.float32)}
    compute_types = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul")

    def kernel_seconds() -> float:
        request.infer(feed)
        return sum(
            info.real_time.total_seconds()
            for info in request.get_profiling_info()
            if info.node_type.startswith(compute_types)
        )

    kernel_seconds()  # warm-up
    return lambda: 2 * macs / kernel_seconds() / 1e9


def kernels(size: int) -> dict[str, Callable[[], float]]:
    import torch

    timers = {
        f"FP32 GEMM (torch {torch.__version__} matmul)": fp32_gemm(size),
        "INT8 GEMM (torch _int_mm, s8 x s8)": torch_int8_gemm(size),
        "INT8 GEMM (onnxruntime MatMulInteger, u8 x s8)": onnxruntime_int8_gemm(size),
        "copy (numpy, read + write)": copy_bandwidth(),
    }
    try:
        import openvino  # noqa: F401
    except ImportError:  # the limit is then the fastest of the others
        return timers
    return timers | {
        "FP32 GEMM (OpenVINO FullyConnected)": openvino_kernel("gemm", False, size),
        "FP32 conv 3x3 (OpenVINO Convolution)": openvino_kernel("conv", False, size),
        "INT8 GEMM (OpenVINO FullyConnected, u8 x s8)": openvino_kernel("gemm", True, size),
        "INT8 conv 3x3 (OpenVINO Convolution, u8 x s8)": openvino_kernel("conv", True, size),
    }


def measure_limits(size: int = 2048, rounds: int = 3) -> Limits:
    """The three limits, each the fastest kernel's median over ``rounds`` interleaved rounds."""
    timers = kernels(size)
    measured: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, run in timers.items():  # interleaved: a load spike hits all
            measured[name].append(run())
    medians = {name: statistics.median(values) for name, values in measured.items()}
    fastest = {
        kind: max((name for name in medians if name.startswith(kind.upper())), key=medians.__getitem__)
        for kind in ("fp32", "int8")
    }
    return Limits(
        fp32_gflops=medians[fastest["fp32"]],
        int8_gops=medians[fastest["int8"]],
        copy_gbps=next(rate for name, rate in medians.items() if name.startswith("copy")),
        size=size,
        rounds=measured,
        fastest=fastest,
    )
