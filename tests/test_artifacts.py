"""artifacts: the layout names every file the way the pipeline always has, for the
default folders and for files named on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from alexnet_deploy.artifacts import ORT_INT8, ArtifactLayout, Precision, sidecar_of


def test_default_layout_names_the_documented_files():
    layout = ArtifactLayout()
    assert layout.checkpoint == Path("export/alexnet.pt")
    assert [layout.onnx(p) for p in (*Precision, ORT_INT8)] == [
        Path("export/alexnet.onnx"),
        Path("export/alexnet.fp16.onnx"),
        Path("export/alexnet.int8.onnx"),
        Path("export/alexnet.int8-ort.onnx"),
    ]
    assert layout.plan(Precision.FP16) == Path("engines/alexnet.fp16.plan")
    assert layout.sidecar("int8") == Path("engines/alexnet.int8.json") == sidecar_of(layout.plan("int8"))
    assert layout.build_log("fp32") == Path("engines/alexnet.fp32.log")
    assert layout.scales("entropy") == Path("calibration/scales.entropy.json")


@pytest.mark.parametrize("given", ["export/alexnet.onnx", "x/a.b.onnx", "model.bin", "model"])
def test_twins_of_a_named_export_sit_beside_it(given):
    layout = ArtifactLayout.from_onnx(Path(given))
    assert layout.onnx(Precision.FP32) == Path(given)  # the export keeps its own name
    for tag in ("fp16", "int8", ORT_INT8):
        assert layout.onnx(tag) == Path(given).with_suffix(f".{tag}.onnx")


@pytest.mark.parametrize("given", ["export/alexnet.pt", "x/run.v2.pt", "model.ckpt", "model"])
def test_training_companions_sit_beside_a_named_checkpoint(given):
    layout = ArtifactLayout.from_checkpoint(Path(given))
    assert layout.checkpoint == Path(given)
    assert layout.resume_state == Path(given).with_suffix(".state.pt")
    assert layout.metrics_log == Path(given).with_suffix(".metrics.jsonl")
    assert layout.curves == Path(given).with_suffix(".curves.png")


def test_precision_reads_as_its_value():
    assert f"{Precision.INT8}" == "int8" == Precision("int8")
