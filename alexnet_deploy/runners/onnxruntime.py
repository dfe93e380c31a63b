"""onnxruntime backend. For graphs with our LRN plugin node it runs the standard-op
twin (``graph.to_standard_lrn``): onnxruntime's own LRN kernel is then an independent
implementation against which the plugin is judged. FP32 on CPU is the reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..errors import BackendUnavailable
from ..graph import INPUT_NAME, OUTPUT_NAME, load_model, to_standard_lrn
from ..inference import Runner

if TYPE_CHECKING:
    import onnxruntime


def available_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(
        self,
        model: Path | onnx.ModelProto,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        super().__init__(precision, device)
        self.model = model
        self.threads = threads
        self.session: onnxruntime.InferenceSession | None = None

    def _load(self) -> None:
        import onnxruntime

        provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[self.device]
        if provider not in available_providers():
            raise BackendUnavailable(f"onnxruntime has no {provider} here (install onnxruntime-gpu for CUDA)")
        model = self.model if isinstance(self.model, onnx.ModelProto) else load_model(self.model, require_plugin=False)
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        self.session = onnxruntime.InferenceSession(
            to_standard_lrn(model, half_precision=self.precision == "fp16").SerializeToString(),
            options,
            providers=[provider],
        )

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

    def _close(self) -> None:
        self.session = None
