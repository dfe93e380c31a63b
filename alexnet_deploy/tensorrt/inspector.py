"""Per-layer precision of a built engine, from TensorRT's engine inspector: asking it
(``inspect_layers``) and parsing its JSON, whose spelling differs between TensorRT 10
and 11 (``layer_precisions``)."""

from __future__ import annotations

import json

from .sidecar import BatchProfile, LayerPrecision

_DATATYPES = (  # inspector spellings -> ours; specific names before the ones they contain
    (("INT8",), "int8"),
    (("INT32",), "int32"),
    (("INT64",), "int64"),
    (("BOOL",), "bool"),
    (("FP8", "FLOAT8", "E4M3"), "fp8"),
    (("BF16", "BFLOAT16"), "bf16"),
    (("FP16", "HALF", "FLOAT16"), "fp16"),
    (("FP32", "FLOAT"), "fp32"),
)


def datatype_of(format_string: str) -> str:
    """'Row major linear FP16 format' -> 'fp16'; 'unknown' when no datatype is named."""
    upper = format_string.upper()
    for spellings, name in _DATATYPES:
        if any(spelling in upper for spelling in spellings):
            return name
    return "unknown"


def _tensor_format(tensor: dict) -> str:
    # TensorRT 10 writes one "Format/Datatype" string; 11 split it into "Datatype" and "Format".
    if "Format/Datatype" in tensor:
        return tensor["Format/Datatype"]
    return " ".join(str(tensor[key]) for key in ("Datatype", "DataType", "Format") if tensor.get(key))


def layer_precisions(engine_information: dict) -> list[LayerPrecision]:
    """Per-layer precision from ``IEngineInspector.get_engine_information(JSON)``, built
    with DETAILED profiling verbosity (otherwise layers are bare names: precision 'unknown')."""
    layers = []
    for layer in engine_information.get("Layers", []):
        if isinstance(layer, str):
            layers.append(LayerPrecision(layer, "unknown", "unknown"))
            continue
        outputs = [_tensor_format(t) for t in layer.get("Outputs", [])]
        inputs = [_tensor_format(t) for t in layer.get("Inputs", [])]
        first = (outputs or inputs or [""])[0]
        layers.append(LayerPrecision(layer.get("Name", "?"), layer.get("LayerType", "?"), datatype_of(first), outputs))
    return layers


def inspect_layers(engine_bytes: bytes, profile: BatchProfile) -> list[LayerPrecision]:
    """Deserialize the fresh plan and ask its inspector; an execution context with the
    opt shape set lets the inspector resolve dynamic dims and report formats."""
    import tensorrt as trt
    from polygraphy.backend.trt import EngineFromBytes

    engine = EngineFromBytes(engine_bytes)()
    context = engine.create_execution_context()
    context.set_input_shape(profile.input, tuple(profile.opt))
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return layer_precisions(info)
