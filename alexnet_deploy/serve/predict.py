"""Image in, class out: decode, the checkpoint's preprocessing (read from the ONNX
metadata, never restated), a runner or a Triton server for the logits, softmax, top-k.

``decode`` is the single image-bytes -> tensor function: ``predict`` calls it in
process and the Triton ``preprocess`` model calls it inside the server, so a served
prediction and a local one see the same pixels.
"""

from __future__ import annotations

import glob
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from PIL import Image, UnidentifiedImageError

from ..choices import PredictBackend
from ..data.preprocessing import Preprocessing
from ..data.sources import folder_entries, not_a_regular_file, warn_skipped
from ..errors import DeployError
from ..graph import export_metadata
from ..runners.base import Runner


@dataclass(frozen=True)
class ModelInfo:
    """What serving needs from an export, read once from its ONNX metadata."""

    classes: tuple[str, ...]
    preprocessing: Preprocessing

    @classmethod
    def of(cls, model: onnx.ModelProto, source: str) -> ModelInfo:
        metadata = export_metadata(model, source)
        return cls(tuple(metadata.classes), metadata.preprocessing)


def decode(data: bytes, preprocessing: Preprocessing, source: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, anything PIL reads) -> float32 (3, crop, crop).

    Raises DeployError naming ``source`` for empty, truncated or non-image bytes."""
    if not data:
        raise DeployError(f"{source}: empty image (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now: a truncated file fails here, not later
            return preprocessing(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:  # PIL's damaged-file errors
        raise DeployError(f"{source}: not a readable image ({error.__class__.__name__})") from None


def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, directories (their files, sorted, not recursive) and glob patterns ->
    (paths, one error message per item that gives nothing to read).

    A named input that is not a regular file (a FIFO, a device, a dangling link) is an
    error, as is a folder that cannot be listed: the user asked for it. An entry of a
    folder or a match of a pattern that is not a regular file is left out, and what
    was left out is one :class:`~alexnet_deploy.errors.Skipped` warning."""
    paths: list[Path] = []
    errors: list[str] = []
    skipped: list[str] = []
    for item in items:
        path = Path(item)
        if path.exists() or path.is_symlink():
            kind = not_a_regular_file(path)
            if kind is None:
                paths.append(path)
            elif kind != "a folder":
                errors.append(f"{item}: {kind}, not an image file")
            else:
                try:
                    entries = [p for p in folder_entries(path, "folder") if not p.name.startswith(".")]
                except DeployError as error:
                    errors.append(str(error))
                    continue
                paths += _regular_files(entries, skipped)
        elif matches := sorted(glob.glob(item, recursive=True)):
            found = _regular_files([Path(m) for m in matches], skipped)
            if not found:
                errors.append(f"{item}: matches no regular file")
            paths += found
        else:
            errors.append(f"{item}: no such file, directory or pattern match")
    warn_skipped(skipped, "the images given")
    return paths, errors


def _regular_files(entries: Sequence[Path], skipped: list[str]) -> list[Path]:
    """The regular files among ``entries``; each other entry but a folder is added to ``skipped``."""
    files = []
    for entry in entries:
        kind = not_a_regular_file(entry)
        if kind is None:
            files.append(entry)
        elif kind != "a folder":
            skipped.append(f"{entry} ({kind})")
    return files


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass
class Prediction:
    source: str
    logits: np.ndarray  # float32 (classes,)
    top: list[tuple[str, float]]  # (class name, probability), most probable first

    def to_dict(self) -> dict:
        return {"image": self.source, "top": [{"class": c, "probability": p} for c, p in self.top]}


@dataclass
class PredictReport:
    backend: str
    predictions: list[Prediction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per image that failed

    def to_dict(self) -> dict:
        return {"backend": self.backend, "predictions": [p.to_dict() for p in self.predictions], "errors": self.errors}


def top_k(logits: np.ndarray, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    probabilities = softmax(logits.astype(np.float64))
    order = np.argsort(-probabilities, kind="stable")[: min(k, len(classes))]
    return [(classes[i], float(probabilities[i])) for i in order]


# (source, encoded bytes) -> logits, or a DeployError for that image alone
Classifier = Callable[[str, bytes], np.ndarray]


def local_classifier(runner: Runner, preprocessing: Preprocessing) -> Classifier:
    def classify(source: str, data: bytes) -> np.ndarray:
        return runner.infer(decode(data, preprocessing, source)[None])[0]

    return classify


def predict_files(
    items: Sequence[str], classify: Classifier, classes: Sequence[str], top: int, backend: str
) -> PredictReport:
    """Classify every image ``items`` names; an unreadable one becomes an error line
    and the rest are still predicted."""
    if top < 1:
        raise DeployError(f"--top must be at least 1, got {top}")
    paths, missing = expand_inputs(items)
    report = PredictReport(backend, errors=missing)
    for path in paths:
        try:
            logits = np.asarray(classify(str(path), path.read_bytes()), np.float32)
        except DeployError as error:
            report.errors.append(str(error))
            continue
        report.predictions.append(Prediction(str(path), logits, top_k(logits, classes, top)))
    return report


def fastest_backend(precision: str, engines_dir: Path, served: bool = False) -> str:
    """The backend a command uses when none is given: the fastest that can run here.
    TensorRT when its runner can run and the engine for ``precision`` exists; else
    OpenVINO when installed and serving ``precision`` (the fastest CPU backend measured,
    docs/bench.md: about 2x onnxruntime in FP32 and 6x in INT8 on an AVX-512 VNNI
    CPU, 1.5x and 2.65x on issue 20's AVX2-only one); else onnxruntime.
    ``served``: OpenVINO serves only :data:`serve.config.OPENVINO_PRECISIONS`."""
    from ..artifacts import ArtifactLayout
    from ..runners.openvino import openvino_unavailable_reason
    from ..tensorrt.availability import runner_unavailable_reason
    from .config import OPENVINO_PRECISIONS

    if runner_unavailable_reason() is None and ArtifactLayout(engines_dir=engines_dir).plan(precision).is_file():
        return PredictBackend.TENSORRT.value
    if openvino_unavailable_reason() is None and (not served or precision in OPENVINO_PRECISIONS):
        return PredictBackend.OPENVINO.value
    return PredictBackend.ONNXRUNTIME.value


def open_runner(
    backend: str, precision: str, onnx_path: Path, engines_dir: Path, checkpoint: Path
) -> tuple[Runner, ModelInfo]:
    """The runner for ``backend``/``precision`` and the export's classes/preprocessing."""
    from ..artifacts import ArtifactLayout
    from ..graph import load_verified

    if backend not in PredictBackend.values():
        raise DeployError(f"unknown backend {backend!r}; choose from {', '.join(PredictBackend.values())}")
    # weights and metadata both verified: the class names printed are the ones exported with these weights
    reference = load_verified(onnx_path)
    info = ModelInfo.of(reference, str(onnx_path))
    if backend == "onnxruntime":
        from ..runners.onnxruntime import OnnxRuntimeRunner

        path = ArtifactLayout.from_onnx(Path(onnx_path)).onnx(precision)
        model = reference if precision == "fp32" else load_verified(path)
        return OnnxRuntimeRunner(model, precision, "cpu"), info
    if backend == "openvino":
        from ..artifacts import ORT_INT8
        from ..runners.openvino import OpenVinoRunner, openvino_unavailable_reason

        reason = openvino_unavailable_reason()
        if reason is not None:
            raise DeployError(f"the openvino backend cannot run here: {reason}")
        # INT8: the onnxruntime layout, which OpenVINO runs fastest and closest to FP32 (docs/bench.md)
        path = ArtifactLayout.from_onnx(Path(onnx_path)).onnx(ORT_INT8 if precision == "int8" else precision)
        model = reference if precision == "fp32" else load_verified(path)
        return OpenVinoRunner(model, precision), info
    if backend == "torch":
        from ..checkpoint import load_checkpoint
        from ..devices import resolve_device
        from ..runners.torch import TorchRunner

        return TorchRunner(load_checkpoint(checkpoint), precision, resolve_device("auto").type), info
    from ..artifacts import ArtifactLayout
    from ..tensorrt.availability import runner_unavailable_reason

    reason = runner_unavailable_reason()
    if reason is not None:
        raise DeployError(f"the tensorrt backend cannot run here: {reason}")
    from ..tensorrt.runner import TensorRTRunner

    return TensorRTRunner(ArtifactLayout(engines_dir=engines_dir).plan(precision), precision), info
