"""Choosing the torch device from ``--device auto|cpu|cuda``, and what the CPU's
instruction set offers reduced precision (VNNI for INT8, AVX512-BF16/AMX for bf16)."""

from __future__ import annotations

from pathlib import Path

import torch

from .choices import DeviceChoice
from .errors import DeployError

DEVICE_CHOICES = DeviceChoice.values()


def resolve_device(name: str) -> torch.device:
    if name not in DEVICE_CHOICES:
        raise DeployError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeployError("--device cuda was asked for but no CUDA GPU is available to torch")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# cpuinfo flags that change which kernels can run natively: AVX2 (the x86 baseline of
# every fast path), AVX-512, VNNI (int8 dot products without int16 saturation), bf16, AMX
CPU_PRECISION_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_precision_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """Which of :data:`CPU_PRECISION_FLAGS` this CPU has, read from Linux's cpuinfo
    (empty where there is none: the features are then unknown, not absent)."""
    if not cpuinfo.is_file():
        return ()
    flags: set[str] = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return tuple(f for f in CPU_PRECISION_FLAGS if f in flags)


def cpu_bf16_unavailable_reason(features: tuple[str, ...] | None = None) -> str | None:
    """None when the CPU computes bf16 natively; otherwise why bf16 rows are skipped
    (without AVX512-BF16 or AMX, torch emulates bf16 and it is slower than float32)."""
    features = cpu_precision_features() if features is None else features
    if any(flag in features for flag in BF16_FLAGS):
        return None
    return "this CPU has no native bf16 (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo): torch would emulate it"
