"""Shared fixtures: small, fast stand-ins built by the real code paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The serving fixtures (a served export, held-out PNGs, reference logits) for every test
# module that asks for them by name.
pytest_plugins = ["serving_fixtures"]

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


# The shared test model: narrow, so it trains in seconds, yet trained by the default
# recipe on all the digits' training split until it knows them (test_train.py asserts its
# held-out top-1 >= 90% and predictions over every class), so agreement tests can fail.
TINY_MODEL = {"width": 0.125, "epochs": 5}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint from our training module that has learned (see TINY_MODEL)."""
    from alexnet_deploy.plots import curves_writer
    from alexnet_deploy.train.config import TrainConfig
    from alexnet_deploy.train.loop import train

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    train(
        TrainConfig(output=path, seed=0, **TINY_MODEL),
        on_epoch=curves_writer(path.with_suffix(".curves.png")),
    )
    return path


@pytest.fixture(scope="session")
def tiny_precisions(tiny_checkpoint, tmp_path_factory):
    """The shared model exported and built at FP16 and INT8 (both layouts), calibrated
    on its held-out calibration split: (the FP32 ONNX, the build report)."""
    from alexnet_deploy.build.config import BuildConfig
    from alexnet_deploy.build.run import build
    from alexnet_deploy.export.run import export

    folder = tmp_path_factory.mktemp("precisions")
    fp32 = folder / "alexnet.onnx"
    export(tiny_checkpoint, fp32)
    report = build(
        BuildConfig(onnx=fp32, precisions=("fp16", "int8"), calibration_dir=folder / "cal", calib_from_data=True)
    )
    return fp32, report


def onnxruntime_lrn(x: np.ndarray, p) -> np.ndarray:
    """onnxruntime's own LRN kernel (odd sizes only), an independent reference."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("LRN", ["x"], ["y"], size=p.size, alpha=p.alpha, beta=p.beta, bias=p.bias)
    graph = helper.make_graph(
        [node],
        "lrn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def write_image_folder(root: Path, classes: int = 2, per_class: int = 3, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size + 7, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return root


def bomb_png_bytes(side: int = 20_000) -> bytes:
    """A valid PNG of a few dozen bytes whose header claims ``side`` x ``side`` 8-bit grey
    pixels: PIL's decompression-bomb check reads the header, so nothing is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\0" * (side + 1))  # one row of the claimed size; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def assert_one_line_error(result, fragment: str) -> None:
    """The project's error convention, for a CliRunner result: non-zero exit, one
    ``error:`` line on stderr holding ``fragment``, no traceback anywhere."""
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def invoke(*args: str):
    """Run ``alexnet-deploy ARGS`` in process (Typer's CliRunner), stdout and stderr apart."""
    from typer.testing import CliRunner

    from alexnet_deploy.cli import app

    return CliRunner().invoke(app, list(args))
