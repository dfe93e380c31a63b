"""What the CUDA driver reports about GPU 0 (name, compute capability, CUDA version) and
which PTX ISA such a driver JITs, asked through libcuda with ctypes.

A leaf with only the standard library: the TensorRT backend, the plugin's AOT kernel
compile, the runners and the doctor all need these facts, on machines without a GPU,
torch's CUDA build, pycuda or TensorRT too.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass


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
