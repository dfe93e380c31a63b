"""onnxruntime backend. For graphs with our LRN plugin node it runs the standard-op
twin (``graph.to_standard_lrn``): onnxruntime's own LRN kernel is then an independent
implementation against which the plugin is judged. FP32 on CPU is the reference.

``lrn="window-sum"`` runs each LRN as ops instead (``graph.lrn_as_window_sum``: squares,
a banded MatMul over the channels, square roots, a division): the registry opens the
INT8 row so, because onnxruntime's LRN kernel took 75% of that row's time and the row
runs 2.8x faster without it (docs/bench.md, issue 28). The reference keeps the kernel:
it is the independent implementation the plugin is judged against."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..errors import BackendUnavailable
from ..graph import INPUT_NAME, OUTPUT_NAME, load_model, lrn_as_window_sum, to_standard_lrn
from ..inference import OpTime, Runner, median_per_call

if TYPE_CHECKING:
    import onnxruntime


def available_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


LRN_FORMULATIONS = ("kernel", "window-sum")  # onnxruntime's LRN op, or graph.lrn_as_window_sum


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"
    profiler = "onnxruntime session profiling (per-node kernel time)"
    profiler_leaves_out = (
        "session.run outside the kernels: feeding and fetching tensors, allocation, dispatch between nodes"
    )

    def __init__(
        self,
        model: Path | onnx.ModelProto,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        lrn: str = "kernel",
    ) -> None:
        super().__init__(precision, device)
        if lrn not in LRN_FORMULATIONS:
            raise ValueError(f"lrn must be one of {', '.join(LRN_FORMULATIONS)}, got {lrn!r}")
        self.model = model
        self.threads = threads
        self.lrn = lrn
        self.session: onnxruntime.InferenceSession | None = None
        if lrn == "window-sum":
            self.notes.append("LRN as a banded channel-window MatMul, not onnxruntime's LRN kernel")

    def _load(self) -> None:
        self.session = self._session()

    def _session(self, profile_prefix: str | None = None) -> onnxruntime.InferenceSession:
        import onnxruntime

        provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[self.device]
        if provider not in available_providers():
            raise BackendUnavailable(f"onnxruntime has no {provider} here (install onnxruntime-gpu for CUDA)")
        model = self.model if isinstance(self.model, onnx.ModelProto) else load_model(self.model, require_plugin=False)
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        twin = to_standard_lrn(model, half_precision=self.precision == "fp16")
        if self.lrn == "window-sum":
            twin = lrn_as_window_sum(twin)
        return onnxruntime.InferenceSession(twin.SerializeToString(), options, providers=[provider])

    def run_bare(self, images: np.ndarray) -> object:
        """One ``session.run`` and nothing else: the baseline that bench's harness check
        times the runner's own ``infer`` against."""
        if self.session is None:
            raise RuntimeError("run_bare before load()")
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})

    def _infer(self, images: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("infer before load()")
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})
        return logits.astype(np.float32, copy=False)

    def profile(self, images: np.ndarray, runs: int) -> list[OpTime]:
        """Session profiling in a second session: the kernel time of every node over the
        last ``runs`` of ``runs + 1`` calls (the first warms up), per call."""
        feed = {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)}
        with tempfile.TemporaryDirectory(prefix="alexnet-ort-profile-") as folder:
            session = self._session(str(Path(folder) / "profile"))
            for _ in range(runs + 1):
                session.run([OUTPUT_NAME], feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        return kernel_times(events, runs)

    def _close(self) -> None:
        self.session = None


def kernel_times(events: list[dict], runs: int) -> list[OpTime]:
    """Each node's kernel time per call in an onnxruntime profile: the median over the
    last ``runs`` ``model_run`` events, counting only the nodes that ran inside them."""
    calls = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in calls[-runs:]]
    times: dict[tuple[str, str], list[float]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if any(start <= event["ts"] <= end for start, end in windows):
            key = (event["name"].removesuffix("_kernel_time"), str(event.get("args", {}).get("op_name", "?")))
            times.setdefault(key, []).append(event["dur"] / 1e3)
    return [OpTime(name, op_type, median_per_call(ms, len(windows))) for (name, op_type), ms in times.items()]
