"""The calibration image set: the folder's images (or the training data's held-out
calibration split written into it), preprocessed and fingerprinted."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.preprocessing import Preprocessing
from ..data.sources import image_files, image_problem, load_images, scan_images
from ..data.split import Split
from ..errors import DeployError
from ..files import atomic_output

DEFAULT_CALIBRATION_IMAGES = 500


@dataclass
class CalibrationSet:
    images: np.ndarray  # preprocessed float32 (N, 3, H, W)
    fingerprint: str  # hash of exactly these preprocessed pixels
    directory: Path
    available: int


def fill_calibration_dir(
    directory: Path,
    data_source: str,
    split: Split,
    classes: Sequence[str] | None = None,
    class_ids: Sequence[str] = (),
) -> int:
    """Write the training data's held-out calibration split into ``directory`` as PNGs
    (``<class>/<index>.png``), unpreprocessed, so calibration applies the one
    preprocessing definition to them like to any user-supplied image.

    A folder that already holds other images is refused rather than mixed into the
    calibration set (calibration uses every image in the folder): only files of the
    names this split writes may be there already, and they are rewritten. With
    ``classes`` (the model's) the data source must still hold exactly those."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DeployError(f"--calibration {directory} is a file, not a folder")
    images = split.apply(load_images(data_source, classes, class_ids))["calibration"]
    targets = [directory / images.classes[images.labels[i]] / f"{i:05d}.png" for i in range(len(images))]
    present = scan_images(directory, recursive=True, what="calibration folder")[0] if directory.is_dir() else []
    foreign = sorted(set(present) - set(targets))
    if foreign:
        raise DeployError(
            f"calibration folder {directory} already holds {len(foreign)} other images (e.g. {foreign[0]}); "
            "--calib-from-data needs an empty folder (or one it filled before): choose another --calibration"
        )
    for index, target in enumerate(targets):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DeployError(f"cannot create {target.parent}: {error.strerror or error}") from None
        with atomic_output(target) as tmp:
            images.image(index).save(tmp, format="PNG")
    return len(images)


def calibration_files(directory: Path) -> list[Path]:
    """Every JPEG/PNG under ``directory``: a flat folder or one folder per class."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DeployError(f"--calibration {directory} is a file, not a folder of images")
    if not directory.is_dir():
        raise DeployError(f"calibration folder {directory} does not exist (add images, or use --calib-from-data)")
    files = image_files(directory, recursive=True, what="calibration folder")
    if not files:
        raise DeployError(
            f"calibration folder {directory} has no images (add JPEG/PNG files, or use --calib-from-data)"
        )
    return files


def load_calibration_set(directory: Path, preprocessing: Preprocessing, count: int | None) -> CalibrationSet:
    """``count`` images drawn evenly from the folder (all if fewer than the default
    and ``count`` was not given); fewer than an explicit ``count`` is an error."""
    files = calibration_files(directory)
    if count is not None and count < 1:
        raise DeployError(f"--calib-images must be positive, got {count}")
    if count is not None and count > len(files):
        raise DeployError(f"calibration folder {directory} has {len(files)} images, fewer than the {count} asked for")
    wanted = min(count or DEFAULT_CALIBRATION_IMAGES, len(files))
    chosen = sorted(np.random.default_rng(0).permutation(len(files))[:wanted])
    batch = []
    for index in chosen:
        try:
            with Image.open(files[index]) as image:
                batch.append(preprocessing(image.convert("RGB")))
        except Exception as error:  # noqa: BLE001 -- PIL raises many types for a damaged file
            raise DeployError(f"cannot read calibration image {files[index]}: {image_problem(error)}") from None
    images = np.stack(batch)
    fingerprint = hashlib.sha256(images.tobytes()).hexdigest()[:16]
    return CalibrationSet(images, fingerprint, Path(directory), len(files))
