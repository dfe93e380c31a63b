"""What this machine has, and which pipeline steps can run on it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass


PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "polygraphy", "tensorrt", "pycuda", "triton", "typer")


@dataclass
class Report:
    versions: dict[str, str | None]
    gpu: str | None
    steps: dict[str, str]  # step -> "yes" or why not


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorrt_version() -> str | None:
    """TensorRT ships as several distributions (tensorrt, tensorrt-cu12, ...); ask the module."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt

        return tensorrt.__version__
    except Exception as error:  # a broken install must not break the doctor
        return f"unusable ({error.__class__.__name__})"


def cuda_gpu() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{torch.cuda.get_device_name(0)} (sm_{major}{minor})"


def diagnose() -> Report:
    versions = {name: package_version(name) for name in PACKAGES}
    versions["tensorrt"] = tensorrt_version()
    gpu = cuda_gpu()
    trt_ok = versions["tensorrt"] is not None and not versions["tensorrt"].startswith("unusable")
    if not trt_ok:
        engine = "no: TensorRT is not installed (pip install 'alexnet-deploy[gpu]' on a CUDA machine)"
    elif gpu is None:
        engine = "no: TensorRT is installed but no CUDA GPU is visible"
    else:
        engine = "yes"
    steps = {
        "train": "yes" + (" (CUDA)" if gpu else " (CPU)"),
        "export": "yes",
        "quantize (INT8/FP16 ONNX)": "yes",
        "onnxruntime reference": "yes",
        "Triton LRN kernel": ("yes (GPU)" if gpu else "interpreter only (TRITON_INTERPRET=1)")
        if versions["triton"]
        else "no: triton is not installed",
        "TensorRT engine build / bench": engine,
    }
    return Report(versions, gpu, steps)
