"""The FP16 twin of an export: float16 weights and activations, float32 graph I/O.

TensorRT 11 has no FP16 builder flag (TensorRT 10 builds the same file with the
strongly-typed flag), so the precision lives in the ONNX. The LRN plugin node runs in
fp16 too; the plugin sums squares in fp32.
"""

from __future__ import annotations

import warnings

import onnx

from ..artifacts import Precision
from ..digests import set_metadata


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and activations with FP32 graph I/O (onnxconverter-common)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every weight below fp16's range
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    set_metadata(half, {"precision": Precision.FP16.value})
    return half
