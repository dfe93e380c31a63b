"""Registration of the LRN plugin with TensorRT's Python plugin API (``tensorrt.plugin``,
"quickly deployable plugins"): shape/type, autotune and the ahead-of-time kernel.

How the pieces meet (see docs/tensorrt.md):

* ``register_lrn_plugin()`` registers ``alexnet_deploy::AlexNetLRN`` version 1 in
  TensorRT's plugin registry. The ONNX parser has no importer for op_type
  ``AlexNetLRN``, so it falls back to the registry: name = op_type, version = the
  node's ``plugin_version`` attribute, namespace = its ``plugin_namespace`` attribute
  (parsers since 10.10 fall back to the node's domain when that attribute is absent).
  The parser hands the plugin exactly the attributes its creator declares -- here
  size (INT), alpha, beta, bias (FLOAT) -- and ignores the others.
* Only ``aot_impl`` is defined, no JIT ``impl``: the parser then has to create the AOT
  plugin, whose kernel (``kernel.lrn_kernel`` compiled to PTX) is serialised into the
  engine. The engine needs no Python to run: trtexec, Triton Inference Server and C++
  applications can load it.
* ``autotune`` advertises fp32->fp32 and fp16->fp16 in linear NCHW, with one tactic per
  ``kernel.TACTICS`` entry; TensorRT times them and keeps the fastest in the engine.

``tensorrt.plugin`` validates these functions' signatures from their annotations
(parameter names in registration order, real types, a 4-tuple return annotation), so
this module deliberately does *not* use ``from __future__ import annotations``.

The LRN attributes are annotated as one-element numpy arrays (``NDArray[np.int32]`` /
``NDArray[np.float32]``), as NVIDIA's samples do, not as ``int``/``float``: the ONNX
parser hands every attribute over as a one-element array, and ``tensorrt.plugin``
10.10-11.1 converts a built-in annotation with ``int(array)``, which numpy >= 2.4
refuses ("only 0-dimensional arrays can be converted to Python scalars"). With array
annotations every TensorRT release passes ``array.astype(dtype)``, and the creator
declares INT32/FLOAT32 fields, matching ONNX's INT/FLOAT attribute types.
``tests/test_tensorrt_conformance.py`` runs TensorRT's own ``tensorrt.plugin`` on this
registration for several releases.

The TensorRT version floor is the plugin's own (``plugin.MIN_TENSORRT``); the GPU the
kernel is compiled for (compute capability, the PTX version its driver JITs) comes from
``alexnet_deploy.cuda_driver``. Nothing here imports the TensorRT backend folder: it
imports this module (the engine build and the runner call ``register_lrn_plugin``).
"""

import functools

import numpy as np
import numpy.typing as npt

from ..cuda_driver import cuda_device, max_ptx_version
from ..errors import BackendUnavailable
from ..lrn import LRNParams
from . import MIN_TENSORRT, PLUGIN_ID, parse_version


def _import_tensorrt_plugin():
    try:
        import tensorrt as trt
    except ImportError as error:
        raise BackendUnavailable(
            f"TensorRT is not installed ({error}); install alexnet-deploy[gpu] on a CUDA machine"
        ) from None
    if parse_version(trt.__version__) < MIN_TENSORRT:
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} is too old: the LRN plugin's ahead-of-time kernel needs "
            f"TensorRT >= {'.'.join(map(str, MIN_TENSORRT))} (tensorrt.plugin.aot_impl)"
        )
    import tensorrt.plugin as trtp

    return trt, trtp


@functools.cache  # once per process: TensorRT's registry refuses a second definition
def register_lrn_plugin() -> None:
    """Register the LRN plugin with TensorRT (idempotent). Call before parsing an ONNX
    file that contains the plugin node, and before deserialising an engine.

    Raises BackendUnavailable when TensorRT is missing or older than ``MIN_TENSORRT``
    (a failed call is not cached: the next one tries again).
    """
    trt, trtp = _import_tensorrt_plugin()
    _define_plugin(trt, trtp)


# Errors raised inside the plugin's callbacks surface in TensorRT's C++ layer, which
# prints them to the process's stderr (out of reach of contextlib.redirect_stderr) and
# reports only "plugin failed" to the builder's log. Each callback therefore also
# records its own error here, so a failed build can quote it (``tensorrt.engine.build_engine``).
_plugin_errors: list[str] = []


def plugin_errors() -> list[str]:
    """Errors the plugin's TensorRT callbacks raised since the last ``clear_plugin_errors()``."""
    return list(_plugin_errors)


def clear_plugin_errors() -> None:
    _plugin_errors.clear()


def lrn_params_from_fields(size, alpha, beta, bias) -> LRNParams:
    """LRN parameters from plugin fields: one-element arrays (what the ONNX parser and
    ``tensorrt.plugin`` pass) or plain numbers."""

    def scalar(value, kind):
        array = np.asarray(value)
        if array.size != 1:
            raise ValueError(f"LRN plugin fields hold one value each, got {array.size}")
        return kind(array.reshape(-1)[0])

    return LRNParams(
        size=scalar(size, int), alpha=scalar(alpha, float), beta=scalar(beta, float), bias=scalar(bias, float)
    )


def _define_plugin(trt, trtp) -> None:
    # Attribute names and order must match the ONNX node (graph.LRN_ATTRIBUTES): the
    # parser copies node attributes into plugin fields by these names.
    @trtp.register(PLUGIN_ID)
    def lrn_shape_and_type(
        x: trtp.TensorDesc,
        size: npt.NDArray[np.int32],
        alpha: npt.NDArray[np.float32],
        beta: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
    ) -> trtp.TensorDesc:
        return x.like()  # same shape, same dtype: the kernel reads and writes one dtype

    @trtp.autotune(PLUGIN_ID)
    def lrn_autotune(x: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        from .kernel import TACTICS

        # "A|B, A|B": input and output are both FP32 or both FP16 (positional pairing).
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16", "LINEAR", list(TACTICS))]

    @trtp.aot_impl(PLUGIN_ID)
    def lrn_aot_impl(
        x: trtp.TensorDesc,
        size: npt.NDArray[np.int32],
        alpha: npt.NDArray[np.float32],
        beta: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        try:
            return _aot_kernel(trt, trtp, x, lrn_params_from_fields(size, alpha, beta, bias), tactic)
        except Exception as error:
            _plugin_errors.append(f"{PLUGIN_ID} aot_impl: {error.__class__.__name__}: {error}")
            raise


def _aot_kernel(trt, trtp, x, params: LRNParams, tactic: int):
    """The body of ``aot_impl``: PTX, launch grid and extra args for one (dtype, tactic)."""
    # Imported here: only engine builds compile, deserialising needs neither triton nor torch.
    from .kernel import DEFAULT_CONFIG, TACTICS, compile_ptx, kernel_int_args, program_count

    device = cuda_device()
    if device is None:
        raise RuntimeError("building the LRN plugin needs a CUDA GPU, and the CUDA driver reports none")
    dtypes = {trt.float32: "fp32", trt.float16: "fp16"}
    if x.dtype not in dtypes:
        raise TypeError(f"the LRN plugin takes FP32 or FP16 tensors, not {x.dtype}")
    config = TACTICS.get(tactic, DEFAULT_CONFIG)  # tactic 0 is TensorRT's default
    capability = device.capability[0] * 10 + device.capability[1]
    kernel = compile_ptx(dtypes[x.dtype], params, capability, max_ptx_version(device.driver_version), config)

    # The same expressions as the torch launch, evaluated on TensorRT's symbolic
    # shapes, so the batch (dynamic in the profile) is resolved at each launch.
    int_args = kernel_int_args(*(x.shape_expr[i] for i in range(4)))
    channels, _, positions = int_args
    launch = trtp.KernelLaunchParams()
    launch.grid_x = program_count(channels, positions, config, trtp.cdiv)
    launch.block_x = kernel.threads_per_block
    launch.shared_mem = kernel.shared_mem
    extra_args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(value) for value in int_args])
    return kernel.name, kernel.ptx, launch, extra_args
