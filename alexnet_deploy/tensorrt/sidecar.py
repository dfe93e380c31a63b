"""The engine sidecar: the JSON file beside each plan that records what the engine is
tied to (TensorRT version, GPU, compute capability), its batch profile, ONNX hash, build
time and per-layer precision -- and whether a plan fits this machine.

Its path is ``artifacts.sidecar_of(plan)`` (``engines/alexnet.fp16.plan`` ->
``engines/alexnet.fp16.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..artifacts import sidecar_of
from ..cuda_driver import CudaDevice
from ..errors import DeployError
from ..files import write_text_atomic

SIDECAR_FORMAT = 1


@dataclass
class BatchProfile:
    """The optimization profile of the engine's single input; shapes are NCHW."""

    input: str
    min: list[int]
    opt: list[int]
    max: list[int]


@dataclass
class LayerPrecision:
    """One engine layer as the inspector reports it: precision is that of its first
    output (``"fp16"``, ``"int8"``, ...), ``outputs`` the raw format/datatype strings."""

    name: str
    type: str
    precision: str
    outputs: list[str] = field(default_factory=list)


@dataclass
class EngineSidecar:
    plan: str
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profile: BatchProfile
    onnx_path: str
    onnx_sha256: str
    build_seconds: float
    workspace_gib: float
    tf32: bool
    plugin: str
    built_at: str
    layers: list[LayerPrecision]
    format: int = SIDECAR_FORMAT

    def precision_counts(self) -> dict[str, int]:
        """How many engine layers run in each precision."""
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.precision] = counts.get(layer.precision, 0) + 1
        return counts

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> EngineSidecar:
        data = json.loads(text)
        data["profile"] = BatchProfile(**data["profile"])
        data["layers"] = [LayerPrecision(**layer) for layer in data["layers"]]
        return cls(**data)


def read_sidecar(plan_path: Path) -> EngineSidecar:
    path = sidecar_of(plan_path)
    if not path.is_file():
        raise DeployError(f"{plan_path} has no sidecar {path}; rebuild the engine with `alexnet-deploy build`")
    try:
        return EngineSidecar.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as error:
        raise DeployError(f"{path} is not a valid engine sidecar ({error.__class__.__name__}: {error})") from None


def write_sidecar(plan_path: Path, sidecar: EngineSidecar) -> Path:
    """Write the sidecar beside ``plan_path`` (atomically) and return its path."""
    path = sidecar_of(plan_path)
    write_text_atomic(path, sidecar.to_json())
    return path


def sidecar_mismatches(sidecar: EngineSidecar, installed_tensorrt: str | None, device: CudaDevice | None) -> list[str]:
    """Why an engine built as ``sidecar`` describes cannot run here; empty when it can.

    A plan is tied to the exact TensorRT version and to the GPU it was tuned on (its
    kernels, including the LRN plugin's PTX, were chosen for that compute capability).
    """
    problems = []
    if installed_tensorrt != sidecar.tensorrt_version:
        have = f"TensorRT {installed_tensorrt}" if installed_tensorrt else "no TensorRT"
        problems.append(f"built with TensorRT {sidecar.tensorrt_version}, this machine has {have}")
    if device is None:
        problems.append(
            f"built for {sidecar.gpu_name} (compute {sidecar.compute_capability}), this machine has no CUDA GPU"
        )
    elif device.name != sidecar.gpu_name or device.compute_capability != sidecar.compute_capability:
        problems.append(
            f"built for {sidecar.gpu_name} (compute {sidecar.compute_capability}), "
            f"this machine has {device.name} (compute {device.compute_capability})"
        )
    return problems
