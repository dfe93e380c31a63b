"""The whole pipeline on a real ImageFolder of JPEGs, as a user's data would be:
train (tiny) -> export -> build (FP16 + INT8 calibrated from the data) -> bench, all
through the CLI, with every step's figures checked against an independent reference.

Two folders: one of equal-sized images, and one that mixes a 32x32 thumbnail, a
640x480 photo and a 1x4000 sliver in every class (issue 15, item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from alexnet_deploy.cli import app
from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.graph import to_standard_lrn
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.metrics import compare_logits, topk_accuracy
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner

cli = CliRunner()
PER_CLASS = 10
MIXED_SIZES = [(32, 32), (640, 480), (1, 4000)]  # (width, height) of the first images of each class


def write_jpeg_folder(root: Path, mixed: bool) -> Path:
    """Two classes told apart by colour, so the labels mean something."""
    rng = np.random.default_rng(0)
    for label, tint in enumerate(((200, 40, 40), (40, 40, 200))):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            width, height = MIXED_SIZES[i] if mixed and i < len(MIXED_SIZES) else (32, 32)
            noise = rng.integers(-40, 40, (height, width, 3))
            pixels = np.clip(np.array(tint) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:02d}.jpg", quality=90)
    return root


def run(*args: str):
    result = cli.invoke(app, list(args))
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return result


@pytest.mark.parametrize("mixed", [False, True], ids=["same-size", "mixed-size"])
def test_image_folder_trains_exports_builds_and_benches(tmp_path, mixed):
    data = write_jpeg_folder(tmp_path / "data", mixed)
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    checkpoint, onnx_path = export_dir / "alexnet.pt", export_dir / "alexnet.onnx"

    run(
        "train",
        "--data",
        str(data),
        "--epochs",
        "4",
        "--batch-size",
        "4",
        "--lr",
        "0.01",  # the run this test was sized on: 4 epochs at batch 4 learn the 2 classes
        "--width",
        "0.125",
        "--output",
        str(checkpoint),
    )
    exported = run("export", "--checkpoint", str(checkpoint), "--output", str(onnx_path))
    assert "top-1 agreement 100.00%" in exported.stdout
    run("build", "--fp16", "--int8", "--onnx", str(onnx_path), "--calibration", str(tmp_path / "cal"),
        "--calib-from-data", "--engines", str(tmp_path / "engines"), "--json", str(tmp_path / "build.json"))  # fmt: skip
    run("bench", "--onnx", str(export_dir / "alexnet.onnx"), "--checkpoint", str(checkpoint), "--engines", str(tmp_path / "engines"),
        "--backends", "onnxruntime,torch", "--iterations", "1", "--warmup", "0", "--batch", "2",
        "--json", str(tmp_path / "bench.json"))  # fmt: skip

    # the reference, computed here independently: the standard-op twin on the held-out val images
    model = onnx.load(str(onnx_path))
    metadata = export_metadata(model, str(onnx_path))
    images, labels = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val")
    assert len(images) == 2 * round(PER_CLASS * metadata.split.val_fraction)
    with OnnxRuntimeRunner(to_standard_lrn(model)) as runner:
        reference = runner.infer_all(images)
    # the labels mean something, and the model learned them: held-out images by colour
    assert topk_accuracy(reference, labels, 1) == 1.0, reference.argmax(1)
    report = json.loads((tmp_path / "build.json").read_text())
    rows = {row["name"]: row for row in report["accuracy"]}
    assert report["val_images"] == len(images)
    assert rows["fp16"]["top1"] == pytest.approx(
        topk_accuracy(_logits(export_dir / "alexnet.fp16.onnx", images, "fp16"), labels, 1)
    )
    int8 = _logits(export_dir / "alexnet.int8.onnx", images, "int8")
    assert rows["int8 (entropy)"]["max_abs_diff"] == pytest.approx(compare_logits(reference, int8)[0], rel=1e-5)
    assert len(list((tmp_path / "cal").rglob("*.png"))) == 2 * round(PER_CLASS * metadata.split.calibration_fraction)

    bench = {(r["backend"], r["precision"]): r for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
    # same session as the reference, other batch sizes: equal up to float32 rounding
    assert bench["onnxruntime", "fp32"]["max_abs_diff"] <= 1e-5 and bench["onnxruntime", "fp32"]["top1_agreement"] == 1
    assert bench["torch", "fp32"]["max_abs_diff"] <= 1e-4 and bench["torch", "fp32"]["notes"] == [
        "channels-last (NHWC) on CPU"
    ]
    # INT8 at another batch size may round an activation to the neighbouring step
    # (int8-sim runs the TensorRT graph build wrote as int8; int8 the onnxruntime graph)
    assert bench["onnxruntime", "int8-sim"]["max_abs_diff"] == pytest.approx(
        rows["int8 (entropy)"]["max_abs_diff"], rel=0.05
    )
    ort_int8 = rows["int8 (entropy; onnxruntime graph)"]["max_abs_diff"]
    assert bench["onnxruntime", "int8"]["max_abs_diff"] == pytest.approx(ort_int8, rel=0.05)
    assert bench["onnxruntime", "fp32"]["top1"] == pytest.approx(topk_accuracy(reference, labels, 1))


def _logits(path: Path, images: np.ndarray, precision: str) -> np.ndarray:
    with OnnxRuntimeRunner(onnx.load(str(path)), precision) as runner:
        return runner.infer_all(images)
