"""OpenVINO backend: the fastest CPU path where there is no NVIDIA GPU. It runs the
standard-op twin (``graph.to_standard_lrn``) of any of our ONNX files — FP32, FP16,
and INT8 in either layout — on the CPU plugin.

Why these settings (each was measured; docs/bench.md has the figures and machines):

* ``ov.convert_model`` on a file, not ``Core.read_model``: read_model leaves the
  grouped convolutions' weight-reshape subgraphs in front of them; convert_model folds
  them. convert_model takes a path, so the twin is written to a temporary file first.
* The LATENCY hint: with one synchronous request, THROUGHPUT runs one single-threaded
  stream; LATENCY gives the one request every core.
* The inference precision is pinned. OpenVINO's CPU default on a CPU with bf16 is
  bf16, which would make an "fp32" row a bf16 one; here fp32, fp16 and int8 rows run
  f32 wherever they are not integer, and bf16 is its own row, only where the CPU has it.
* One compiled model with the dynamic batch axis, not one per batch size reshaped to a
  static batch: static shapes gained nothing beyond the run-to-run spread, and each
  would cost a compile of seconds.

OpenVINO reads our Q/DQ INT8 graphs directly and fuses them into integer kernels, so
the calibration that feeds TensorRT feeds OpenVINO with no second quantizer. What ran
is read back from the compiled model's runtime graph (``runtime_precisions``) and put
in the runner's notes: "INT8" is then a measured fact, not a label.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import BackendUnavailable
from ..graph import load_model, to_standard_lrn
from ..inference import OpTime, Runner, median_per_call
from .openvino_core import openvino_core

PERFORMANCE_HINT = "LATENCY"
# the layer types whose precision says whether the row is what it claims to be
COMPUTE_LAYERS = ("Convolution", "FullyConnected", "MatMul", "Lrn", "Pooling")
INFERENCE_PRECISIONS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}


def openvino_unavailable_reason() -> str | None:
    """None when OpenVINO can be imported; otherwise the one line that says why not."""
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        return f"openvino is not installed ({error}); pip install openvino"
    return None


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's own view of what the CPU computes natively (FP32, BF16, INT8, ...)."""
    return tuple(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoRunner(Runner):
    backend = "openvino"
    profiler = "OpenVINO PERF_COUNT (get_profiling_info, real time per executed node)"
    profiler_leaves_out = "the infer request outside the nodes: setting the input, copying the output, scheduling"

    def __init__(self, model: Path | onnx.ModelProto, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__(precision, "cpu")
        self.model = model
        self.threads = threads
        self._compiled: Any = None  # openvino.CompiledModel
        self._request: Any = None  # its one synchronous infer request, reused

    def _load(self) -> None:
        reason = openvino_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(reason)
        if self.precision == "bf16" and "BF16" not in cpu_capabilities():
            raise BackendUnavailable("this CPU has no native bf16 (OpenVINO's CPU capabilities lack BF16)")
        self._compiled = self._compile(perf_count=False)
        self._request = self._compiled.create_infer_request()
        self.notes.append(self.describe_runtime())

    def _compile(self, perf_count: bool) -> Any:
        import openvino

        model = self.model if isinstance(self.model, onnx.ModelProto) else load_model(self.model, require_plugin=False)
        twin = to_standard_lrn(model, half_precision=self.precision == "fp16")
        with tempfile.TemporaryDirectory(prefix="alexnet-openvino-") as folder:
            path = Path(folder) / "model.onnx"
            onnx.save(twin, str(path))
            converted = openvino.convert_model(str(path))
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": PERFORMANCE_HINT,
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[self.precision],
            "PERF_COUNT": perf_count,
        }
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return openvino_core().compile_model(converted, "CPU", config)

    def profile(self, images: np.ndarray, runs: int) -> list[OpTime]:
        """PERF_COUNT on a second compile of the same graph: each executed node's real
        time per call, the median over ``runs`` calls after one warm-up (a load spike in
        one call does not inflate it); the runtime graph's ``originalLayersNames`` say
        which graph nodes each one fused."""
        compiled = self._compile(perf_count=True)
        fused = {
            op.get_friendly_name(): tuple(str(op.get_rt_info()["originalLayersNames"].astype(str)).split(","))
            for op in compiled.get_runtime_model().get_ordered_ops()
            if "originalLayersNames" in op.get_rt_info()
        }
        request = compiled.create_infer_request()
        feed = {0: np.ascontiguousarray(images, dtype=np.float32)}
        request.infer(feed)
        calls: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(runs):
            request.infer(feed)
            for info in request.get_profiling_info():  # the counters of the last call
                if str(info.status).rsplit(".", 1)[-1] == "EXECUTED":
                    key = (info.node_name, info.node_type, info.exec_type.rsplit("_", 1)[-1])
                    calls.setdefault(key, []).append(info.real_time.total_seconds() * 1e3)
        return [
            OpTime(name, kind, median_per_call(times, runs), precision.lower(), fused.get(name, ()))
            for (name, kind, precision), times in calls.items()
        ]

    def runtime_precisions(self) -> Counter[tuple[str, str]]:
        """(layer type, runtime precision) -> count, over the compiled model's runtime
        graph: what the CPU plugin actually executes after fusing."""
        if self._compiled is None:
            raise RuntimeError("runtime_precisions before load()")
        counts: Counter[tuple[str, str]] = Counter()
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name()
            precision = str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else "?"
            counts[(layer, precision)] += 1
        return counts

    def describe_runtime(self) -> str:
        counts = self.runtime_precisions()
        parts = [
            f"{layer} {precision} x{n}" for (layer, precision), n in sorted(counts.items()) if layer in COMPUTE_LAYERS
        ]
        hint = f"{PERFORMANCE_HINT} hint, inference precision {INFERENCE_PRECISIONS[self.precision]}"
        return f"OpenVINO runtime graph: {', '.join(parts) or 'no compute layers found'} ({hint})"

    def _infer(self, images: np.ndarray) -> np.ndarray:
        if self._request is None:
            raise RuntimeError("infer before load()")
        self._request.infer({0: np.ascontiguousarray(images, dtype=np.float32)}, share_inputs=True)
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the tensor is reused

    def _close(self) -> None:
        self._request = None
        self._compiled = None
