"""What this machine has, and which pipeline steps can run on it (``doctor``), and the
machine description every benchmark report carries."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .cuda_driver import cuda_device
from .tensorrt.availability import tensorrt_unavailable_reason, tensorrt_version

PACKAGES = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "polygraphy",
    "tensorrt",
    "pycuda",
    "triton",
    "typer",
)


@dataclass
class Report:
    versions: dict[str, str | None]
    gpu: str | None
    steps: dict[str, str]  # step -> "yes" or why not
    problems: list[str] = field(default_factory=list)  # broken installs, each with its fix
    cpu: str = ""
    cpu_features: list[str] = field(default_factory=list)  # the ISA flags that pick kernels (devices.py)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_problems(version: Callable[[str], str | None] = package_version) -> list[str]:
    """Known-broken combinations of installed distributions, each with the fix."""
    problems = []
    if version("onnxruntime") and version("onnxruntime-gpu"):
        # Both wheels install the same `onnxruntime` package directory; whichever was
        # installed last overwrote parts of the other, and the result is undefined.
        problems.append(
            f"onnxruntime {version('onnxruntime')} and onnxruntime-gpu {version('onnxruntime-gpu')} are both "
            "installed and overwrite each other's files; fix: pip uninstall -y onnxruntime onnxruntime-gpu "
            "&& pip install onnxruntime-gpu"
        )
    return problems


def diagnose() -> Report:
    versions = {name: package_version(name) for name in PACKAGES}
    versions["tensorrt"] = tensorrt_version()  # the module, not one of its several distributions
    device = cuda_device()
    gpu = None
    if device is not None:  # asked of the CUDA driver, not torch: a CPU torch build on a GPU machine sees nothing
        major, minor = device.capability
        gpu = f"{device.name} (sm_{major}{minor}, CUDA driver {device.driver_version[0]}.{device.driver_version[1]})"
    from .runners.registry import ready_reason

    build_reason = tensorrt_unavailable_reason()
    steps = {
        "train": "yes" + (" (CUDA)" if gpu else " (CPU)"),
        "export": "yes",
        "quantize (INT8/FP16 ONNX)": "yes",
        "onnxruntime reference": "yes",
        "Triton LRN kernel": ("yes (GPU)" if gpu else "interpreter only (TRITON_INTERPRET=1)")
        if versions["triton"]
        else "no: triton is not installed",
        "TensorRT engine build": "yes" if build_reason is None else f"no: {build_reason}",
        "TensorRT runner / bench": ready_reason("tensorrt"),
        "OpenVINO CPU backend": ready_reason("openvino"),
    }
    from .devices import cpu_precision_features

    return Report(versions, gpu, steps, install_problems(), cpu_name(), list(cpu_precision_features()))


def cpu_name() -> str:
    """The CPU's model name from Linux's cpuinfo, else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_description() -> dict:
    """Where the numbers were taken: CPU, cores, GPU and the versions that matter."""
    cpu = cpu_name()
    packages = ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "triton")
    versions = {package: version for package in packages if (version := package_version(package)) is not None}
    from .devices import cpu_precision_features

    device = cuda_device()
    gpu = device.name if device is not None else None
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_precision_features": list(cpu_precision_features()),
        "gpu": gpu,
        "platform": platform.platform(),
        "versions": versions,
    }
