"""Mixed-precision INT8 graphs (issue 27): layers named as AlexNet's, chosen layers out
of INT8 in FP16 between explicit casts (or FP32), TensorRT's Q/DQ placement kept for
the rest, and onnxruntime still running the rest as integer kernels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnxruntime_ops import FLOAT_OPS, optimized_op_types

from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.export.run import export
from alexnet_deploy.graph import to_standard_lrn
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.quantize.calibration import activation_amax, collect_statistics, quantized_activations
from alexnet_deploy.quantize.mixed import LAYERS, fits_fp16, layer_nodes, mixed_int8
from alexnet_deploy.quantize.onnxruntime import output_activations

FALLBACK = {"conv4": "fp16", "fc7": "fp32"}


@pytest.fixture(scope="module")
def fp32_model(tiny_checkpoint, tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("mixed") / "alexnet.onnx"
    export(tiny_checkpoint, path)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def amax(fp32_model) -> dict[str, float]:
    metadata = export_metadata(fp32_model, "model")
    images, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "calibration", 32)
    tensors = quantized_activations(fp32_model) + output_activations(fp32_model)
    return activation_amax(collect_statistics(fp32_model, images, tensors=tensors), "max")


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def consumers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if tensor in node.input]


def initializer_types(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: t.data_type for t in model.graph.initializer}


def cast_to(node: onnx.NodeProto) -> int:
    assert node.op_type == "Cast", node.op_type
    return next(a.i for a in node.attribute if a.name == "to")


def test_layers_are_named_in_network_order(fp32_model):
    nodes = layer_nodes(fp32_model)
    assert list(nodes) == list(LAYERS)
    weights = {t.name: list(t.dims) for t in fp32_model.graph.initializer}
    assert weights[nodes["conv1"].input[1]][1:] == [3, 11, 11]  # reads the RGB image
    assert weights[nodes["fc8"].input[1]][0] == 10  # writes the ten digits' logits


def test_tensorrt_layout_keeps_qdq_placement_and_casts_around_fp16_layers(fp32_model, amax):
    model = mixed_int8(fp32_model, amax, "tensorrt", FALLBACK)
    onnx.checker.check_model(to_standard_lrn(model), full_check=True)  # types agree at every node
    made_by, types = producers(model), initializer_types(model)
    for layer, node in layer_nodes(model).items():
        activation = made_by[node.input[0]]
        if layer == "conv4":  # fp16: Cast in, float16 weight and bias, Cast out
            assert cast_to(activation) == TensorProto.FLOAT16
            assert [types[name] for name in node.input[1:]] == [TensorProto.FLOAT16] * 2
            (reader,) = consumers(model, node.output[0])
            assert cast_to(reader) == TensorProto.FLOAT
        elif layer == "fc7":  # fp32: untouched, no Q/DQ
            assert activation.op_type == "Relu"
            assert [types[name] for name in node.input[1:]] == [TensorProto.FLOAT] * 2
        else:  # INT8: TensorRT's placement, Q/DQ on the activation, DQ on an int8 weight
            assert activation.op_type == "DequantizeLinear"
            assert made_by[activation.input[0]].op_type == "QuantizeLinear"
            weight = made_by[node.input[1]]
            assert weight.op_type == "DequantizeLinear" and types[weight.input[0]] == TensorProto.INT8
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == len(LAYERS) - len(FALLBACK)
    # every DequantizeLinear feeds a Conv/Gemm directly, and no Q/DQ touches a fallback layer
    for node in (n for n in model.graph.node if n.op_type == "DequantizeLinear"):
        assert {c.op_type for c in consumers(model, node.output[0])} <= {"Conv", "Gemm"}
    assert sum(n.op_type == "Cast" for n in model.graph.node) == 2


def test_onnxruntime_layout_runs_the_int8_layers_as_integer_kernels(fp32_model, amax, tmp_path):
    """conv1, conv2 and conv5 stay QLinearConv, fc8 QGemm. conv3 feeds the FP16 conv4
    and fc6 the FP32 fc7: a QuantizeLinear on their outputs would quantize the very
    tensor the fallback protects, so onnxruntime runs them in float over their int8
    inputs and weights (with conv4 and fc7, four float Conv/Gemm)."""
    model = mixed_int8(fp32_model, amax, "onnxruntime", FALLBACK)
    ops = optimized_op_types(model, tmp_path)
    assert ops.count("QLinearConv") == 3 and ops.count("QGemm") == 1
    assert sum(op in FLOAT_OPS for op in ops) == 4


def test_all_layers_out_of_int8_computes_what_fp32_does(fp32_model, amax):
    from alexnet_deploy.runners.registry import open_model, reference_runner

    metadata = export_metadata(fp32_model, "model")
    images, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val", 32)
    with reference_runner(fp32_model) as runner:
        reference = runner.infer_all(images)
    for layout in ("tensorrt", "onnxruntime"):
        everything = mixed_int8(fp32_model, amax, layout, dict.fromkeys(LAYERS, "fp32"))
        assert not [n for n in everything.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        half = mixed_int8(fp32_model, amax, layout, dict.fromkeys(LAYERS, "fp16"))
        with open_model("onnxruntime", half, "int8") as runner:
            logits = runner.infer_all(images)
        np.testing.assert_allclose(logits, reference, atol=0.02 * np.abs(reference).max())


def test_fp16_is_refused_where_its_range_does_not_hold(fp32_model):
    assert fits_fp16(fp32_model, "conv4", 100.0)
    assert not fits_fp16(fp32_model, "conv4", 40_000.0)  # x 2 headroom passes fp16's 65504
    # an input channel whose weights all sit below fp16's smallest normal number: the
    # 1/s side of a channel rescaled by s
    shrunk = onnx.ModelProto()
    shrunk.CopyFrom(fp32_model)
    name = layer_nodes(shrunk)["conv4"].input[1]
    tensor = next(t for t in shrunk.graph.initializer if t.name == name)
    weights = numpy_helper.to_array(tensor).copy()
    weights[:, 0] *= 1e-4
    tensor.CopyFrom(numpy_helper.from_array(weights, name))
    assert not fits_fp16(shrunk, "conv4", 100.0)


def test_unknown_fallback_layer_is_refused(fp32_model, amax):
    from alexnet_deploy.errors import DeployError

    with pytest.raises(DeployError, match="conv9"):
        mixed_int8(fp32_model, amax, "tensorrt", {"conv9": "fp16"})


def test_openvino_runs_every_int8_layer_of_the_mixed_file_as_an_integer_kernel(fp32_model, amax):
    """OpenVINO (which runs the onnxruntime-layout file) needs only quantized inputs: all
    six INT8 layers run u8/i8, conv4 and fc7 in float, read back from its runtime graph."""
    pytest.importorskip("openvino")
    from alexnet_deploy.runners.registry import open_model

    model = mixed_int8(fp32_model, amax, "onnxruntime", FALLBACK)
    metadata = export_metadata(fp32_model, "model")
    images, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val", 8)
    with open_model("openvino", model, "int8") as runner:
        runner.infer(images)
        counts = runner.runtime_precisions()  # type: ignore[attr-defined]
    integer = ("u8", "i8")
    assert sum(counts[("Convolution", p)] for p in integer) == 4, counts  # conv1-3, conv5
    assert sum(counts[("FullyConnected", p)] for p in integer) == 2, counts  # fc6, fc8
    assert counts[("Convolution", "f32")] + counts[("Convolution", "f16")] == 1, counts  # conv4
    assert counts[("FullyConnected", "f32")] == 1, counts  # fc7
