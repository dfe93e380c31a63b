"""Whether TensorRT can build and run engines here: the installed TensorRT version, GPU 0
as the CUDA driver reports it, and the one-line reason when either falls short.

Only the standard library at import time: the doctor, the build stage, the plugin
registration and the runner all ask these questions, on machines without TensorRT too.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from dataclasses import dataclass

# tensorrt.plugin.aot_impl appeared in 10.9, but the 10.9 ONNX parser looks a Python
# plugin up by the *node name* (onnx-tensorrt passed the name to createPlugin until
# 10.10; NVIDIA's own sample named its node after the op until then), and our nodes are
# named node_lrn, node_lrn_1: only parsers >= 10.10 pass op_type, which
# tensorrt.plugin's create_plugin needs ("namespace::op_type" in its registry).
MIN_TENSORRT = (10, 10)

UNUSABLE = "unusable"  # tensorrt_version()'s prefix for an install that fails to import


@dataclass(frozen=True)
class CudaDevice:
    """GPU 0 as the CUDA driver reports it."""

    name: str
    capability: tuple[int, int]  # (major, minor), e.g. (9, 0) for H100
    driver_version: tuple[int, int]  # CUDA version the driver supports, e.g. (12, 8)

    @property
    def compute_capability(self) -> str:
        return f"{self.capability[0]}.{self.capability[1]}"


def cuda_device() -> CudaDevice | None:
    """GPU 0 via the CUDA driver library itself, or None when there is no usable GPU.

    Asking libcuda directly (rather than torch or pycuda) works wherever TensorRT can
    run, whichever torch build is installed, and never creates a context.
    """
    try:
        cuda = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
        count, device, version = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        major, minor = ctypes.c_int(), ctypes.c_int()
        name = ctypes.create_string_buffer(256)
        _check(cuda.cuInit(0))
        _check(cuda.cuDeviceGetCount(ctypes.byref(count)))
        if count.value < 1:
            return None
        _check(cuda.cuDeviceGet(ctypes.byref(device), 0))
        _check(cuda.cuDeviceGetName(name, len(name), device))
        _check(cuda.cuDeviceGetAttribute(ctypes.byref(major), _CAPABILITY_MAJOR, device))
        _check(cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CAPABILITY_MINOR, device))
        _check(cuda.cuDriverGetVersion(ctypes.byref(version)))
    except (OSError, _CudaError):  # no driver library, no device, or a broken driver
        return None
    return CudaDevice(
        name.value.decode(), (major.value, minor.value), (version.value // 1000, version.value % 1000 // 10)
    )


_CAPABILITY_MAJOR, _CAPABILITY_MINOR = 75, 76  # CUdevice_attribute values in cuda.h


class _CudaError(Exception):
    """A CUDA driver call returned an error; the device query treats it as "no usable GPU"."""


def _check(result: int) -> None:
    if result != 0:  # CUDA_SUCCESS
        raise _CudaError(result)


def max_ptx_version(driver_version: tuple[int, int]) -> int:
    """Newest PTX ISA (Triton's spelling, 8.5 -> 85) a driver of this CUDA version JITs.

    CUDA 12.0-12.5 shipped PTX 8.0-8.5, 12.6 stayed at 8.5, 12.8 brought 8.7 and 12.9
    8.8 (there was no 12.7); CUDA 13.x ships 9.x.
    """
    major, minor = driver_version
    if major >= 13:
        return 90 + (major - 13) * 10 + minor
    if major == 12:
        return 80 + minor if minor < 6 else 80 + minor - 1
    raise ValueError(f"CUDA {major}.{minor} drivers are too old for TensorRT 10")


def tensorrt_version() -> str | None:
    """The installed TensorRT version; None when the module is not installed, and
    ``"unusable (<error class>)"`` when it is but fails to import (missing libnvinfer, ...).

    TensorRT ships as several distributions (tensorrt, tensorrt-cu12, ...), so the
    module is asked, not the package metadata.
    """
    try:
        import tensorrt
    except ImportError:
        return None
    except Exception as error:  # noqa: BLE001 -- any failure of a broken install must not break the doctor or the reasons
        return f"{UNUSABLE} ({error.__class__.__name__})"
    return tensorrt.__version__


def parse_version(version: str) -> tuple[int, ...]:
    """'10.13.0.35' -> (10, 13, 0, 35); stops at the first non-numeric part."""
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def tensorrt_unavailable_reason(version: str | None = None, device: CudaDevice | None = None) -> str | None:
    """None when engines can be built here (TensorRT >= 10.10 and a CUDA GPU), else one
    line saying why. ``version``/``device`` default to what this machine has."""
    version = version if version is not None else tensorrt_version()
    if version is None:
        return "TensorRT is not installed (pip install 'alexnet-deploy[gpu]' on a CUDA machine)"
    if version.startswith(UNUSABLE):
        return f"TensorRT is installed but cannot be imported ({version})"
    if parse_version(version) < MIN_TENSORRT:
        return (
            f"TensorRT {version} is too old: the LRN plugin needs TensorRT >= {'.'.join(map(str, MIN_TENSORRT))} "
            "(ONNX parsers before 10.10 look Python plugins up by node name)"
        )
    if (device or cuda_device()) is None:
        return f"TensorRT {version} is installed but no CUDA GPU is visible"
    return None


def runner_unavailable_reason() -> str | None:
    """None when engines can be *run* here: what building needs, plus pycuda (the
    runner's device buffers, stream and events)."""
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        return reason
    if importlib.util.find_spec("pycuda") is None:
        return "pycuda is not installed: the TensorRT runner needs it (pip install 'alexnet-deploy[gpu]')"
    return None
