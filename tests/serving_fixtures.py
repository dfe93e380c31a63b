"""Fixtures shared by the serving tests: an export of the tiny checkpoint and its real
held-out digits, encoded as PNG bytes (what a client sends)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def served_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    from alexnet_deploy.export.run import export

    path = tmp_path_factory.mktemp("serve-export") / "alexnet.onnx"
    export(tiny_checkpoint, path)
    return path


@pytest.fixture(scope="session")
def held_out_pngs(tiny_checkpoint) -> list[bytes]:
    """16 validation digits the tiny model never trained on, as PNG files' bytes."""
    from alexnet_deploy.checkpoint import load_checkpoint
    from alexnet_deploy.data.sources import load_images

    checkpoint = load_checkpoint(tiny_checkpoint)
    val = checkpoint.split.apply(load_images(checkpoint.data_source))["val"]
    encoded = []
    for index in range(16):
        buffer = io.BytesIO()
        val.image(index).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


@pytest.fixture(scope="session")
def reference_logits(tiny_checkpoint, served_onnx, held_out_pngs) -> np.ndarray:
    """The in-process onnxruntime runner's logits, preprocessing taken from the
    checkpoint (not from the ONNX metadata the code under test reads)."""
    from PIL import Image

    from alexnet_deploy.checkpoint import load_checkpoint
    from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner

    preprocessing = load_checkpoint(tiny_checkpoint).preprocessing
    batch = np.stack([preprocessing(Image.open(io.BytesIO(data))) for data in held_out_pngs])
    with OnnxRuntimeRunner(served_onnx) as runner:
        return runner.infer(batch)
