"""Labelled image sources, read lazily and checked up front.

* ``digits`` (the embedded default): scikit-learn's 1,797 labelled 8x8 handwritten
  digits, shipped inside the package, so nothing is downloaded. Each is scaled to
  an 8-bit grey image and goes through the same preprocessing as a photo.
* an ImageFolder directory: one sub-folder per class holding JPEG/PNG files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DeployError, Skipped

EMBEDDED_DIGITS = "digits"
# The data source of a model imported without --data: it has no images of its own.
NO_DATA = "none"


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def not_a_regular_file(path: Path) -> str | None:
    """None for a regular file (or a symlink to one), else what ``path`` is instead,
    as a message fragment ("a FIFO", "a dangling symlink"...)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symlink loop"
        if isinstance(error, FileNotFoundError):
            return f"a dangling symlink (to {os.readlink(path)})" if path.is_symlink() else "gone"
        return f"unreadable ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device"}
    return kinds.get(stat.S_IFMT(mode), "not a regular file")


def folder_entries(folder: Path, what: str) -> list[Path]:
    """``folder``'s entries, sorted; a folder that cannot be listed (no permission) is a
    DeployError naming it as ``what``, never a traceback or a silently empty folder."""
    try:
        return sorted(Path(folder).iterdir())
    except OSError as error:
        raise DeployError(f"cannot read {what} {folder}: {error.strerror or error}") from None


def scan_images(folder: Path, recursive: bool = False, what: str = "folder") -> tuple[list[Path], list[str]]:
    """The JPEG/PNG files in ``folder`` (and in the folders below it if ``recursive``;
    symlinked folders are not followed), sorted, and one ``"<path> (<why>)"`` per entry
    named like an image that is not a regular file, so the caller can say it skipped it.

    Regular files only (a symlink to one counts): a FIFO, socket or device named
    ``x.png`` would block or read forever when opened as an image.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for entry in folder_entries(folder, what):
        if recursive and entry.is_dir() and not entry.is_symlink():
            below, left_out = scan_images(entry, recursive, what)
            files.extend(below)
            skipped.extend(left_out)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            kind = not_a_regular_file(entry)
            if kind is None:
                files.append(entry)
            else:
                skipped.append(f"{entry} ({kind})")
    return sorted(files), skipped


def skipped_summary(skipped: list[str], shown: int = 3) -> str:
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return ", ".join(skipped[:shown]) + more


def warn_skipped(skipped: list[str], where: Path | str) -> None:
    """One :class:`Skipped` warning for what a walk of ``where`` left out, if anything."""
    if skipped:
        entries = "1 entry" if len(skipped) == 1 else f"{len(skipped)} entries"
        warnings.warn(Skipped(f"left out {entries} of {where}: {skipped_summary(skipped)}"), stacklevel=2)


def image_files(folder: Path, recursive: bool = False, what: str = "folder") -> list[Path]:
    """:func:`scan_images`'s files; what it left out is one :class:`Skipped` warning."""
    files, skipped = scan_images(folder, recursive, what)
    warn_skipped(skipped, folder)
    return files


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


def image_problem(error: Exception) -> str:
    """What a file PIL could not read is, in words a user can act on, with the
    exception's class: train, calibration and predict word it alike."""
    name = error.__class__.__name__
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    if isinstance(error, Image.DecompressionBombError):
        pixels = re.search(r"\((\d+) pixels\)", reason)
        size = f"{int(pixels[1]):,} pixels" if pixels else "more pixels than allowed"
        limit = (
            f"{2 * Image.MAX_IMAGE_PIXELS:,}" if Image.MAX_IMAGE_PIXELS else "allowed"
        )  # PIL refuses above twice its limit
        return f"its header claims {size}, more than the {limit} decoded here: a decompression bomb? ({name})"
    if isinstance(error, UnidentifiedImageError):
        return f"not an image in any format PIL reads (JPEG, PNG...) ({name})"
    if isinstance(error, OSError) and "truncated" in reason:
        return f"a truncated image: {reason} ({name})"
    return f"{name}: {reason}" if reason else name


def _image_error(path: Path, error: Exception) -> DeployError:
    return DeployError(f"cannot read image {path}: {image_problem(error)}")


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


# What not_a_regular_file says of an entry that might be a class folder or might not
_UNKNOWABLE = ("a dangling symlink", "a symlink loop", "unreadable")


def _class_folders(root: Path) -> tuple[list[Path], list[str]]:
    """The class folders of ``root`` (hidden ones aside) and what else it holds, as
    :func:`scan_images` reports it. A link that no longer leads to anything may have
    been a class, so it is an error: training on the classes left would give a model
    silently short of one."""
    folders: list[Path] = []
    skipped: list[str] = []
    for entry in folder_entries(root, "data directory"):
        if entry.name.startswith("."):
            continue
        kind = not_a_regular_file(entry)
        if kind == "a folder":
            folders.append(entry)
        elif kind is not None and kind.startswith(_UNKNOWABLE):
            raise DeployError(
                f"cannot tell whether {entry} is a class folder: it is {kind}; restore its target or remove it"
            )
        else:
            skipped.append(f"{entry} ({kind or 'a file'}, not a class folder)")
    return folders, skipped


def load_image_folder(root: Path, min_classes: int = 2, classes: Sequence[str] | None = None) -> ImageSet:
    """One sub-folder per class; every class must hold at least one JPEG/PNG, and
    there must be ``min_classes`` of them (two to train on; one is enough to score a
    model that already knows its classes). What the walk leaves out (files beside the
    class folders, entries named like images that are not regular files) is one
    :class:`Skipped` warning, issued once the folder is found good. ``classes``: the
    folder must hold exactly these, checked by name before any image is scanned (a
    data source of "/" is the wrong folder, not one whose /bin lacks images)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DeployError(f"data directory {root} is a file, not a folder of class sub-folders")
    if not root.is_dir():
        raise DeployError(f"data directory {root} does not exist")
    class_dirs, skipped = _class_folders(root)
    if not class_dirs:
        raise DeployError(f"data directory {root} has no class sub-folders (expected one folder per class)")
    if classes is not None:
        _check_classes(root, [d.name for d in class_dirs], classes)
    if len(class_dirs) < min_classes:
        raise DeployError(f"data directory {root} has one class folder; at least {min_classes} classes are needed")
    labels: list[int] = []
    loaders = []
    for label, class_dir in enumerate(class_dirs):
        files, left_out = scan_images(class_dir, what="class folder")
        if not files:
            raise DeployError(
                f"class folder {class_dir} has no images (regular {', '.join(IMAGE_SUFFIXES)} files)"
                + (f"; skipped {skipped_summary(left_out)}" if left_out else "")
            )
        for file in files:
            _check_image_header(file)
        skipped += left_out
        labels += [label] * len(files)
        loaders += [_file_loader(f) for f in files]
    warn_skipped(skipped, root)
    return ImageSet(str(root.resolve()), [d.name for d in class_dirs], np.asarray(labels, np.int64), loaders)


def load_labelled_folder(root: Path, classes: Sequence[str], class_ids: Sequence[str] = ()) -> ImageSet:
    """An ImageFolder holding some of a model's ``classes``, each sub-folder named by a
    class name or by its id in ``class_ids`` (an ImageNet synset such as
    ``n01440764``). Labels are the model's class indices, so every score computed on
    it is in the model's own terms; a folder naming no class of the model is refused.
    One class folder is enough: the model's classes are known already."""
    images = load_image_folder(Path(root), min_classes=1)
    index = {name: i for i, name in enumerate(classes)} | {cid: i for i, cid in enumerate(class_ids)}
    unknown = [name for name in images.classes if name not in index]
    if unknown:
        by = "name or id (e.g. n01440764)" if class_ids else "name"
        raise DeployError(
            f"{root}: class folder{'s' if len(unknown) > 1 else ''} {_first_names(unknown)} match{'' if len(unknown) > 1 else 'es'} "
            f"none of the model's {len(classes)} classes by {by}"
        )
    labels = np.asarray([index[images.classes[label]] for label in images.labels], np.int64)
    return ImageSet(images.source, list(classes), labels, images._loaders, images.mirror_safe)


def load_images(data: str | Path, classes: Sequence[str] | None = None, class_ids: Sequence[str] = ()) -> ImageSet:
    """``"digits"`` (embedded) or the path of an ImageFolder directory. With
    ``classes`` (a model's, when its held-out images are read back) the data must hold
    exactly those: a folder replaced since, or metadata naming another, would have a
    model calibrated and scored on images whose labels mean other classes. A model with
    ``class_ids`` (an imported ImageNet one) instead takes a folder of any of its
    classes, named by name or id (:func:`load_labelled_folder`)."""
    if str(data) == NO_DATA:
        raise DeployError(
            "this model was imported without --data, so it has no labelled images of its own; "
            "re-run `alexnet-deploy import MODEL.onnx --data DIR` with a folder of class sub-folders"
        )
    if classes is not None and class_ids and str(data) != EMBEDDED_DIGITS:
        return load_labelled_folder(Path(data), classes, class_ids)
    if str(data) != EMBEDDED_DIGITS:
        return load_image_folder(Path(data), classes=classes)
    images = load_digits()
    if classes is not None:
        _check_classes(data, images.classes, classes)
    return images


def _check_classes(data: str | Path, found: Sequence[str], classes: Sequence[str]) -> None:
    if list(found) != list(classes):
        raise DeployError(
            f"{data} holds {len(found)} classes ({_first_names(found)}) but the model was "
            f"trained on {len(classes)} ({_first_names(classes)}): not the data it came from"
        )


def _first_names(names: Sequence[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
