"""Mixed-precision training: which autocast dtype, whether a gradient scaler, and the
memory format, chosen once from ``--precision`` and the device.

* ``fp32``: no autocast (the default; what the checkpoint, export and references use).
* ``bf16``: autocast to bfloat16 on CPU or CUDA. bfloat16 keeps float32's exponent
  range, so no loss scaling is needed; on CPU it is fast where the cores have
  AVX512-BF16 or AMX.
* ``fp16``: autocast to float16 with a ``GradScaler`` (float16 gradients underflow
  without loss scaling), on CUDA only: CPU float16 matmuls are slow and the scaler
  exists for the GPU path.

Parameters, optimizer state and therefore the checkpoint stay float32 in every mode:
autocast only changes the dtype ops compute in. The model trains channels-last (NHWC)
on every device: cuDNN's convolutions prefer it, and so do oneDNN's on the CPU (measured
by benchmarks/train_throughput.py; figures in docs/training.md). The checkpoint is written
contiguous.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..choices import TrainingPrecision
from ..errors import DeployError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class MixedPrecision:
    name: str = "fp32"
    device_type: str = "cpu"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is a pass-through unless this is fp16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last


def resolve_precision(name: str, device: torch.device) -> MixedPrecision:
    if name not in TrainingPrecision.values():
        raise DeployError(f"unknown --precision {name!r}; choose one of {', '.join(TrainingPrecision.values())}")
    if name == "fp16" and device.type != "cuda":
        raise DeployError("--precision fp16 needs a CUDA device (it trains with a gradient scaler); use bf16 on CPU")
    return MixedPrecision(name, device.type)
