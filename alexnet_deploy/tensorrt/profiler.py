"""TensorRT's per-layer times, trtexec-style (``--dumpProfile --separateProfileRun``):
an ``IProfiler`` on an execution context of its own, so the timed runs stay unprofiled.

TensorRT calls ``report_layer_time(layer_name, ms)`` once per engine layer after each
profiled enqueue. Its layer names are the ONNX node names it fused, joined by `` + ``
(the engine is built from the graph named by ``layer_names.name_nodes``, see
``engine.build_engine``), and the copies it inserts between formats are named
``Reformatting CopyNode for ...``: the first are put onto AlexNet's layers by
``layer_names.layer_of``, the second are conversions.
"""

from __future__ import annotations

from typing import Any

from ..inference import OpTime

REFORMAT_PREFIX = "Reformatting CopyNode"


def layer_time_recorder() -> Any:
    """A ``tensorrt.IProfiler`` that sums each layer's reported times (``totals``)."""
    import tensorrt as trt

    class LayerTimeRecorder(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.totals: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.totals[layer_name] = self.totals.get(layer_name, 0.0) + ms

    return LayerTimeRecorder()


def op_times(totals: dict[str, float], runs: int) -> list[OpTime]:
    """The recorder's totals over ``runs`` profiled enqueues, per enqueue. Each op's
    ``fused`` lists the ONNX nodes TensorRT fused into it."""
    ops = []
    for name, ms in totals.items():
        kind = "Reformat" if name.startswith(REFORMAT_PREFIX) else "TensorRT layer"
        fused = tuple(part.strip() for part in name.split(" + ")) if " + " in name else ()
        ops.append(OpTime(name, kind, ms / runs, fused=fused))
    return ops
