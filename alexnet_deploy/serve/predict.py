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

from ..data.preprocessing import Preprocessing
from ..data.sources import folder_entries, image_problem, not_a_regular_file, warn_skipped
from ..devices import resolve_device
from ..errors import BackendUnavailable, DeployError
from ..inference import Runner
from ..metadata import export_metadata
from ..runners import registry
from ..runners.registry import ModelFiles


@dataclass(frozen=True)
class ServingMetadata:
    """What serving needs from an export, read once from its ONNX metadata."""

    classes: tuple[str, ...]
    preprocessing: Preprocessing

    @classmethod
    def of(cls, model: onnx.ModelProto, source: str) -> ServingMetadata:
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DeployError(
            f"{source}: not a readable image: {image_problem(error)}"
        ) from None  # PIL's damaged-file errors


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


def image_inputs(items: Sequence[str]) -> tuple[dict[str, Path | None], dict[str, Path | None]]:
    """The image files and folders ``items`` name (patterns expanded), keyed for a
    message: what ``predict`` reads, which none of its outputs may replace."""
    paths: list[Path] = []
    folders: dict[str, Path | None] = {}
    for item in items:
        path = Path(item)
        if path.is_dir():
            folders[f"the image folder{f' #{len(folders) + 1}' if folders else ''}"] = path
        elif path.exists() or path.is_symlink():
            paths.append(path)
        else:
            paths += [Path(match) for match in sorted(glob.glob(item, recursive=True))]
    return {f"the image{f' #{i + 1}' if i else ''}": path for i, path in enumerate(paths)}, folders


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


def open_runner(backend: str, precision: str, files: ModelFiles) -> tuple[Runner, ServingMetadata]:
    """The runner for ``backend``/``precision`` (from the registry) and the export's
    classes/preprocessing; a backend that cannot run here is an error, not a skip."""
    from ..graph import load_verified

    # weights and metadata both verified: the class names printed are the ones exported with these weights
    reference = load_verified(files.onnx)
    info = ServingMetadata.of(reference, str(files.onnx))
    try:
        runner = registry.open_runner(backend, precision, files, resolve_device("auto").type, reference=reference)
    except BackendUnavailable as error:
        raise DeployError(f"--backend {backend} --precision {precision}: {error}") from None
    return runner, info
