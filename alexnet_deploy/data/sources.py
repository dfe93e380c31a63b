"""Labelled image sources, read lazily and checked up front.

* ``digits`` (the embedded default): scikit-learn's 1,797 labelled 8x8 handwritten
  digits, shipped inside the package, so nothing is downloaded. Each is scaled to
  an 8-bit grey image and goes through the same preprocessing as a photo.
* an ImageFolder directory: one sub-folder per class holding JPEG/PNG files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DeployError

EMBEDDED_DIGITS = "digits"


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The JPEG/PNG files in ``folder`` (and below it if ``recursive``), sorted.

    Regular files only (a symlink to one counts): a FIFO, socket or device named
    ``x.png`` would block or read forever when opened as an image.
    """
    candidates = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass
class ImageSet:
    """Labelled images, loaded lazily. ``source`` names where they came from."""

    source: str
    classes: list[str]
    labels: np.ndarray  # int64, one per image
    _loaders: Sequence  # callables returning a PIL image
    # Whether a mirrored image still shows its class, i.e. whether horizontal flips are
    # a label-preserving augmentation: true of photos (the paper's ImageNet), not of
    # handwritten digits (a mirrored 2 is no 2, and flipping them cost 5 points of val
    # top-1 in the main job, docs/training.md).
    mirror_safe: bool = True

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return self._loaders[index]()

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        indices = list(indices)
        return ImageSet(
            self.source, self.classes, self.labels[indices], [self._loaders[i] for i in indices], self.mirror_safe
        )

    def fingerprint(self) -> str:
        """Hash of source, classes and labels (for caches keyed by data)."""
        digest = hashlib.sha256(self.source.encode())
        digest.update("\0".join(self.classes).encode())
        digest.update(self.labels.tobytes())
        return digest.hexdigest()[:16]


def _digit_loader(pixels: np.ndarray):
    return lambda: Image.fromarray(pixels, mode="L")


def load_digits() -> ImageSet:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    grey = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSet(
        EMBEDDED_DIGITS,
        [str(name) for name in bunch.target_names],
        bunch.target.astype(np.int64),
        [_digit_loader(img) for img in grey],
        mirror_safe=False,
    )


def _image_error(path: Path, error: Exception) -> DeployError:
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    detail = f"{error.__class__.__name__}: {reason}" if reason else error.__class__.__name__
    return DeployError(f"cannot read image {path}: {detail}")


def _file_loader(path: Path):
    def load() -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except Exception as error:  # noqa: BLE001 -- PIL raises many types for a damaged file
            raise _image_error(path, error) from None

    return load


def _check_image_header(path: Path) -> None:
    """Reject unreadable files up front (headers only, no decode), so a bad file is
    reported before training starts; a file whose damage only decoding shows (a
    truncated JPEG) is reported when it is loaded, see :class:`LoadFailure`."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # noqa: BLE001 -- PIL raises many types for a damaged file
        raise _image_error(path, error) from None


def load_image_folder(root: Path) -> ImageSet:
    """One sub-folder per class; every class must hold at least one JPEG/PNG."""
    root = Path(root)
    if not root.is_dir():
        raise DeployError(f"data directory {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DeployError(f"data directory {root} has no class sub-folders (expected one folder per class)")
    if len(class_dirs) < 2:
        raise DeployError(f"data directory {root} has one class folder; at least two classes are needed")
    labels: list[int] = []
    loaders = []
    for label, class_dir in enumerate(class_dirs):
        files = image_files(class_dir)
        if not files:
            raise DeployError(f"class folder {class_dir} has no images (regular {', '.join(IMAGE_SUFFIXES)} files)")
        for file in files:
            _check_image_header(file)
        labels += [label] * len(files)
        loaders += [_file_loader(f) for f in files]
    return ImageSet(str(root.resolve()), [d.name for d in class_dirs], np.asarray(labels, np.int64), loaders)


def load_images(data: str | Path) -> ImageSet:
    """``"digits"`` (embedded) or the path of an ImageFolder directory."""
    if str(data) == EMBEDDED_DIGITS:
        return load_digits()
    return load_image_folder(Path(data))
