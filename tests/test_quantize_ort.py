"""The onnxruntime-targeted INT8 graph: onnxruntime's optimiser turns every Conv and
Gemm into an integer kernel, its ranges are the TensorRT graph's calibrated ones, it
agrees with FP32, and each INT8 file says which runtime it targets and where its
calibration came from."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime_ops import FLOAT_OPS, optimized_op_types

from alexnet_deploy.artifacts import ORT_INT8, ArtifactLayout
from alexnet_deploy.build.config import BuildConfig
from alexnet_deploy.build.run import build
from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.digests import read_metadata
from alexnet_deploy.export.run import export
from alexnet_deploy.graph import is_plugin_lrn
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.metrics import compare_logits
from alexnet_deploy.quantize.calibration import (
    activation_amax,
    collect_statistics,
    quantized_activations,
)
from alexnet_deploy.quantize.int8 import INT8_MAX
from alexnet_deploy.quantize.onnxruntime import (
    UINT8_MAX,
    insert_qdq_for_onnxruntime,
    output_activations,
)
from alexnet_deploy.quantize.qdq import insert_qdq
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def fp32_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("quantize_ort") / "alexnet.onnx"
    export(tiny_checkpoint, path)
    return path


@pytest.fixture(scope="module")
def fp32_model(fp32_onnx) -> onnx.ModelProto:
    return onnx.load(str(fp32_onnx))


def split_images(model: onnx.ModelProto, split: str) -> tuple[np.ndarray, np.ndarray]:
    metadata = export_metadata(model, "model")
    return held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, split)


@pytest.fixture(scope="module")
def calibrated_amax(fp32_model) -> dict[str, float]:
    images, _ = split_images(fp32_model, "calibration")
    tensors = quantized_activations(fp32_model) + output_activations(fp32_model)
    return activation_amax(collect_statistics(fp32_model, images[:64], tensors=tensors), "max")


@pytest.fixture(scope="module")
def ort_model(fp32_model, calibrated_amax) -> onnx.ModelProto:
    return insert_qdq_for_onnxruntime(fp32_model, calibrated_amax)


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def test_output_activations_are_the_two_lrn_inputs(fp32_model):
    readers = {name: node for node in fp32_model.graph.node for name in node.input}
    names = output_activations(fp32_model)
    assert len(names) == 2 and all(is_plugin_lrn(readers[name]) for name in names)


def test_onnxruntime_fuses_every_conv_and_gemm_into_an_integer_kernel(fp32_model, ort_model, tmp_path):
    ops = optimized_op_types(ort_model, tmp_path)
    source = [n.op_type for n in fp32_model.graph.node]
    assert ops.count("QLinearConv") == source.count("Conv") == 5
    assert ops.count("QGemm") == source.count("Gemm") == 3
    assert not [op for op in ops if op in FLOAT_OPS]


def test_onnxruntime_keeps_the_tensorrt_layout_in_float(fp32_model, calibrated_amax, tmp_path):
    """Why the second graph exists (issue 14): input-only Q/DQ leaves onnxruntime no
    integer kernel to fuse into."""
    ops = optimized_op_types(insert_qdq(fp32_model, calibrated_amax), tmp_path)
    assert not {"QLinearConv", "QGemm"} & set(ops) and "DequantizeLinear" in ops


def test_activations_are_uint8_over_the_calibrated_range(fp32_model, ort_model, calibrated_amax):
    images, relu1 = "images", output_activations(fp32_model)[0]
    assert initializer(ort_model, f"{images}_zero_point").dtype == np.uint8
    assert initializer(ort_model, f"{images}_zero_point") == 128  # signed input: symmetric around 128
    assert initializer(ort_model, f"{images}_scale") == pytest.approx(calibrated_amax[images] / INT8_MAX)
    assert initializer(ort_model, f"{relu1}_zero_point") == 0  # after ReLU: [0, amax]
    assert initializer(ort_model, f"{relu1}_scale") == pytest.approx(calibrated_amax[relu1] / UINT8_MAX)


def test_weights_match_the_tensorrt_graph_and_bias_is_int32_at_the_product_scale(fp32_model, ort_model):
    trt = insert_qdq(fp32_model, dict.fromkeys(quantized_activations(fp32_model), 4.0))
    conv = next(n for n in fp32_model.graph.node if n.op_type == "Conv")
    weight, bias = conv.input[1], conv.input[2]
    np.testing.assert_array_equal(initializer(ort_model, f"{weight}_int8"), initializer(trt, f"{weight}_int8"))
    expected_scale = initializer(ort_model, "images_scale") * initializer(ort_model, f"{weight}_scale")
    np.testing.assert_allclose(initializer(ort_model, f"{bias}_scale"), expected_scale, rtol=1e-6)
    quantized_bias = initializer(ort_model, f"{bias}_int32")
    assert quantized_bias.dtype == np.int32
    np.testing.assert_allclose(
        quantized_bias * expected_scale, initializer(fp32_model, bias), atol=expected_scale.max()
    )


def test_onnxruntime_graph_agrees_with_fp32_on_held_out_images(fp32_model, ort_model):
    images, _ = split_images(fp32_model, "val")
    with OnnxRuntimeRunner(fp32_model) as runner:
        reference = runner.infer_all(images)
    with OnnxRuntimeRunner(ort_model, "int8") as runner:
        quantized = runner.infer_all(images)
    max_abs_diff, agreement = compare_logits(reference, quantized)
    assert agreement >= 0.98, f"top-1 agreement {agreement:.2%} on {len(images)} images"
    # quantized, yet close: measured 2.4% of the largest logit on the learned test model
    assert 0 < max_abs_diff < 0.05 * np.abs(reference).max(), f"max |Δ| {max_abs_diff:.3g}"


def test_build_writes_both_int8_graphs_with_their_runtime_and_calibration(fp32_onnx, tmp_path):
    config = BuildConfig(
        onnx=fp32_onnx,
        precisions=("int8",),
        calibration_dir=tmp_path / "cal",
        calib_from_data=True,
        calib_method="percentile",
        percentile=99.9,
    )
    report = build(config)
    assert (
        report.onnxruntime_int8 == ArtifactLayout.from_onnx(fp32_onnx).onnx(ORT_INT8)
        and report.onnxruntime_int8.is_file()
    )
    cache = json.loads((tmp_path / "cal" / "scales.percentile.json").read_text())
    for path, runtime in ((report.onnx["int8"], "tensorrt"), (report.onnxruntime_int8, "onnxruntime")):
        metadata = read_metadata(onnx.load(str(path), load_external_data=False))
        assert metadata["target_runtime"] == runtime and metadata["precision"] == "int8"
        calibration = json.loads(metadata["calibration"])
        assert calibration["method"] == "percentile" and calibration["percentile"] == 99.9
        assert calibration["images"] == cache["images"] > 0
        assert calibration["image_fingerprint"] == cache["data_fingerprint"]
    assert [r.name for r in report.accuracy] == ["int8 (percentile)", "int8 (percentile; onnxruntime graph)"]


def test_a_cache_without_the_output_ranges_is_recalibrated(fp32_onnx, fp32_model, tmp_path):
    calibration = tmp_path / "cal"

    def run(**extra):
        return build(BuildConfig(onnx=fp32_onnx, precisions=("int8",), calibration_dir=calibration, **extra))

    run(calib_from_data=True)
    cache_file = calibration / "scales.entropy.json"
    cache = json.loads(cache_file.read_text())
    for name in output_activations(fp32_model):  # a cache written before the onnxruntime graph existed
        del cache["tensors"][name]
    cache_file.write_text(json.dumps(cache))
    notes = run().calibration
    assert any("recalibrating" in line for line in notes) and any("calibrated" in line for line in notes)


def test_compare_methods_times_every_model_beside_its_accuracy(fp32_onnx, tmp_path):
    config = BuildConfig(
        onnx=fp32_onnx,
        precisions=("fp32", "int8"),
        calibration_dir=tmp_path / "cal",
        calib_from_data=True,
        compare_methods=True,
    )
    rows = build(config).accuracy
    names = [r.name for r in rows]
    assert len(rows) == 1 + 3 * 2 + 2 and sum("quantize_static" in n for n in names) == 2
    timed = [r for r in rows if r.throughput_ips is not None]
    assert [r.name for r in timed] == ["fp32"] + [n for n in names if "onnxruntime" in n] and all(
        r.throughput_ips > 0 for r in timed
    )
