"""Run under a real TensorRT bindings wheel with the core stood in (``tensorrt_standin``):
our IProfiler, built on that release's ``tensorrt.IProfiler``, receives layer times as
TensorRT reports them, and the execution-context API the runner's ``profile`` uses
exists in that release. Writes what it saw as JSON to argv[1]."""

from __future__ import annotations

import json
import sys

import tensorrt as trt

from alexnet_deploy.layer_names import is_conversion, layer_of
from alexnet_deploy.tensorrt.profiler import layer_time_recorder, op_times

# Layer names as an engine built from our named graph reports them: fused nodes joined
# by " + ", the copies TensorRT inserts named "Reformatting CopyNode for ...".
REPORTED = (
    ("conv1/QuantizeLinear_0 + conv1 + conv1/Relu_1", 1.5),
    ("Reformatting CopyNode for Input Tensor 0 to norm1", 0.25),
    ("norm1", 0.5),
    ("fc6 + fc6/Relu_17", 2.0),
    ("fc8", 0.125),
)
RUNS = 2

recorder = layer_time_recorder()
for _ in range(RUNS):
    for name, ms in REPORTED:
        recorder.report_layer_time(name, ms)
ops = op_times(dict(recorder.totals), RUNS)
api = {
    "IExecutionContext": ["profiler", "execute_async_v3", "set_tensor_address", "set_input_shape"],
    "ICudaEngine": ["create_execution_context"],
}
observed = {
    "version": trt.__version__,
    "is_iprofiler": isinstance(recorder, trt.IProfiler),
    "missing_api": [
        f"{cls}.{name}" for cls, names in api.items() for name in names if not hasattr(getattr(trt, cls), name)
    ],
    "ops": [
        {
            "name": op.name,
            "ms": op.ms,
            "layer": "conversions" if is_conversion(op.type) else layer_of(op.name),
            "fused": list(op.fused),
        }
        for op in ops
    ],
}
with open(sys.argv[1], "w") as out:
    json.dump(observed, out)
