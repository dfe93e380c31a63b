"""FP16 and INT8 ONNX: dtypes, symmetric per-channel/per-tensor scales, Q/DQ placement
where TensorRT fuses them, calibration methods on known data, and the scale cache."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from alexnet_deploy.artifacts import ArtifactLayout
from alexnet_deploy.build.config import BuildConfig
from alexnet_deploy.build.run import build
from alexnet_deploy.digests import read_metadata
from alexnet_deploy.errors import DeployError
from alexnet_deploy.export.run import export
from alexnet_deploy.graph import is_plugin_lrn
from alexnet_deploy.quantize.calibration import (
    HISTOGRAM_BINS,
    TensorStatistics,
    entropy_amax,
    percentile_amax,
    quantized_activations,
)
from alexnet_deploy.quantize.fp16 import to_fp16
from alexnet_deploy.quantize.int8 import INT8_MAX
from alexnet_deploy.quantize.qdq import insert_qdq


@pytest.fixture(scope="module")
def fp32_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("quantize") / "alexnet.onnx"
    export(tiny_checkpoint, path)
    return path


@pytest.fixture(scope="module")
def int8_model(fp32_onnx) -> onnx.ModelProto:
    model = onnx.load(str(fp32_onnx))
    return insert_qdq(model, dict.fromkeys(quantized_activations(model), 4.0))


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def statistics_of(values: np.ndarray) -> TensorStatistics:
    amax = float(np.abs(values).max())
    return TensorStatistics(amax, np.histogram(np.abs(values), HISTOGRAM_BINS, (0, amax))[0])


def test_fp16_model_has_half_weights_float_io_and_the_plugin(fp32_onnx):
    half = to_fp16(onnx.load(str(fp32_onnx)))
    float_weights = [t for t in half.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert float_weights and all(t.data_type == TensorProto.FLOAT16 for t in float_weights)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert sum(is_plugin_lrn(n) for n in half.graph.node) == 2
    assert read_metadata(half)["precision"] == "fp16"


def test_every_conv_and_gemm_reads_dequantized_activation_and_weights(int8_model):
    made_by = producers(int8_model)
    weighted = [n for n in int8_model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weighted) == 8  # conv1-5, fc6-8
    for node in weighted:
        activation, weight = made_by[node.input[0]], made_by[node.input[1]]
        assert activation.op_type == "DequantizeLinear" and made_by[activation.input[0]].op_type == "QuantizeLinear"
        assert weight.op_type == "DequantizeLinear" and weight.input[0] not in made_by  # an int8 initializer
    assert sum(n.op_type == "QuantizeLinear" for n in int8_model.graph.node) == 8


def test_lrn_stays_floating_point_between_qdq_pairs(int8_model):
    made_by = producers(int8_model)
    for node in (n for n in int8_model.graph.node if is_plugin_lrn(n)):
        assert made_by[node.input[0]].op_type == "Relu"
    consumers = [n for n in int8_model.graph.node if any(i.endswith("_dq") for i in n.input)]
    assert {n.op_type for n in consumers} == {"Conv", "Gemm"}


def test_activation_scales_are_per_tensor_symmetric(int8_model):
    for node in (n for n in int8_model.graph.node if n.op_type == "QuantizeLinear"):
        scale, zero_point = initializer(int8_model, node.input[1]), initializer(int8_model, node.input[2])
        assert scale.shape == () and scale == pytest.approx(4.0 / INT8_MAX)
        assert zero_point.dtype == np.int8 and zero_point == 0


def test_weight_scales_are_per_output_channel_symmetric_and_exact(int8_model, fp32_onnx):
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(fp32_onnx)).graph.initializer}
    for node in (n for n in int8_model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("_int8")):
        quantized, scales, zero_points = (initializer(int8_model, name) for name in node.input)
        weights = original[node.input[0].removesuffix("_int8")]
        axis = next(a.i for a in node.attribute if a.name == "axis")
        others = tuple(i for i in range(weights.ndim) if i != axis)
        amax = np.abs(weights).max(axis=others)
        assert np.unique(amax).size > amax.size // 2, "the trained channels' ranges differ, so this can fail"
        assert scales.shape == (weights.shape[axis],) and not zero_points.any()
        # each channel's own max |w| maps to 127: a per-tensor scale copied per channel fails here
        np.testing.assert_allclose(scales, amax / INT8_MAX, rtol=1e-6, err_msg=node.input[0])
        assert quantized.dtype == np.int8 and (np.abs(quantized).max(axis=others) == INT8_MAX).all()
        shape = [1] * weights.ndim
        shape[axis] = -1
        error = np.abs(quantized * scales.reshape(shape) - weights)
        assert (error <= scales.reshape(shape) / 2 * (1 + 1e-6)).all(), node.input[0]  # rounding: half its own step


def test_percentile_of_uniform_values_is_that_fraction_of_the_range():
    values = np.random.default_rng(0).uniform(0, 10, 1_000_000)
    assert percentile_amax(statistics_of(values), 99.0) == pytest.approx(9.9, abs=0.02)
    assert percentile_amax(statistics_of(values), 100.0) == pytest.approx(10.0, abs=0.01)


def test_entropy_clips_a_rare_outlier_but_keeps_the_bulk():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.abs(rng.normal(0, 1, 500_000)), [60.0]])  # one far outlier
    threshold = entropy_amax(statistics_of(values))
    assert 3.0 < threshold < 20.0  # ~all of N(0,1)'s mass, far below the outlier


def test_entropy_keeps_the_range_when_there_is_no_outlier():
    values = np.random.default_rng(1).uniform(0, 1, 200_000)
    assert entropy_amax(statistics_of(values)) > 0.9


def run_build(onnx_path: Path, calibration: Path, **overrides) -> object:
    config = BuildConfig(onnx=onnx_path, precisions=("int8",), calibration_dir=calibration, **overrides)
    return build(config)


def test_int8_build_writes_qdq_onnx_and_a_scale_cache(fp32_onnx, tmp_path):
    report = run_build(fp32_onnx, tmp_path / "cal", calib_from_data=True)
    assert report.onnx["int8"] == ArtifactLayout.from_onnx(fp32_onnx).onnx("int8") and report.onnx["int8"].is_file()
    cache = json.loads((tmp_path / "cal" / "scales.entropy.json").read_text())
    assert cache["method"] == "entropy" and len(cache["model_sha256"]) == 64
    assert all(entry["scale"] == pytest.approx(entry["amax"] / INT8_MAX) for entry in cache["tensors"].values())
    row = report.accuracy[0]
    # the shared test model has learned (test_train.py): INT8 must keep what it knows
    assert row.precision == "int8" and row.top1 >= 0.9 and row.top1_agreement >= 0.98
    assert report.engine_note and report.engine_note.startswith("no TensorRT engine built")


def test_scale_cache_is_reused_then_invalidated_by_new_images(fp32_onnx, tmp_path):
    calibration = tmp_path / "cal"
    run_build(fp32_onnx, calibration, calib_from_data=True)
    assert any("reused calibration cache" in line for line in run_build(fp32_onnx, calibration).calibration)
    assert any("calibrated" in line for line in run_build(fp32_onnx, calibration, recalibrate=True).calibration)
    (calibration / "0" / next((calibration / "0").iterdir()).name).unlink()  # the image set changed
    notes = run_build(fp32_onnx, calibration).calibration
    assert any("from another model, image set, percentile or calibration rule: recalibrating" in line for line in notes)


@pytest.mark.parametrize(
    "field, value",
    [("model_sha256", "0" * 64), ("format", 1)],  # another model; the entropy rule before NVIDIA's ceil start
    ids=["other-model", "older-rule"],
)
def test_scale_cache_from_another_model_or_rule_is_not_reused(fp32_onnx, tmp_path, field, value):
    calibration = tmp_path / "cal"
    run_build(fp32_onnx, calibration, calib_from_data=True)
    cache_file = calibration / "scales.entropy.json"
    cache = json.loads(cache_file.read_text())
    cache[field] = value
    cache_file.write_text(json.dumps(cache))
    assert any("recalibrating" in line for line in run_build(fp32_onnx, calibration).calibration)


@pytest.mark.parametrize(
    "prepare, overrides, fragment",
    [
        (lambda d: None, {}, "does not exist"),
        (lambda d: d.mkdir(), {}, "has no images"),
        (lambda d: (d.mkdir(), (d / "x.png").write_bytes(b"garbage")), {}, "cannot read calibration image"),
        (lambda d: None, {"calib_from_data": True, "calib_images": 10_000}, "fewer than the 10000 asked for"),
        (lambda d: None, {"calib_method": "kl"}, "unknown --calib-method"),
    ],
    ids=["missing", "empty", "unreadable", "too-few", "method"],
)
def test_bad_calibration_input_is_one_clear_error_and_writes_nothing(fp32_onnx, tmp_path, prepare, overrides, fragment):
    calibration = tmp_path / "cal"
    prepare(calibration)
    onnx_copy = tmp_path / "alexnet.onnx"
    onnx_copy.write_bytes(fp32_onnx.read_bytes())
    with pytest.raises(DeployError, match=fragment):
        run_build(onnx_copy, calibration, **overrides)
    assert not ArtifactLayout.from_onnx(onnx_copy).onnx("int8").exists()


def test_onnx_without_plugin_lrn_is_rejected(tiny_checkpoint, tmp_path):
    export(tiny_checkpoint, tmp_path / "native.onnx", lrn="native")
    with pytest.raises(DeployError, match="expected 2 LRN plugin nodes"):
        run_build(tmp_path / "native.onnx", tmp_path / "cal", calib_from_data=True)


def test_build_with_no_precision_flag_writes_and_judges_all_three(tiny_checkpoint, tmp_path):
    """``alexnet-deploy build`` with no --fp32/--fp16/--int8 through the CLI: every
    precision's ONNX (and onnxruntime's INT8 layout) written, verified and judged on the
    held-out val split; engines for all three where TensorRT runs, the reason where not."""
    from conftest import invoke

    from alexnet_deploy.graph import load_verified
    from alexnet_deploy.tensorrt.availability import tensorrt_unavailable_reason

    onnx_path = tmp_path / "alexnet.onnx"
    export(tiny_checkpoint, onnx_path)
    json_path = tmp_path / "build.json"
    result = invoke(
        "build", "--onnx", str(onnx_path), "--calibration", str(tmp_path / "cal"), "--calib-from-data",
        "--calib-images", "64", "--engines", str(tmp_path / "engines"), "--json", str(json_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    layout = ArtifactLayout.from_onnx(onnx_path)
    assert report["onnx"] == {p: str(layout.onnx(p)) for p in ("fp32", "fp16", "int8")}
    for path in [*report["onnx"].values(), report["onnxruntime_int8"]]:
        load_verified(Path(path))  # sealed: its weights and metadata are the ones it says
    rows = {row["precision"]: row for row in report["accuracy"]}
    assert set(rows) == {"fp32", "fp16", "int8"} and report["val_images"] > 200
    assert rows["fp32"]["top1_agreement"] == 1.0 and rows["fp16"]["top1_agreement"] >= 0.99
    assert all(row["top1_agreement"] >= 0.95 for row in report["accuracy"]), report["accuracy"]
    reason = tensorrt_unavailable_reason()
    if reason is None:
        assert set(report["engines"]) == {"fp32", "fp16", "int8"}
        assert all(Path(plan).is_file() for plan in report["engines"].values())
    else:
        assert report["engines"] == {} and reason in report["engine_note"]
