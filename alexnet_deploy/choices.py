"""Every named choice a user makes (on the command line or in a config), as a ``str``
Enum: Typer validates the value and ``--help`` lists the choices, and library code
compares against members instead of re-spelling strings. This module imports nothing
heavy, so the CLI can use it at import time.

The precisions of ONNX files and engines are :class:`alexnet_deploy.artifacts.Precision`.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A ``str`` Enum that reads as its value in messages and f-strings."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class DeviceChoice(Choice):
    AUTO = "auto"  # CUDA when torch sees a GPU, else CPU
    CPU = "cpu"
    CUDA = "cuda"


class Schedule(Choice):
    COSINE = "cosine"  # linear warm-up, then cosine decay to 0, stepped every batch
    PLATEAU = "plateau"  # divide lr by 10 when val loss stalls (the paper)
    STEP = "step"  # divide lr by 10 every --step-size epochs


class Recipe(Choice):
    """A named set of training defaults (``train.recipe``); any option given overrides it."""

    FAST = "fast"  # converges in a few epochs: warm-up + cosine, Nesterov, label smoothing
    PAPER = "paper"  # Krizhevsky et al. 2012, Section 5: lr 0.01, /10 on plateau, 90 epochs


class Variant(Choice):
    """Which AlexNet (``model.py``): the 2012 paper's, or torchvision's ``alexnet``."""

    PAPER = "paper"  # LRN, two-group conv2/4/5, 96-256-384-384-256 channels, 227 px
    TORCHVISION = "torchvision"  # "One weird trick" (2014): no LRN, no groups, 64-192-384-256-256, 224 px


class TrainingPrecision(Choice):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class LrnExport(Choice):
    PLUGIN = "plugin"  # our custom op, resolved by TensorRT to the Triton plugin
    NATIVE = "native"  # ONNX's own LRN (onnxruntime, Triton's onnxruntime backend)


class CalibrationMethod(Choice):
    MAX = "max"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


class BenchBackend(Choice):
    TENSORRT = "tensorrt"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TORCH = "torch"
    TORCH_COMPILE = "torch-compile"


class BenchPrecision(Choice):
    """The ONNX/engine precisions plus bf16, which only torch rows run."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class PredictBackend(Choice):
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TORCH = "torch"
    TENSORRT = "tensorrt"


class ServedBackend(Choice):
    """Runners the local Triton server hosts inside its python backend."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


class Protocol(Choice):
    HTTP = "http"
    GRPC = "grpc"


class RepositoryFlavour(Choice):
    STOCK = "stock"  # Triton's onnxruntime / openvino / tensorrt_plan backends
    LOCAL = "local"  # python backend only, for `serve`


class QdqLayout(Choice):
    """Which INT8 layout ``sensitivity`` measures."""

    TENSORRT = "tensorrt"  # Q/DQ on the Conv/Gemm inputs: alexnet.int8.onnx, the engine's
    ONNXRUNTIME = "onnxruntime"  # the integer-kernel layout: alexnet.int8-ort.onnx
    BOTH = "both"
