"""Drive TensorRT's real ``tensorrt.plugin`` through our LRN plugin as the ONNX parser and
the builder would, and record what happened. Run by ``test_tensorrt_conformance.py`` in a
subprocess whose ``tensorrt`` is one official bindings release (see ``tensorrt_standin``):

    python tests/tensorrt_conformance_probe.py MODEL.onnx OUT_DIR

Everything TensorRT's Python layer does here is its own code, unmodified. The stand-ins,
each named ``StandIn*``, replace only what the C++ core would provide: the plugin registry,
shape expressions and their builder, the launch-parameter sinks, and the GPU. The probe
asserts nothing; it writes ``observations.json`` (and each PTX it was handed) for the test
to check against independent references.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
import onnx
import tensorrt as trt
from onnx import helper

import alexnet_deploy.cuda_driver as cuda_driver
import alexnet_deploy.plugin.registration as registration
import alexnet_deploy.tensorrt.availability as availability
import alexnet_deploy.tensorrt.engine as engine
from alexnet_deploy.errors import DeployError
from alexnet_deploy.plugin import PLUGIN_NAME
from alexnet_deploy.tensorrt.config import EngineBuildConfig
from alexnet_deploy.tensorrt.engine import build_engine

# ---------------------------------------------------------------- stand-ins for the core


class StandInPluginRegistry:
    """libnvinfer's plugin registry: creators by (name, version, namespace)."""

    def __init__(self) -> None:
        self.creators: dict[tuple[str, str, str], object] = {}

    def register_creator(self, creator, namespace: str = "") -> bool:
        key = (creator.name, creator.plugin_version, namespace)
        if key in self.creators:
            return False
        self.creators[key] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = ""):
        return self.creators.get((name, version, namespace))

    @property
    def all_creators(self):
        return list(self.creators.values())


class StandInDimensionExpr(trt.IDimensionExpr):
    """A symbolic dimension as the builder's expression graph holds it, evaluable for
    concrete bindings of the symbols (here the batch size ``N``). Created through
    ``__new__`` because the real class has no Python constructor; ``tensorrt.plugin``
    accepts it because it *is* a ``trt.IDimensionExpr``."""

    @classmethod
    def make(cls, kind: str, value=None, op=None, args=()):
        expr = trt.IDimensionExpr.__new__(cls)
        expr.kind, expr.value, expr.op, expr.args = kind, value, op, args
        return expr

    def is_constant(self) -> bool:
        return self.kind == "constant"

    def get_constant_value(self) -> int:
        return self.value if self.kind == "constant" else -1

    def is_size_tensor(self) -> bool:
        return False

    def evaluate(self, bindings: dict[str, int]) -> int:
        if self.kind == "constant":
            return self.value
        if self.kind == "symbol":
            return bindings[self.value]
        a, b = (arg.evaluate(bindings) for arg in self.args)
        return _OPERATIONS[self.op](a, b)


def _operations():
    op = trt.DimensionOperation
    return {
        op.SUM: lambda a, b: a + b,
        op.PROD: lambda a, b: a * b,
        op.MAX: max,
        op.MIN: min,
        op.SUB: lambda a, b: a - b,
        op.EQUAL: lambda a, b: int(a == b),
        op.LESS: lambda a, b: int(a < b),
        op.FLOOR_DIV: lambda a, b: a // b,
        op.CEIL_DIV: lambda a, b: -(-a // b),
    }


_OPERATIONS = _operations()


class StandInExprBuilder:
    """The builder's IExprBuilder: constants and binary operations (folded when constant)."""

    def constant(self, value: int) -> StandInDimensionExpr:
        return StandInDimensionExpr.make("constant", int(value))

    def operation(self, op, a, b) -> StandInDimensionExpr:
        if a.is_constant() and b.is_constant():
            return self.constant(_OPERATIONS[op](a.value, b.value))
        return StandInDimensionExpr.make("operation", op=op, args=(a, b))


class StandInSink:
    """Where the core receives launch parameters (grid/block/shared memory) or extra args."""

    def __init__(self) -> None:
        self.items: dict = {}
        self.nbSymExprs = 0

    def __setitem__(self, index, value) -> None:
        self.items[index] = value

    def __setattr__(self, name, value) -> None:
        object.__setattr__(self, name, value)


STANDIN_GPU = cuda_driver.CudaDevice("stand-in GPU (sm_90, CUDA 12.8 driver)", (9, 0), (12, 8))

# ---------------------------------------------------------------- parser transcription

_FIELD_ARRAYS = {  # declared plugin field type -> numpy dtype the parser converts the attribute to
    trt.PluginFieldType.INT32: np.int32,
    trt.PluginFieldType.INT64: np.int64,
    trt.PluginFieldType.FLOAT32: np.float32,
    trt.PluginFieldType.FLOAT64: np.float64,
    trt.PluginFieldType.FLOAT16: np.float16,
}


def parser_lookup(node: onnx.NodeProto) -> tuple[str, str, str]:
    """(name, version, namespace) as the ONNX parser >= 10.10 looks a custom op up:
    name = op_type, version = ``plugin_version`` or "1", namespace = ``plugin_namespace``
    or the node's domain."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    decode = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    return node.op_type, decode(attrs.get("plugin_version", b"1")), decode(attrs.get("plugin_namespace", node.domain))


def parser_fields(node: onnx.NodeProto, creator) -> list:
    """The plugin fields the parser builds (onnx-tensorrt ``loadFields``): for each field the
    creator declares, in the creator's order, the node attribute of that name converted to
    the declared type, as a one-element array; attributes the creator does not declare
    (``plugin_namespace``, ``plugin_version``) are left out."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    fields = []
    for declared in creator.field_names:
        if declared.name not in attrs:
            continue
        dtype = _FIELD_ARRAYS[declared.type]
        fields.append(trt.PluginField(declared.name, np.array([attrs[declared.name]], dtype=dtype), declared.type))
    return fields


def parser_create_plugin(registry: StandInPluginRegistry, node: onnx.NodeProto, request):
    """Look the node up and create its plugin as the ONNX parser does. Returns the plugin
    and the field list, which owns the arrays the field collection points into and so
    must outlive the call (the parser keeps its buffers alive the same way)."""
    name, version, namespace = parser_lookup(node)
    creator = registry.get_creator(name, version, namespace)
    if creator is None:
        raise LookupError(f"no creator for {namespace}::{name} version {version}")
    field_list = parser_fields(node, creator)
    fields = trt.PluginFieldCollection(field_list)
    return creator.create_plugin(name, namespace, fields, trt.TensorRTPhase.BUILD, request), field_list


# ---------------------------------------------------------------- the probe


def dynamic_desc(dtype, dims, min_dims, max_dims):
    desc = trt.DynamicPluginTensorDesc()
    desc.desc.type = dtype
    desc.desc.format = trt.TensorFormat.LINEAR
    desc.desc.dims = trt.Dims(dims)
    desc.min = trt.Dims(min_dims)
    desc.max = trt.Dims(max_dims)
    desc.opt = trt.Dims(max_dims)
    return desc


def static_desc(dtype, dims):
    desc = trt.PluginTensorDesc()
    desc.type, desc.format, desc.dims = dtype, trt.TensorFormat.LINEAR, trt.Dims(dims)
    return desc


def record(observations: dict, key: str, action):
    try:
        observations[key] = {"ok": True, "value": action()}
    except Exception as error:  # noqa: BLE001 -- the test reports exactly what TensorRT's code raised
        observations[key] = {
            "ok": False,
            "error": f"{error.__class__.__name__}: {error}",
            "trace": traceback.format_exc(),
        }


def use_gpu(device_query) -> None:
    """Answer every module's GPU question (they import ``cuda_device`` by name) with ``device_query``."""
    availability.cuda_device = registration.cuda_device = engine.cuda_device = cuda_driver.cuda_device = device_query


def probe(model_path: Path, out_dir: Path) -> dict:
    observations: dict = {"tensorrt_version": trt.__version__, "tensorrt_file": trt.__file__}
    registry = StandInPluginRegistry()
    trt.get_plugin_registry = lambda: registry
    use_gpu(lambda: STANDIN_GPU)
    builder = StandInExprBuilder()

    record(observations, "register", lambda: registration.register_lrn_plugin() or _describe_registry(registry))
    model = onnx.load(str(model_path))
    nodes = [n for n in model.graph.node if n.op_type == PLUGIN_NAME]
    observations["plugin_nodes"] = [{"name": n.name, "lookup": parser_lookup(n)} for n in nodes]
    channels = _input_channels(model, nodes[0])
    observations["channels"] = channels

    for request in ("UNKNOWN", "PREFER_AOT", "STRICT_AOT"):
        qpcr = getattr(trt.QuickPluginCreationRequest, request)

        def create(qpcr=qpcr):
            created = [parser_create_plugin(registry, node, qpcr) for node in nodes]
            return [plugin for plugin, _ in created]

        record(observations, f"create_plugin/{request}", lambda: [_describe_plugin(p) for p in create()])

    def lifecycle(dtype_name: str):
        dtype = {"fp32": trt.float32, "fp16": trt.float16}[dtype_name]
        plugin, _fields = parser_create_plugin(registry, nodes[0], trt.QuickPluginCreationRequest.STRICT_AOT)
        result: dict = {"output_types": [str(t) for t in plugin.get_output_data_types([dtype], [4])]}
        batch = StandInDimensionExpr.make("symbol", "N")
        dims = [batch, builder.constant(channels), builder.constant(13), builder.constant(11)]
        # The DimsExprs it returns hold C++ pointers only the real core can read; the
        # plugin's own output descs keep the Python expressions, evaluated here at N = 7.
        plugin.get_output_shapes([dims], [], builder)
        result["output_dims"] = [d._expr.evaluate({"N": 7}) for d in plugin.output_descs[0].shape_expr]
        in_desc = dynamic_desc(dtype, (-1, channels, 13, 11), (1, channels, 13, 11), (256, channels, 13, 11))
        out_desc = dynamic_desc(dtype, (-1, channels, 13, 11), (1, channels, 13, 11), (256, channels, 13, 11))
        combos = plugin.get_supported_format_combinations([in_desc, out_desc], 1)
        result["format_combinations"] = [[str(c.type), str(c.format)] for c in combos]
        plugin.configure_plugin([in_desc], [out_desc])
        result["tactics"] = sorted(plugin.get_valid_tactics())
        returned: list = []
        real_aot_impl = plugin.aot_impl_function

        def recording_aot_impl(*args):  # passes TensorRT's call through untouched
            value = real_aot_impl(*args)
            returned.append(value)
            return value

        plugin.aot_impl_function = recording_aot_impl
        kernels = {}
        for tactic in result["tactics"]:
            plugin.set_tactic(tactic)
            launch_sink, args_sink = StandInSink(), StandInSink()
            plugin.get_launch_params([dims], [in_desc, out_desc], 1, launch_sink, args_sink, builder)
            kernel_name, ptx = plugin.get_kernel(
                [static_desc(dtype, (8, channels, 13, 11))], [static_desc(dtype, (8, channels, 13, 11))]
            )
            kernel_name = kernel_name.decode() if isinstance(kernel_name, bytes) else kernel_name
            ptx_path = out_dir / f"{dtype_name}-tactic{tactic}.ptx"
            ptx_path.write_bytes(ptx)
            _, _, launch, extra = returned[-1]
            kernels[str(tactic)] = {
                "kernel_name": kernel_name,
                "ptx": ptx_path.name,
                "extra_arg_count": args_sink.nbSymExprs,
                "extra_arg_types": [type(a).__name__ for a in args_sink.items.values()],
                "grid_x": {n: launch.grid_x._expr.evaluate({"N": n}) for n in (1, 8, 128, 256)},
                "block_x": launch.block_x._expr.evaluate({}),
                "shared_mem": launch.shared_mem._expr.evaluate({}),
                "extra_args": {n: [a._expr.evaluate({"N": n}) for a in extra] for n in (1, 8, 128, 256)},
            }
        result["kernels"] = kernels
        return result

    for dtype_name in ("fp32", "fp16"):
        record(observations, f"aot/{dtype_name}", lambda d=dtype_name: lifecycle(d))

    registration.clear_plugin_errors()
    registration.cuda_device = lambda: None  # the failure a build on a GPU-less machine meets

    def failing_aot():
        plugin, _fields = parser_create_plugin(registry, nodes[0], trt.QuickPluginCreationRequest.STRICT_AOT)
        plugin.get_output_data_types([trt.float32], [4])
        dims = [
            StandInDimensionExpr.make("symbol", "N"),
            builder.constant(channels),
            builder.constant(13),
            builder.constant(11),
        ]
        plugin.get_output_shapes([dims], [], builder)
        desc = dynamic_desc(trt.float32, (-1, channels, 13, 11), (1, channels, 13, 11), (256, channels, 13, 11))
        plugin.get_supported_format_combinations([desc, desc], 1)
        plugin.configure_plugin([desc], [desc])
        plugin.set_tactic(1)
        plugin.get_launch_params([dims], [desc, desc], 1, StandInSink(), StandInSink(), builder)

    record(observations, "aot_error", failing_aot)
    observations["plugin_errors"] = registration.plugin_errors()
    observations["build_failure_message"] = engine._build_failure(
        Path("alexnet.fp32.plan"), model_path, "", RuntimeError("plugin failed")
    )
    use_gpu(lambda: STANDIN_GPU)

    def build():
        try:
            build_engine(model_path, out_dir / "alexnet.plan", EngineBuildConfig(timing_cache=None))
        except DeployError as error:
            return {"deploy_error": str(error)}
        return {"deploy_error": None}

    record(observations, "build_engine", build)
    observations["api_surface"] = {name: _resolves(name) for name in API_SURFACE}
    return observations


# Every TensorRT name alexnet_deploy (engine build, inspector, runner) touches; each must
# exist in every supported release.
API_SURFACE = (
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "MemoryPoolType.WORKSPACE",
    "ProfilingVerbosity.DETAILED",
    "LayerInformationFormat.JSON",
    "TensorIOMode.INPUT",
    "float32",
    "float16",
    "nptype",
    "Logger.ERROR",
    "Runtime.deserialize_cuda_engine",
    "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.get_tensor_profile_shape",
    "ICudaEngine.create_execution_context",
    "ICudaEngine.create_engine_inspector",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
    "EngineInspector.get_engine_information",
)


def _resolves(dotted: str) -> bool:
    value = trt
    for part in dotted.split("."):
        if not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True


def _input_channels(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    """Channels of the plugin node's input, from the producing Conv's weight."""
    producers = {out: n for n in model.graph.node for out in n.output}
    initializers = {i.name: i for i in model.graph.initializer}
    current = producers[node.input[0]]
    while current.op_type != "Conv":
        current = producers[current.input[0]]
    return int(initializers[current.input[1]].dims[0])


def _describe_registry(registry: StandInPluginRegistry) -> list:
    return [
        {
            "name": creator.name,
            "version": creator.plugin_version,
            "namespace": namespace,
            "fields": [[f.name, str(f.type)] for f in creator.field_names],
        }
        for (_, _, namespace), creator in registry.creators.items()
    ]


def _describe_plugin(plugin) -> dict:
    return {
        "class": type(plugin).__name__,
        "aot": isinstance(plugin, trt.IPluginV3QuickAOTBuild),
        "attrs": {k: np.asarray(v).tolist() for k, v in plugin.attrs.items()},
        "attr_types": {
            k: type(v).__name__ + ("[" + str(v.dtype) + "]" if hasattr(v, "dtype") else "")
            for k, v in plugin.attrs.items()
        },
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


if __name__ == "__main__":
    model_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "observations.json").write_text(json.dumps(_jsonable(probe(model_path, out_dir)), indent=1))
