"""Conformance of our LRN plugin and engine build with TensorRT's own Python code, for
every supported TensorRT release -- on a machine with no GPU and no TensorRT core.

What runs is real: NVIDIA's official bindings wheels (the pybind module and the
pure-Python ``tensorrt.plugin``) of 10.10 (oldest supported), 10.16, 11.1 and 11.4
(newest), polygraphy's loaders, our registration, our exported ONNX nodes and Triton's
compiler. What stands in (``tensorrt_standin.py``, ``tensorrt_conformance_probe.py``) is
only what TensorRT's C++ core would provide: its nine C entry points, the plugin
registry, symbolic shape expressions, launch-parameter sinks and the GPU.

These tests prove: our plugin registers; the creator declares fields the ONNX parser
can fill from our node's attributes; ``create_plugin`` with exactly the parser's fields
(one-element arrays, creator field order, name = op_type, namespace = domain) yields the
AOT plugin with the right values; autotune offers FP32/FP16 linear combinations and our
tactics; ``aot_impl`` passes ``_plugin_class``'s launch-parameter type checks for every
dtype x tactic, its grid and extra args equal the torch launch's at every batch, and its
PTX entry declares exactly the parameters TensorRT passes (checked again by ptxas);
``build_engine`` gets through polygraphy with the real enums up to ``trt.Builder()``;
a failing ``aot_impl`` reaches the user's error line.

They do not prove anything the C++ core does: parsing, tactic timing, kernel execution
on a GPU (``tests/test_tensorrt.py -m tensorrt`` and ``scripts/gpu-check.sh`` do, where
TensorRT and a GPU exist).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import triton
from onnx import helper
from tensorrt_standin import RELEASES, environment

from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.export.run import export_model
from alexnet_deploy.graph import LRN_ATTRIBUTES
from alexnet_deploy.lrn import LRNParams
from alexnet_deploy.plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from alexnet_deploy.plugin.kernel import (
    EXTRA_INT_ARGS,
    TACTICS,
    TENSORRT_LAUNCH_PARAMS,
    compile_ptx,
    kernel_int_args,
    program_count,
    ptx_entry_params,
)

REPO = Path(__file__).resolve().parent.parent
BATCHES = ("1", "8", "128", "256")
HEIGHT, WIDTH = 13, 11  # the probe's plugin input plane


@pytest.fixture(scope="module")
def exported_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """Our real export (plugin nodes and all) of a real trained checkpoint."""
    checkpoint = load_checkpoint(tiny_checkpoint)
    path = tmp_path_factory.mktemp("conformance") / "alexnet.onnx"
    onnx.save(export_model(checkpoint.build_model()), str(path))
    return path


@pytest.fixture(scope="module")
def exported_lrn_attributes(exported_onnx) -> list[dict]:
    """The LRN attributes of each plugin node, read back from the ONNX file."""
    model = onnx.load(str(exported_onnx))
    return [
        {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in LRN_ATTRIBUTES}
        for node in model.graph.node
        if node.op_type == PLUGIN_NAME
    ]


@pytest.fixture(scope="module", params=RELEASES, ids=[r.version for r in RELEASES])
def observed(request, exported_onnx, tmp_path_factory) -> dict:
    """What TensorRT ``release``'s own code did with our plugin (one probe subprocess)."""
    release = request.param
    out = tmp_path_factory.mktemp(f"trt-{release.version}")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "tensorrt_conformance_probe.py"), str(exported_onnx), str(out)],
        check=False,
        env=environment(release, REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"probe for TensorRT {release.version} crashed:\n{result.stderr[-4000:]}"
    observations = json.loads((out / "observations.json").read_text())
    observations["release"] = release.version
    observations["out"] = out
    observations["stderr"] = result.stderr
    return observations


@pytest.fixture(scope="module")
def mixed_onnx(exported_onnx, tmp_path_factory) -> Path:
    """An INT8 file in TensorRT's layout with conv1 in FP16 between casts (it feeds the
    first LRN plugin node) and fc7 in FP32: what ``build --min-agreement`` writes."""
    from alexnet_deploy.quantize.calibration import quantized_activations
    from alexnet_deploy.quantize.mixed import mixed_int8

    model = onnx.load(str(exported_onnx))
    mixed = mixed_int8(model, dict.fromkeys(quantized_activations(model), 4.0), "tensorrt", MIXED_FALLBACK)
    path = tmp_path_factory.mktemp("conformance-mixed") / "alexnet.int8.onnx"
    onnx.save(mixed, str(path))
    return path


MIXED_FALLBACK = {"conv1": "fp16", "fc7": "fp32"}


@pytest.fixture(scope="module")
def observed_mixed(mixed_onnx, tmp_path_factory) -> dict:
    """The probe on the mixed file, with the newest supported TensorRT."""
    release = RELEASES[-1]
    out = tmp_path_factory.mktemp(f"trt-mixed-{release.version}")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "tensorrt_conformance_probe.py"), str(mixed_onnx), str(out)],
        check=False,
        env=environment(release, REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"probe for TensorRT {release.version} crashed:\n{result.stderr[-4000:]}"
    observations = json.loads((out / "observations.json").read_text())
    observations["release"], observations["out"], observations["stderr"] = release.version, out, result.stderr
    return observations


def test_a_mixed_precision_int8_file_gets_through_polygraphy_up_to_the_builder(observed_mixed, mixed_onnx):
    """The FP16 fallback layer's casts sit between conv1 and the plugin node: the plugin
    is still found by op type and domain, created from the parser's fields, offers its
    FP32/FP16 tactics, and build_engine reaches trt.Builder() (where the stand-in core
    stops). What TensorRT's parser and builder do with the casts needs the real core:
    scripts/gpu-check.sh builds an engine from such a file where one is lent."""
    model = onnx.load(str(mixed_onnx))
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert [helper.get_attribute_value(a) for n in casts for a in n.attribute] == [
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.FLOAT,
    ]
    assert [n["lookup"] for n in observed_mixed["plugin_nodes"]] == [
        [PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE]
    ] * 2
    assert len(succeeded(observed_mixed, "create_plugin/STRICT_AOT")) == 2
    assert succeeded(observed_mixed, "aot/fp16")["tactics"] == sorted(TACTICS)
    assert succeeded(observed_mixed, "build_engine")["deploy_error"].startswith("TensorRT could not build")
    assert "TensorRT core stand-in: createInferBuilder" in observed_mixed["stderr"]


def succeeded(observations: dict, key: str):
    entry = observations[key]
    assert entry["ok"], f"TensorRT {observations['release']}: {key} raised {entry['error']}\n{entry['trace']}"
    return entry["value"]


def test_the_real_bindings_wheel_is_what_runs(observed):
    assert observed["tensorrt_version"] == observed["release"]
    assert "tensorrt-conformance" in observed["tensorrt_file"]  # the unpacked official wheel


def test_registration_declares_the_fields_the_parser_fills(observed):
    (creator,) = succeeded(observed, "register")
    assert (creator["name"], creator["version"], creator["namespace"]) == (
        PLUGIN_NAME,
        PLUGIN_VERSION,
        PLUGIN_NAMESPACE,
    )
    # ONNX INT/FLOAT attributes map onto INT32/FLOAT32 fields, in the node's attribute order.
    assert creator["fields"] == [
        ["size", "PluginFieldType.INT32"],
        ["alpha", "PluginFieldType.FLOAT32"],
        ["beta", "PluginFieldType.FLOAT32"],
        ["bias", "PluginFieldType.FLOAT32"],
    ]


def test_every_exported_node_is_found_by_op_type_and_domain(observed):
    nodes = observed["plugin_nodes"]
    assert len(nodes) == 2  # after conv1 and conv2
    assert all(node["lookup"] == [PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE] for node in nodes)
    # The names differ from op_type: why TensorRT < 10.10 (which looked plugins up by node name) is unsupported.
    assert all(node["name"] != PLUGIN_NAME for node in nodes)


@pytest.mark.parametrize("request_kind", ["UNKNOWN", "PREFER_AOT", "STRICT_AOT"])
def test_create_plugin_with_parser_fields_gives_the_aot_plugin(observed, exported_lrn_attributes, request_kind):
    """Failed on TensorRT 10.10-11.1 with numpy >= 2.4 while the attributes were annotated
    int/float: tensorrt.plugin called int() on the parser's one-element arrays."""
    plugins = succeeded(observed, f"create_plugin/{request_kind}")
    assert len(plugins) == len(exported_lrn_attributes)
    for plugin, node_attrs in zip(plugins, exported_lrn_attributes, strict=True):
        assert plugin["class"] == "_TemplateAOTPlugin" and plugin["aot"]
        assert plugin["attr_types"] == {
            "size": "ndarray[int32]",
            "alpha": "ndarray[float32]",
            "beta": "ndarray[float32]",
            "bias": "ndarray[float32]",
        }
        # The values the node carries, as float32 (ONNX FLOAT attributes are float32).
        assert plugin["attrs"] == {name: [np.float32(value).item()] for name, value in node_attrs.items()}


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_autotune_offers_linear_fp32_and_fp16_with_our_tactics(observed, dtype):
    lifecycle = succeeded(observed, f"aot/{dtype}")
    assert lifecycle["output_types"] == [{"fp32": "DataType.FLOAT", "fp16": "DataType.HALF"}[dtype]]
    assert lifecycle["output_dims"] == [7, observed["channels"], HEIGHT, WIDTH]  # x.like() at batch 7
    pairs = lifecycle["format_combinations"]
    assert pairs == [["DataType.FLOAT", "TensorFormat.LINEAR"]] * 2 + [["DataType.HALF", "TensorFormat.LINEAR"]] * 2
    assert lifecycle["tactics"] == sorted(TACTICS)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_aot_launch_matches_the_torch_launch_at_every_batch(observed, dtype):
    """TensorRT's get_launch_params ran our aot_impl and its type checks; the symbolic
    grid and extra args it received evaluate to the torch launch's numbers."""
    channels = observed["channels"]
    for tactic, kernel in succeeded(observed, f"aot/{dtype}")["kernels"].items():
        config = TACTICS[int(tactic)]
        assert kernel["kernel_name"] == "lrn_kernel"
        assert kernel["extra_arg_count"] == len(EXTRA_INT_ARGS)
        assert kernel["extra_arg_types"] == ["SymExprImpl"] * len(EXTRA_INT_ARGS)
        assert kernel["block_x"] == config.num_warps * 32 and kernel["shared_mem"] == 0
        for batch in BATCHES:
            args = kernel_int_args(int(batch), channels, HEIGHT, WIDTH)
            assert kernel["extra_args"][batch] == list(args)
            assert kernel["grid_x"][batch] == program_count(args[0], args[2], config)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_ptx_entry_declares_exactly_what_tensorrt_passes(observed, dtype):
    """Failed while Triton's two trailing scratch-pointer parameters were left in the
    entry (7 declared, TensorRT passes 5)."""
    for kernel in succeeded(observed, f"aot/{dtype}")["kernels"].values():
        ptx = (observed["out"] / kernel["ptx"]).read_text()
        assert tuple(p.type for p in ptx_entry_params(ptx, kernel["kernel_name"])) == TENSORRT_LAUNCH_PARAMS
        assert re.search(r"^\.target sm_90", ptx, re.MULTILINE)  # compiled for the stand-in GPU
        assert re.search(r"^\.version 8\.7$", ptx, re.MULTILINE)  # lowered to what a CUDA 12.8 driver JITs


def test_a_failing_aot_impl_reaches_the_users_error_line(observed):
    """TensorRT's C++ layer prints a plugin's exception to stderr and reports only a
    failed plugin; the plugin records its own error so ``build_engine`` can quote it."""
    assert not observed["aot_error"]["ok"]
    assert observed["plugin_errors"] == [
        "alexnet_deploy::AlexNetLRN aot_impl: RuntimeError: building the LRN plugin needs a CUDA GPU, "
        "and the CUDA driver reports none"
    ]
    assert observed["plugin_errors"][0] in observed["build_failure_message"]


def test_build_engine_gets_through_polygraphy_up_to_the_builder(observed):
    """All of build_engine's setup -- plugin registration, the real enums, polygraphy's
    loaders -- runs; the first call into the core is trt.Builder(), which the stand-in
    answers with null, and the user gets one DeployError line, not a traceback."""
    result = succeeded(observed, "build_engine")
    assert result["deploy_error"].startswith("TensorRT could not build")
    assert "TensorRT core stand-in: createInferBuilder" in observed["stderr"]


def test_every_tensorrt_name_we_use_exists(observed):
    missing = [name for name, present in observed["api_surface"].items() if not present]
    assert not missing, f"TensorRT {observed['release']} lacks {missing}"


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("capability, arch", [(80, "sm_80"), (90, "sm_90a")])
def test_ptxas_assembles_the_stripped_entry_with_five_parameters(tmp_path, dtype, capability, arch):
    """An independent check of the stripped PTX: Triton's bundled ptxas assembles it, and
    the cubin's parameter bank holds exactly x (8 bytes), three int32s and y (8 bytes);
    with Triton's two scratch pointers it would be 48 bytes."""
    kernel = compile_ptx(dtype, LRNParams(), capability, 87)
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    (tmp_path / "lrn.ptx").write_text(kernel.ptx)
    subprocess.run(
        [str(bin_dir / "ptxas"), f"-arch={arch}", str(tmp_path / "lrn.ptx"), "-o", str(tmp_path / "lrn.cubin")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    elf = subprocess.run(
        [str(bin_dir / "cuobjdump"), "-elf", str(tmp_path / "lrn.cubin")], check=True, capture_output=True, text=True
    ).stdout
    assert elf.count("EIATTR_KPARAM_INFO") == len(TENSORRT_LAUNCH_PARAMS)
    sizes = re.findall(r"EIATTR_CBANK_PARAM_SIZE\s*\n\s*Format:.*\n\s*Value:\s*(0x[0-9a-f]+)", elf)
    assert sizes, "cuobjdump printed no parameter-bank size"
    # x at 0, the int32s at 8.., y at the next 8-byte boundary: 8 + 3*4 = 20 -> 24, + 8 = 32.
    ints_end = 8 + 4 * len(EXTRA_INT_ARGS)
    assert int(sizes[0], 16) == -(-ints_end // 8) * 8 + 8
