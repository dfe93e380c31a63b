"""Whether TensorRT can build and run engines here: the installed TensorRT version, GPU 0
as the CUDA driver reports it, and the one-line reason when either falls short.

Only the standard library at import time (``cuda_driver`` and the plugin's constants are
light): the doctor, the build stage and the runner all ask these questions, on machines
without TensorRT too.
"""

from __future__ import annotations

import importlib.util

from ..cuda_driver import CudaDevice, cuda_device
from ..plugin import MIN_TENSORRT, parse_version

UNUSABLE = "unusable"  # tensorrt_version()'s prefix for an install that fails to import


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
