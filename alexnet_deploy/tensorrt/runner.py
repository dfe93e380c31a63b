"""The TensorRT runner: a plan built by ``engine.build_engine`` behind the common
``runners.base.Runner`` interface, with optional CUDA-graph replay (``CudaGraph``).

Device buffers, the stream and the timing events come from pycuda (the project's
stated choice). pycuda retains the device's *primary* context -- the one the CUDA
runtime, and therefore TensorRT, uses -- instead of creating a private one, so
TensorRT's kernels and our copies run in the same context and on the same stream.
Buffers are allocated once, for the profile's maximum batch, at load time; host
buffers are page-locked so the copies are truly asynchronous and measurable.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from ..cuda_driver import cuda_device
from ..errors import BackendUnavailable, DeployError
from ..files import require_file
from ..inference import OpTime, Runner, StageTiming
from ..plugin.registration import register_lrn_plugin
from .availability import runner_unavailable_reason
from .sidecar import read_sidecar, sidecar_mismatches


def _precision_from_name(plan: Path) -> str:
    """``alexnet.fp16.plan`` -> ``fp16`` (the sidecar's value replaces it at load)."""
    parts = Path(plan).name.split(".")
    return parts[-2] if len(parts) >= 3 else "?"


class TensorRTRunner(Runner):
    backend = "tensorrt"
    profiler = "TensorRT IProfiler on an execution context of its own (trtexec --separateProfileRun)"
    profiler_leaves_out = "the host-device copies, the enqueue's host work and the gaps between kernels"

    def __init__(self, plan: Path, precision: str | None = None, cuda_graphs: bool = False) -> None:
        plan = Path(plan)
        super().__init__(precision or _precision_from_name(plan), "cuda")
        self.plan = plan
        # trtexec --useCudaGraph: capture execute_async_v3 once per input shape, then replay
        # the graph, which skips TensorRT's per-launch host work. Copies stay outside it.
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[int, CudaGraph] = {}  # batch -> captured enqueue
        # TensorRT and pycuda objects, untyped at their boundary; None until load().
        self._cuda_context: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, Any] = {}  # tensor name -> pycuda DeviceAllocation
        self._host: dict[str, np.ndarray] = {}  # tensor name -> page-locked host array
        self._events: list = []
        self._input = self._output = ""
        self._image_shape: tuple[int, ...] = ()

    def _load(self) -> None:
        reason = runner_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(reason)
        try:
            import pycuda.driver as cuda
        except ImportError as error:
            raise BackendUnavailable(f"pycuda is not installed ({error}); install alexnet-deploy[gpu]") from None
        import tensorrt as trt

        register_lrn_plugin()  # an engine with a plugin layer deserialises only once its creator is known
        require_file(self.plan, "engine", "build it with `alexnet-deploy build`")
        sidecar = read_sidecar(self.plan)
        device = cuda_device()
        problems = sidecar_mismatches(sidecar, trt.__version__, device)
        if problems:
            raise DeployError(
                f"{self.plan} does not match this machine: {'; '.join(problems)}. "
                "Rebuild it here with `alexnet-deploy build`."
            )
        assert device is not None, "sidecar_mismatches reports a missing GPU"
        self.precision = sidecar.precision

        cuda.init()
        self._cuda_context = cuda.Device(0).retain_primary_context()
        self._cuda_context.push()
        try:
            self._open_engine(cuda, trt)
        except BaseException:
            self._release()
            raise
        self.device = device.name

    def _open_engine(self, cuda, trt) -> None:
        # The runtime (and the logger it points to) must outlive the engine it deserialises.
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self._engine is None:
            raise DeployError(f"TensorRT could not deserialize {self.plan}; rebuild it with `alexnet-deploy build`")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise DeployError(f"{self.plan}: expected one input and one output, found {inputs} and {outputs}")
        self._input, self._output = inputs[0], outputs[0]

        _, _, max_shape = self._engine.get_tensor_profile_shape(self._input, 0)
        self.max_batch = int(max_shape[0])
        self._image_shape = tuple(int(d) for d in max_shape[1:])
        self._context = self._engine.create_execution_context()
        self._context.set_input_shape(self._input, tuple(int(d) for d in max_shape))
        for name in (self._input, self._output):
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            self._host[name] = cuda.pagelocked_empty(shape, dtype)
            self._buffers[name] = cuda.mem_alloc(self._host[name].nbytes)
            self._context.set_tensor_address(name, int(self._buffers[name]))
        self._stream = cuda.Stream()
        self._events = [cuda.Event() for _ in range(4)]

    def _infer(self, images: np.ndarray) -> np.ndarray:
        import pycuda.driver as cuda

        if images.ndim != 4 or tuple(images.shape[1:]) != self._image_shape:
            raise DeployError(
                f"{self.name}: expected images of shape (N, {', '.join(map(str, self._image_shape))}), got {images.shape}"
            )
        batch = len(images)
        host_in, host_out = self._host[self._input][:batch], self._host[self._output][:batch]
        host_in[...] = images  # casts to the engine's input dtype (FP16 engines may take FP16 I/O)
        if not self._context.set_input_shape(self._input, (batch, *self._image_shape)):
            raise DeployError(f"{self.name}: TensorRT rejected batch {batch} for profile max {self.max_batch}")

        start, copied_in, computed, copied_out = self._events
        start.record(self._stream)
        cuda.memcpy_htod_async(self._buffers[self._input], host_in, self._stream)
        copied_in.record(self._stream)
        if self.cuda_graphs:
            self._graph_for(batch).launch(self._stream.handle)
        elif not self._context.execute_async_v3(self._stream.handle):
            raise DeployError(f"{self.name}: TensorRT failed to enqueue the batch")
        computed.record(self._stream)
        cuda.memcpy_dtoh_async(host_out, self._buffers[self._output], self._stream)
        copied_out.record(self._stream)
        self._stream.synchronize()
        self.last_timing = StageTiming(
            h2d_ms=copied_in.time_since(start),
            compute_ms=computed.time_since(copied_in),
            d2h_ms=copied_out.time_since(computed),
        )
        return host_out.astype(np.float32, copy=True)

    def profile(self, images: np.ndarray, runs: int) -> list[OpTime]:
        """Per-layer times from an ``IProfiler`` on a second execution context over the
        runner's own buffers: one warm-up enqueue, then ``runs`` profiled ones."""
        from .profiler import layer_time_recorder, op_times

        self._infer(images)  # validates the batch and leaves it in the device input buffer
        batch = len(images)
        context = self._engine.create_execution_context()
        for name in (self._input, self._output):
            context.set_tensor_address(name, int(self._buffers[name]))
        context.set_input_shape(self._input, (batch, *self._image_shape))
        recorder = layer_time_recorder()
        context.profiler = recorder
        for run in range(runs + 1):
            if run == 1:
                recorder.totals.clear()  # the first enqueue warms up
            if not context.execute_async_v3(self._stream.handle):
                raise DeployError(f"{self.name}: TensorRT failed to enqueue the profiled batch")
            self._stream.synchronize()
        return op_times(dict(recorder.totals), runs)

    def _graph_for(self, batch: int) -> CudaGraph:
        """The captured enqueue for this batch size; the first call captures it.

        TensorRT defers some allocation to the first enqueue after a shape change, which
        must not happen inside a capture, so one ordinary enqueue runs first (TensorRT's
        documented order). Buffer addresses are fixed at load (sized for the profile max),
        so a graph stays valid for every later batch of the same size.
        """
        graph = self._graphs.get(batch)
        if graph is None:
            if not self._context.execute_async_v3(self._stream.handle):
                raise DeployError(f"{self.name}: TensorRT failed to enqueue the batch")
            self._stream.synchronize()
            graph = CudaGraph.capture(self._stream.handle, lambda: self._context.execute_async_v3(self._stream.handle))
            self._graphs[batch] = graph
        return graph

    def _close(self) -> None:
        self._release()

    def _release(self) -> None:
        # Reverse order of creation; TensorRT objects before the memory and context they use.
        for graph in self._graphs.values():
            graph.destroy()
        self._graphs = {}
        self._context = self._engine = self._runtime = self._logger = None
        self._events, self._stream = [], None
        for allocation in self._buffers.values():
            allocation.free()
        self._buffers, self._host = {}, {}
        if self._cuda_context is not None:
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._cuda_context = None


class CudaGraph:
    """One stream capture, instantiated and replayable, through the CUDA driver API.

    ctypes on libcuda (as ``cuda_driver.cuda_device`` does) rather than pycuda: the driver
    calls are four, every machine that runs TensorRT has the driver, and the stream is
    pycuda's (``Stream.handle`` is the CUstream).
    """

    _GLOBAL_CAPTURE = 0  # CU_STREAM_CAPTURE_MODE_GLOBAL

    def __init__(self, driver, graph: ctypes.c_void_p, executable: ctypes.c_void_p) -> None:
        self._driver, self._graph, self._executable = driver, graph, executable

    @classmethod
    def capture(cls, stream: int, enqueue) -> CudaGraph:
        driver = ctypes.CDLL("libcuda.so.1")
        graph, executable = ctypes.c_void_p(), ctypes.c_void_p()
        _check(driver.cuStreamBeginCapture_v2(ctypes.c_void_p(stream), cls._GLOBAL_CAPTURE), "begin capture")
        captured = enqueue()
        _check(driver.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)), "end capture")
        if not captured:
            driver.cuGraphDestroy(graph)
            raise DeployError("TensorRT failed to enqueue the batch while capturing a CUDA graph")
        _check(
            driver.cuGraphInstantiateWithFlags(ctypes.byref(executable), graph, ctypes.c_ulonglong(0)), "instantiate"
        )
        return cls(driver, graph, executable)

    def launch(self, stream: int) -> None:
        _check(self._driver.cuGraphLaunch(self._executable, ctypes.c_void_p(stream)), "launch")

    def destroy(self) -> None:
        self._driver.cuGraphExecDestroy(self._executable)
        self._driver.cuGraphDestroy(self._graph)


def _check(result: int, what: str) -> None:
    if result != 0:  # CUDA_SUCCESS
        raise DeployError(f"CUDA graph {what} failed (CUresult {result})")
