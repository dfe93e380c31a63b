"""INT8 you can debug (issue 27): an outlier channel planted into the shared test model
(FP32 unchanged, per-tensor INT8 broken) is ranked first by ``sensitivity``, a budgeted
build meets its budget with only that layer (or its pair) out of INT8 while the plain
build misses it, and the per-layer SQNR agrees with onnxruntime's ``qdq_loss_debug``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, invoke

from alexnet_deploy.artifacts import ORT_INT8, ArtifactLayout
from alexnet_deploy.build.config import BuildConfig
from alexnet_deploy.build.run import build
from alexnet_deploy.build.sensitivity import SensitivityConfig, run_sensitivity
from alexnet_deploy.checkpoint import load_checkpoint, save_checkpoint
from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.errors import DeployError
from alexnet_deploy.export.run import export
from alexnet_deploy.graph import load_verified, to_standard_lrn
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.quantize.mixed import LAYERS, layer_tensors
from alexnet_deploy.quantize.sensitivity import activation_sqnr

REPO = Path(__file__).resolve().parent.parent
# The tests' outlier: conv4's output channel x 10,000, conv5's matching input / 10,000.
# docs/quantization.md's acceptance checks plant others (conv3 -> conv4, fc6 -> fc7).
PLANTED_BETWEEN, PLANTED_LAYER, SCALE = "conv4", "conv5", 10_000.0
BUDGET = 0.99


def plant_outlier(*args, **kwargs):
    """scripts/plant_outlier.py's function (the script users run)."""
    spec = importlib.util.spec_from_file_location("plant_outlier", REPO / "scripts" / "plant_outlier.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plant_outlier(*args, **kwargs)


@pytest.fixture(scope="module")
def planted(tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """(the shared model's FP32 export, the same model with the outlier planted)."""
    folder = tmp_path_factory.mktemp("planted")
    checkpoint = load_checkpoint(tiny_checkpoint)
    checkpoint.state_dict, _ = plant_outlier(checkpoint.state_dict, PLANTED_BETWEEN, SCALE)
    save_checkpoint(checkpoint, folder / "planted.pt")
    original, planted_onnx = folder / "original" / "alexnet.onnx", folder / "alexnet.onnx"
    original.parent.mkdir()
    export(tiny_checkpoint, original)
    export(folder / "planted.pt", planted_onnx)
    return original, planted_onnx


def val_logits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the file's logits, FP32's) on the export's held-out val images, onnxruntime."""
    from alexnet_deploy.runners.registry import open_model, reference_runner

    model = load_verified(path)
    metadata = export_metadata(model, str(path))
    images, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val")
    fp32 = onnx.load(str(path.parent / "alexnet.onnx"))
    with reference_runner(fp32) as runner:
        reference = runner.infer_all(images)
    with open_model("onnxruntime", model, metadata.precision.value) as runner:
        return runner.infer_all(images), reference


def agreement(path: Path) -> float:
    logits, reference = val_logits(path)
    return float(np.mean(logits.argmax(axis=1) == reference.argmax(axis=1)))


@pytest.fixture(scope="module")
def report(planted):
    _, planted_onnx = planted
    config = SensitivityConfig(onnx=planted_onnx, calibration_dir=planted_onnx.parent / "cal", calib_from_data=True)
    return run_sensitivity(config)


def test_planting_leaves_fp32_unchanged(planted):
    original, planted_onnx = planted
    (before, _), (after, _) = val_logits(original), val_logits(planted_onnx)
    np.testing.assert_allclose(after, before, atol=1e-4 * np.abs(before).max())


def test_sensitivity_ranks_the_planted_layer_first(report):
    assert report.ranking[0] == PLANTED_LAYER
    assert sorted(report.ranking) == sorted(LAYERS) and report.evaluations == 2 * (2 * len(LAYERS) + 1)
    first = report.layers[0]
    for layout in ("tensorrt", "onnxruntime"):
        # alone in INT8 it loses what all-INT8 loses; everything but it in INT8 keeps the budget
        assert first.alone[layout].agreement < BUDGET and report.all_int8[layout].agreement < BUDGET
        assert first.all_but[layout].agreement >= BUDGET
        # the activation error collapses first at the planted layer's output
        sqnr = first.sqnr_db[layout]
        assert sqnr < 10 and all(e.sqnr_db[layout] > sqnr + 10 for e in report.layers[1:] if e.layer < "conv5")


def test_sqnr_matches_onnxruntime_qdq_loss_debug(planted, tmp_path):
    """(c) against onnxruntime's own tool on the same two graphs: it saves each Conv/Gemm
    output of the FP32 and the all-INT8 (TensorRT layout) twins and computes their SQNR."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        modify_model_output_intermediate_tensors,
    )

    from alexnet_deploy.quantize.calibration import activation_amax, collect_statistics, quantized_activations
    from alexnet_deploy.quantize.mixed import mixed_int8

    _, planted_onnx = planted
    model = onnx.load(str(planted_onnx))
    metadata = export_metadata(model, "model")
    images, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val", 64)
    calibration, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "calibration")
    statistics = collect_statistics(model, calibration, tensors=quantized_activations(model))
    quantized = mixed_int8(model, activation_amax(statistics, "entropy"), "tensorrt", {})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": images[i : i + 16]} for i in range(0, len(images), 16)])

        def get_next(self):
            return next(self.batches, None)

    saved = {}
    for name, graph in (("fp32", model), ("int8", quantized)):
        source, augmented = tmp_path / f"{name}.onnx", tmp_path / f"{name}.augmented.onnx"
        onnx.save(to_standard_lrn(graph), str(source))
        modify_model_output_intermediate_tensors(str(source), str(augmented), op_types_for_saving=["Conv", "Gemm"])
        saved[name] = collect_activations(str(augmented), Reader())
    ours = activation_sqnr(model, quantized, images)
    theirs = {
        layer: compute_signal_to_quantization_noice_ratio(saved["fp32"][output], saved["int8"][output])
        for layer, (_, output) in layer_tensors(model).items()
    }
    assert ours.keys() == theirs.keys()
    for layer in LAYERS:
        assert ours[layer] == pytest.approx(theirs[layer], abs=0.05), layer
    # the first layer whose output collapses (below 10 dB) is the planted one, in both
    assert next(layer for layer in LAYERS if ours[layer] < 10) == PLANTED_LAYER
    assert next(layer for layer in LAYERS if theirs[layer] < 10) == PLANTED_LAYER


def test_budgeted_build_meets_it_with_only_the_planted_layer_out_of_int8(planted, tmp_path):
    _, source = planted
    plain = tmp_path / "plain" / "alexnet.onnx"
    budgeted = tmp_path / "budgeted" / "alexnet.onnx"
    for path in (plain, budgeted):
        path.parent.mkdir()
        path.write_bytes(source.read_bytes())
    calibration = source.parent / "cal"
    build(BuildConfig(onnx=plain, precisions=("int8",), calibration_dir=calibration, calib_from_data=True))
    report = build(
        BuildConfig(
            onnx=budgeted,
            precisions=("int8",),
            calibration_dir=calibration,
            calib_from_data=True,
            min_agreement=BUDGET,
        )
    )
    # without the budget the build misses it (the TensorRT layout at least)
    assert min(agreement(ArtifactLayout.from_onnx(plain).onnx(n)) for n in ("int8", ORT_INT8)) < BUDGET
    assert report.mixed is not None
    out = report.mixed.fallback
    assert PLANTED_LAYER in out and set(out) <= {PLANTED_BETWEEN, PLANTED_LAYER}, out
    for name in ("int8", ORT_INT8):
        path = ArtifactLayout.from_onnx(budgeted).onnx(name)
        assert agreement(path) >= BUDGET, name  # measured again, from the written file
        calibration_metadata = export_metadata(load_verified(path), str(path)).calibration
        assert calibration_metadata is not None
        assert calibration_metadata.fallback == out and calibration_metadata.budget == {"min_agreement": BUDGET}
    assert any(PLANTED_LAYER in row.name for row in report.accuracy)  # the build table's row says
    shown = invoke("info", "--onnx", str(ArtifactLayout.from_onnx(budgeted).onnx("int8")))
    assert shown.exit_code == 0, shown.output
    assert f"out of INT8: {PLANTED_LAYER} {out[PLANTED_LAYER]}" in shown.stdout


def test_a_budget_not_even_fp16_meets_fails_and_writes_nothing(planted, tmp_path, monkeypatch):
    """Every step misses (the measurement is made to say so): one error, no INT8 file."""
    from alexnet_deploy.quantize import sensitivity

    _, source = planted
    onnx_path = tmp_path / "alexnet.onnx"
    onnx_path.write_bytes(source.read_bytes())
    real = sensitivity.Evaluator.measure

    def missing(self, layout, fallback):
        result = real(self, layout, fallback)
        return sensitivity.Outcome(0.5, result.top1, result.max_abs_diff, result.mean_abs_diff)

    monkeypatch.setattr(sensitivity.Evaluator, "measure", missing)
    config = BuildConfig(
        onnx=onnx_path, precisions=("fp16", "int8"), calibration_dir=source.parent / "cal", min_agreement=BUDGET
    )
    with pytest.raises(DeployError, match=r"even with every Conv/Gemm out of INT8.*nothing written"):
        build(config)
    assert not [p for p in tmp_path.iterdir() if p.name != "alexnet.onnx"]


def test_sensitivity_cli_writes_the_ranking_as_json_and_png(planted, tmp_path):
    _, planted_onnx = planted
    json_path, plot = tmp_path / "s.json", tmp_path / "s.png"
    result = invoke(
        "sensitivity",
        "--onnx",
        str(planted_onnx),
        "--calibration",
        str(planted_onnx.parent / "cal"),
        "--layout",
        "tensorrt",
        "--json",
        str(json_path),
        "--plot",
        str(plot),
    )
    assert result.exit_code == 0, result.output
    layers = json.loads(json_path.read_text())["layers"]
    assert layers[0]["layer"] == PLANTED_LAYER and len(layers) == len(LAYERS)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "conv5" in result.stdout


def test_bad_budget_is_one_error_line(planted):
    _, planted_onnx = planted
    result = invoke("build", "--int8", "--onnx", str(planted_onnx), "--min-agreement", "99")
    assert_one_line_error(result, "--min-agreement is a fraction")
    result = invoke("build", "--fp16", "--onnx", str(planted_onnx), "--max-drop", "1")
    assert_one_line_error(result, "add --int8")
