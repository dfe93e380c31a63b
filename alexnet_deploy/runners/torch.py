"""torch backend: the checkpoint's own model, eager or ``torch.compile``d — the baseline a
user would pick instead of an exported engine.

On CUDA the LRN layers run the plugin's Triton kernel (``plugin.kernel.lrn_triton``), so a
GPU without TensorRT still exercises that kernel inside the whole network and bench judges
it against the onnxruntime reference. There each ``infer`` times its host-to-device copy,
compute and device-to-host copy with CUDA events (``last_timing``), and ``cuda_graphs``
replays the whole forward as one captured CUDA graph per batch shape.

FP16 is the model in half precision with float32 I/O (LRN still sums squares in float32),
on CUDA only: torch's CPU half-precision kernels are slow fallbacks, not a baseline. BF16
(float32 I/O) runs where the hardware computes it natively: on a CPU with AVX512-BF16 or
AMX (``devices.cpu_bf16_unavailable_reason``), or a CUDA GPU that supports it. There is no
INT8 path: quantized inference is what the Q/DQ ONNX is for.

On a CPU the model and its inputs are channels-last (NHWC): oneDNN's convolutions run in
that layout natively, so NCHW would cost a reorder before and after every conv (the
measured gain, with its machine: docs/bench.md, "Reduced precision on the CPU").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import Checkpoint, load_checkpoint
from ..devices import cpu_bf16_unavailable_reason
from ..errors import BackendUnavailable
from ..inference import OpTime, Runner, StageTiming, median_per_call
from ..lrn import LRNParams, replace_lrn

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CAPTURE_WARMUP = 3  # side-stream runs before capture, as torch.cuda.graphs asks


@torch.library.custom_op("alexnet_deploy::lrn_triton", mutates_args=())
def _lrn_triton_op(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    from ..plugin.kernel import lrn_triton

    return lrn_triton(x, LRNParams(size, alpha, beta, bias))


@_lrn_triton_op.register_fake
def _lrn_triton_shape(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    return torch.empty_like(x)


def use_triton_lrn(model: nn.Module) -> nn.Module:
    """Every LRN layer of ``model`` (in place) through the plugin's Triton kernel."""
    return replace_lrn(model, _lrn_triton_op)


@dataclass
class _CapturedGraph:
    """One CUDA graph replaying the forward of a fixed input shape, and its static I/O."""

    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor
    outputs: torch.Tensor


@dataclass
class _PinnedBuffers:
    """Page-locked host staging for one batch shape, so copies are true async DMA."""

    inputs: torch.Tensor
    outputs: torch.Tensor


def profiled_name(module: str) -> str:
    """The name a module's time is recorded under: its layer, and the module where it is
    counted with another layer (``relu1`` -> ``conv1/relu1``, ``drop6`` -> ``fc6/drop6``)."""
    if module.startswith(("relu", "drop")):
        index = int(module[4:])
        return f"{f'conv{index}' if index <= 5 else f'fc{index}'}/{module}"
    return module


class TorchRunner(Runner):
    backend = "torch"
    profiler = "torch.profiler (a record_function range around each module)"
    profiler_leaves_out = (
        "what is no module: the input's conversion to channels-last, the flatten before fc6, the final cast"
    )

    def __init__(
        self,
        checkpoint: Path | Checkpoint,
        precision: str = "fp32",
        device: str = "cpu",
        compile: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__(precision, device)
        if compile:
            self.backend = "torch-compile"
        self.checkpoint = checkpoint
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.model: nn.Module | None = None
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._torch_device = torch.device(device)
        self._classes = 0
        self._graphs: dict[tuple[int, ...], _CapturedGraph] = {}
        self._pinned: dict[tuple[int, ...], _PinnedBuffers] = {}

    @property
    def on_cuda(self) -> bool:
        return self._torch_device.type == "cuda"

    def _load(self) -> None:
        if self.precision == "int8":
            raise BackendUnavailable("torch runner has no INT8 path; use onnxruntime or tensorrt")
        if self.precision not in DTYPES:
            raise ValueError(f"torch runner precision must be one of {', '.join(DTYPES)}, got {self.precision!r}")
        if self.on_cuda and not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA GPU")
        if self.precision == "fp16" and not self.on_cuda:
            # measured: eager FP16 ran ~9x slower than FP32 on a 2-core CPU; not a baseline anyone would pick
            raise BackendUnavailable("torch runs FP16 on CUDA only: its CPU half-precision kernels are slow fallbacks")
        if self.precision == "bf16":
            if self.on_cuda:
                reason = None if torch.cuda.is_bf16_supported() else "this GPU has no bf16 support"
            else:
                reason = cpu_bf16_unavailable_reason()
            if reason is not None:
                raise BackendUnavailable(reason)
        checkpoint = self.checkpoint if isinstance(self.checkpoint, Checkpoint) else load_checkpoint(self.checkpoint)
        model = checkpoint.build_model()
        if self.on_cuda:
            try:
                from ..plugin import kernel  # noqa: F401  (the CUDA forward runs it)
            except ImportError as error:
                raise BackendUnavailable(f"the Triton LRN kernel cannot be imported ({error})") from None
            use_triton_lrn(model)
            self.device = torch.cuda.get_device_name(self._torch_device)
        if self.cuda_graphs and not self.on_cuda:
            self.notes.append("CUDA graphs need CUDA: ran without")
        self._classes = checkpoint.config.num_classes
        # Module.to takes memory_format (torch docs); torch's stubs leave it out of the overloads
        self.model = model.to(self._torch_device, DTYPES[self.precision], memory_format=self._memory_format).eval()  # type: ignore[call-overload]
        if not self.on_cuda:
            self.notes.append("channels-last (NHWC) on CPU")
        # dynamic=False: one static graph per batch size, as an engine has one per profile
        self._compiled = torch.compile(self.model, dynamic=False) if self.compile else None

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.preserve_format if self.on_cuda else torch.channels_last

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        """float32 images already on the device -> float32 logits on the device."""
        x = images.to(DTYPES[self.precision], memory_format=self._memory_format)
        if self._compiled is not None:
            try:
                return self._compiled(x).float()
            except Exception as error:  # noqa: BLE001 -- inductor/dynamo failures come in many types
                first_line = (str(error).strip().splitlines() or [""])[0][:120]
                self.notes.append(f"torch.compile failed ({error.__class__.__name__}: {first_line}); ran eager")
                self._compiled = None
        assert self.model is not None, "Runner.infer loads before it runs"
        return self.model(x).float()

    def _infer(self, images: np.ndarray) -> np.ndarray:
        host = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with torch.inference_mode():
            if not self.on_cuda:
                return self._forward(host).numpy()
            return self._infer_cuda(host)

    def _infer_cuda(self, host: torch.Tensor) -> np.ndarray:
        shape = tuple(host.shape)
        if shape not in self._pinned:
            self._pinned[shape] = _PinnedBuffers(
                torch.empty(shape, pin_memory=True), torch.empty((shape[0], self._classes), pin_memory=True)
            )
        pinned = self._pinned[shape]
        pinned.inputs.copy_(host)
        graph = None
        if self.cuda_graphs:
            graph = self._graphs.get(shape) or self._capture(pinned.inputs)
        start, copied_in, computed, copied_out = (torch.cuda.Event(enable_timing=True) for _ in range(4))
        start.record()
        if graph is not None:
            graph.inputs.copy_(pinned.inputs, non_blocking=True)
            copied_in.record()
            graph.graph.replay()
            logits = graph.outputs
        else:
            device_inputs = pinned.inputs.to(self._torch_device, non_blocking=True)
            copied_in.record()
            logits = self._forward(device_inputs)
        computed.record()
        pinned.outputs.copy_(logits, non_blocking=True)
        copied_out.record()
        copied_out.synchronize()
        self.last_timing = StageTiming(
            h2d_ms=start.elapsed_time(copied_in),
            compute_ms=copied_in.elapsed_time(computed),
            d2h_ms=computed.elapsed_time(copied_out),
        )
        return pinned.outputs.numpy().copy()  # the pinned buffer is reused by the next call

    def _capture(self, example: torch.Tensor) -> _CapturedGraph:
        """Capture the forward for ``example``'s shape (compiling first, if asked)."""
        inputs = example.to(self._torch_device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(CAPTURE_WARMUP):  # also triggers compilation before capture
                self._forward(inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._forward(inputs)
        captured = _CapturedGraph(graph, inputs, outputs)
        self._graphs[tuple(example.shape)] = captured
        return captured

    def profile(self, images: np.ndarray, runs: int) -> list[OpTime]:
        """torch.profiler over ``runs`` eager calls after one warm-up, each module of the
        network inside a ``record_function`` range named by :func:`profiled_name`:
        CPU time on a CPU, device time on CUDA, per call (the median over the calls)."""
        from torch.profiler import ProfilerActivity, profile, record_function

        if self.compile:
            raise BackendUnavailable("torch.compile fuses the modules away: profile the eager torch backend instead")
        assert self.model is not None, "profile needs load()"
        ranges: dict[int, record_function] = {}
        handles = []
        kinds: dict[str, str] = {}  # label -> module type
        for block in (self.model.get_submodule("features"), self.model.get_submodule("classifier")):
            for name, module in block.named_children():
                label = profiled_name(name)
                kinds[label] = type(module).__name__

                def enter(module, inputs, label=label) -> None:
                    ranges[id(module)] = record_function(label).__enter__()

                def leave(module, inputs, output) -> None:
                    ranges.pop(id(module)).__exit__(None, None, None)

                handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.on_cuda else [])
        try:
            self._infer(images)
            with profile(activities=activities) as profiled:
                for _ in range(runs):
                    self._infer(images)
        finally:
            for handle in handles:
                handle.remove()
        calls: dict[str, list[float]] = {}
        for event in profiled.events():
            if event.name in kinds:
                total_us = event.device_time_total if self.on_cuda else event.cpu_time_total
                calls.setdefault(event.name, []).append(total_us / 1e3)
        return [OpTime(label, kinds[label], median_per_call(ms, runs), self.precision) for label, ms in calls.items()]

    def _close(self) -> None:
        self.model = self._compiled = None
        self._graphs.clear()
        self._pinned.clear()
