"""`predict` in process: the checkpoint's preprocessing from the ONNX metadata, the
onnxruntime runner, softmax and top-k; bad files are one error line each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, invoke
from typer.testing import CliRunner

from alexnet_deploy.cli import app
from alexnet_deploy.data.preprocessing import Preprocessing
from alexnet_deploy.errors import DeployError
from alexnet_deploy.runners.registry import ModelFiles
from alexnet_deploy.serve.predict import decode, local_classifier, open_runner, predict_files


@pytest.fixture()
def image_dir(tmp_path, held_out_pngs):
    for index, data in enumerate(held_out_pngs):
        (tmp_path / f"digit{index:02d}.png").write_bytes(data)
    return tmp_path


def test_probabilities_are_the_softmax_of_the_runners_logits(image_dir, served_onnx, reference_logits, tiny_checkpoint):
    runner, info = open_runner("onnxruntime", "fp32", ModelFiles(served_onnx, image_dir, tiny_checkpoint))
    with runner:
        report = predict_files(
            [str(image_dir)], local_classifier(runner, info.preprocessing), info.classes, 3, runner.name
        )
    assert report.errors == []
    assert [p.source for p in report.predictions] == [str(image_dir / f"digit{i:02d}.png") for i in range(16)]
    for prediction, logits in zip(report.predictions, reference_logits, strict=True):
        # Preprocessing read back from the ONNX metadata (JSON) vs the checkpoint's own
        # floats: equal to the last bits or so, hence a tolerance, not bit-equality.
        np.testing.assert_allclose(prediction.logits, logits, rtol=0, atol=1e-5)
        probabilities = torch.softmax(torch.from_numpy(np.asarray(prediction.logits)).double(), dim=0).numpy()
        order = np.argsort(-probabilities)[:3]
        assert [name for name, _ in prediction.top] == [info.classes[i] for i in order]
        np.testing.assert_allclose([p for _, p in prediction.top], probabilities[order], rtol=1e-12)
        assert prediction.top[0][0] == info.classes[int(np.argmax(logits))]  # top-1 agrees with the runner


def test_cli_reports_each_bad_input_on_one_line_and_still_predicts_the_rest(image_dir, served_onnx):
    (image_dir / "notes.txt").write_text("not an image")
    (image_dir / "empty.png").write_bytes(b"")
    whole = (image_dir / "digit00.png").read_bytes()
    truncated = whole[: len(whole) // 2]  # header intact, pixel data cut
    (image_dir / "truncated.png").write_bytes(truncated)
    json_path = image_dir.parent / "predictions.json"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(image_dir),
            str(image_dir / "nothing*.jpg"),
            "--onnx",
            str(served_onnx),
            "--top",
            "2",
            "--json",
            str(json_path),
        ],
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line]
    assert sorted(errors) == sorted(
        [
            f"error: {image_dir / 'empty.png'}: empty image (0 bytes)",
            f"error: {image_dir / 'notes.txt'}: not a readable image (UnidentifiedImageError)",
            f"error: {image_dir / 'truncated.png'}: not a readable image (OSError)",
            f"error: {image_dir / 'nothing*.jpg'}: no such file, directory or pattern match",
        ]
    ), result.stderr
    assert "Traceback" not in result.output
    written = json.loads(json_path.read_text())
    assert len(written["predictions"]) == 16 and len(written["errors"]) == 4
    assert all(len(p["top"]) == 2 for p in written["predictions"])
    assert sum(f"{image_dir / 'digit'}" in line for line in result.stdout.splitlines()) == 16


def test_predict_names_the_right_digit_for_held_out_images_of_a_known_class(tiny_checkpoint, served_onnx, tmp_path):
    """What a user relies on: ten held-out 7s (never trained on) through the CLI; at least
    nine are called 7 (the test model's held-out top-1 is ~95%, test_train.py)."""
    from alexnet_deploy.checkpoint import load_checkpoint
    from alexnet_deploy.data.sources import load_images

    checkpoint = load_checkpoint(tiny_checkpoint)
    val = checkpoint.split.apply(load_images(checkpoint.data_source))["val"]
    sevens = [i for i in range(len(val)) if val.classes[int(val.labels[i])] == "7"][:10]
    assert len(sevens) == 10
    for n, index in enumerate(sevens):
        val.image(index).save(tmp_path / f"seven{n}.png")
    json_path = tmp_path / "predictions.json"
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "seven*.png"), "--onnx", str(served_onnx), "--json", str(json_path)]
    )
    assert result.exit_code == 0, result.output
    answers = [p["top"][0]["class"] for p in json.loads(json_path.read_text())["predictions"]]
    assert len(answers) == 10 and answers.count("7") >= 9, answers


def test_globs_pick_the_matching_files_only(image_dir, served_onnx):
    result = CliRunner().invoke(
        app, ["predict", str(image_dir / "digit0*.png"), "--onnx", str(served_onnx), "--top", "1"]
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 10


def test_decode_is_the_checkpoints_preprocessing(held_out_pngs):
    import io

    from PIL import Image

    preprocessing = Preprocessing(resize=64, crop=57, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    tensor = decode(held_out_pngs[0], preprocessing)
    assert tensor.shape == (3, 57, 57) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, preprocessing(Image.open(io.BytesIO(held_out_pngs[0]))))
    with pytest.raises(DeployError, match=r"x.png: empty image"):
        decode(b"", preprocessing, "x.png")


def test_unknown_backend_and_missing_export_are_one_line_errors(tmp_path, served_onnx):
    result = CliRunner().invoke(app, ["predict", str(tmp_path), "--backend", "tflite", "--onnx", str(served_onnx)])
    # an Enum option: Typer refuses it as a usage error (exit 2), naming the choices
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "'tflite' is not one of 'onnxruntime', 'openvino', 'torch', 'tensorrt'" in result.stderr
    result = CliRunner().invoke(app, ["predict", str(tmp_path), "--onnx", str(tmp_path / "none.onnx")])
    assert result.exit_code == 1 and "none.onnx not found" in result.stderr


def predicted_probabilities(image_dir, classes: list[str], *options: str) -> tuple[str, np.ndarray]:
    """``predict`` of the 16 held-out digits through the CLI, every class's probability
    read back from its --json: (the backend it names, 16 x classes)."""
    json_path = image_dir.parent / "predictions.json"
    result = invoke("predict", str(image_dir), "--top", str(len(classes)), "--json", str(json_path), *options)
    assert result.exit_code == 0, result.output
    report = json.loads(json_path.read_text())
    assert report["errors"] == [] and len(report["predictions"]) == 16
    table = np.array(
        [[{t["class"]: t["probability"] for t in p["top"]}[name] for name in classes] for p in report["predictions"]]
    )
    return report["backend"], table


def test_predict_backend_torch_gives_the_exported_models_answers(
    image_dir, served_onnx, tiny_checkpoint, reference_logits
):
    from alexnet_deploy.checkpoint import load_checkpoint

    classes = load_checkpoint(tiny_checkpoint).classes
    options = ("--backend", "torch", "--checkpoint", str(tiny_checkpoint), "--onnx", str(served_onnx))
    backend, probabilities = predicted_probabilities(image_dir, classes, *options)
    assert backend == "torch/fp32"
    expected = torch.softmax(torch.from_numpy(reference_logits).double(), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)  # PyTorch vs onnxruntime FP32 kernels
    assert (probabilities.argmax(1) == reference_logits.argmax(1)).all()


def test_predict_precision_int8_runs_the_int8_graph(image_dir, tiny_precisions, tiny_checkpoint, reference_logits):
    """The INT8 graph's answers, not the FP32 export's: close to FP32, yet not equal."""
    from alexnet_deploy.checkpoint import load_checkpoint

    fp32, _ = tiny_precisions
    classes = load_checkpoint(tiny_checkpoint).classes
    options = ("--backend", "onnxruntime", "--precision", "int8", "--onnx", str(fp32))
    backend, probabilities = predicted_probabilities(image_dir, classes, *options)
    assert backend == "onnxruntime/int8"
    expected = torch.softmax(torch.from_numpy(reference_logits).double(), dim=1).numpy()
    assert (probabilities.argmax(1) == reference_logits.argmax(1)).mean() >= 15 / 16
    difference = np.abs(probabilities - expected).max()
    assert 1e-4 < difference < 0.2, f"max |Δ probability| vs FP32 {difference:.3g}"


def test_predict_backend_torch_at_int8_is_one_line(image_dir, served_onnx, tiny_checkpoint):
    options = ("--backend", "torch", "--precision", "int8", "--checkpoint", str(tiny_checkpoint))
    result = invoke("predict", str(image_dir), "--onnx", str(served_onnx), *options)
    assert_one_line_error(result, "torch runner has no INT8 path")
