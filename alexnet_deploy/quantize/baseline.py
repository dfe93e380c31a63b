"""onnxruntime's own ``quantize_static``: the independent INT8 baseline that our
calibration and Q/DQ layouts are compared with by ``build --compare-methods``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from ..artifacts import Precision
from ..digests import set_metadata
from ..graph import INPUT_NAME, to_plugin_lrn, to_standard_lrn
from .int8 import QUANTIZED_OPS


def onnxruntime_int8(
    model: onnx.ModelProto, images: np.ndarray, workdir: Path, activations: str = "int8"
) -> onnx.ModelProto:
    """onnxruntime's ``quantize_static`` (QDQ, per-channel symmetric int8 weights, MinMax)
    on the standard-op twin, LRN swapped back to our plugin node afterwards: the
    independent INT8 baseline that ours is compared with. ``activations``: ``"int8"``
    (symmetric, as TensorRT takes them) or ``"uint8"`` (asymmetric, onnxruntime's own
    default, the u8s8 pairing its x86 kernels run fastest)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(images[i : i + 32] for i in range(0, len(images), 32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    source, target = Path(workdir) / "twin.fp32.onnx", Path(workdir) / "twin.ort-int8.onnx"
    onnx.save(to_standard_lrn(model), str(source))
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # it logs advice about pre-processing on the root logger
    try:
        quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": activations == "int8", "WeightSymmetric": True},
        )
    finally:
        root_logger.setLevel(previous_level)
    quantized = to_plugin_lrn(onnx.load(str(target)))
    set_metadata(quantized, {"precision": Precision.INT8.value, "target_runtime": "onnxruntime"})
    return quantized
