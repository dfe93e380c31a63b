"""Labelled image sources, the deterministic train/val/calibration split, and the one
preprocessing definition every step (training, export validation, calibration,
evaluation, bench) uses.

Sources:
* ``digits`` (the embedded default): scikit-learn's 1,797 labelled 8x8 handwritten
  digits, shipped inside the package, so nothing is downloaded. Each is scaled to
  an 8-bit grey image and goes through the same preprocessing as a photo.
* an ImageFolder directory: one sub-folder per class holding JPEG/PNG files.
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DeployError

EMBEDDED_DIGITS = "digits"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_RESIZE = 4096  # beyond this a crafted config allocates gigabytes per image


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The JPEG/PNG files in ``folder`` (and below it if ``recursive``), sorted.

    Regular files only (a symlink to one counts): a FIFO, socket or device named
    ``x.png`` would block or read forever when opened as an image.
    """
    candidates = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, crop ``crop`` x ``crop``, scale to [0, 1],
    normalise by ``mean``/``std`` per RGB channel. Output: float32 CHW.

    An image longer than ``max_aspect`` times its shorter side is first cropped to
    that aspect ratio around its centre, so a 1x4000 sliver is not resized into a
    256 x 1,024,000 array of which only a 227-pixel window is ever used.
    """

    resize: int = 256
    crop: int = 227
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_aspect: float = 4.0

    def __post_init__(self) -> None:
        # checkpoints and ONNX metadata carry these values, so they are checked as input
        if not 1 <= self.crop <= self.resize <= MAX_RESIZE:
            raise DeployError(f"preprocessing needs 1 <= crop <= resize <= {MAX_RESIZE}, got crop {self.crop}, resize {self.resize}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise DeployError(f"preprocessing {name} must be 3 finite numbers, got {values}")
        if not all(v > 0 for v in self.std):
            raise DeployError(f"preprocessing std must be positive, got {self.std}")
        if not 1 <= self.max_aspect <= 100:
            raise DeployError(f"preprocessing max_aspect must be in [1, 100], got {self.max_aspect}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            max_aspect=float(data.get("max_aspect", cls.max_aspect)),
        )

    def resized(self, image: Image.Image) -> np.ndarray:
        """At most ``max_aspect``, then shorter side to ``resize`` (bilinear), as uint8 HWC."""
        width, height = image.size
        longest = math.ceil(min(width, height) * self.max_aspect)
        if max(width, height) > longest:
            left, top = max(0, (width - longest) // 2), max(0, (height - longest) // 2)
            image = image.crop((left, top, left + min(width, longest), top + min(height, longest)))
            width, height = image.size
        scale = self.resize / min(width, height)
        size = (max(self.resize, round(width * scale)), max(self.resize, round(height * scale)))
        return np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))

    def normalise(self, pixels: np.ndarray, out: np.ndarray | None = None, shift: np.ndarray | None = None) -> np.ndarray:
        """uint8 HWC crop -> normalised float32 CHW, written into ``out`` if given.

        Done in place (cast on assignment, then one multiply and one subtract) because
        per-image temporaries made the data pipeline a visible share of a CPU
        training step. ``shift`` is an extra per-channel offset in [0, 1] pixel units
        (the PCA colour jitter), added before normalisation.
        """
        if out is None:
            out = np.empty((3, *pixels.shape[:2]), np.float32)
        std = np.asarray(self.std, np.float32)
        offset = np.asarray(self.mean, np.float32) / std
        if shift is not None:
            offset = offset - shift.astype(np.float32) / std
        out[...] = pixels.transpose(2, 0, 1)
        out *= (1.0 / (255.0 * std))[:, None, None]
        out -= offset[:, None, None]
        return out

    def __call__(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """Deterministic evaluation transform: centre crop."""
        pixels = self.resized(image)
        top = (pixels.shape[0] - self.crop) // 2
        left = (pixels.shape[1] - self.crop) // 2
        return self.normalise(pixels[top : top + self.crop, left : left + self.crop], out)


@dataclass(frozen=True)
class Augmentation:
    """The paper's training augmentation (Section 4.1), each part switchable:
    random ``crop``-sized patches of the resized image, horizontal flips, and PCA
    colour jitter (alpha ~ N(0, ``pca_std``) along the RGB principal components)."""

    random_crop: bool = True
    horizontal_flip: bool = True
    pca_std: float = 0.1  # 0 disables the colour jitter


class PCAColourJitter:
    """Fitted RGB principal components of the training pixels (in [0, 1] units)."""

    def __init__(self, eigenvalues: np.ndarray, eigenvectors: np.ndarray) -> None:
        self.eigenvalues = eigenvalues.astype(np.float32)
        self.eigenvectors = eigenvectors.astype(np.float32)

    @classmethod
    def fit(cls, images: Sequence[np.ndarray]) -> PCAColourJitter:
        pixels = np.concatenate([img.reshape(-1, 3) for img in images]).astype(np.float64) / 255.0
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
        return cls(np.clip(eigenvalues, 0, None), eigenvectors)

    def offset(self, rng: np.random.Generator, std: float) -> np.ndarray:
        alphas = rng.normal(0.0, std, size=3).astype(np.float32)
        return self.eigenvectors @ (alphas * self.eigenvalues)


@dataclass
class ImageSet:
    """Labelled images, loaded lazily. ``source`` names where they came from."""

    source: str
    classes: list[str]
    labels: np.ndarray  # int64, one per image
    _loaders: Sequence  # callables returning a PIL image

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> Image.Image:
        return self._loaders[index]()

    def subset(self, indices: Sequence[int]) -> ImageSet:
        indices = list(indices)
        return ImageSet(self.source, self.classes, self.labels[indices], [self._loaders[i] for i in indices])

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
        except Exception as error:  # PIL raises many types for a damaged file
            raise _image_error(path, error) from None

    return load


def _check_image_header(path: Path) -> None:
    """Reject unreadable files up front (headers only, no decode), so a bad file is
    reported before training starts; a file whose damage only decoding shows (a
    truncated JPEG) is reported when it is loaded, see :class:`LoadFailure`."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for a damaged file
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


@dataclass(frozen=True)
class Split:
    """Deterministic, stratified train/val/calibration split.

    Its own seed (not the training seed) fixes it, so the calibration and val images
    stay held out however often training is re-run with other seeds. ``limit`` (a
    smoke run's ``--limit``) is part of it: the split is made among the ``limit``
    images drawn by ``seed``, and every held-out helper draws the same ones, so no
    training image can turn up later as a val or calibration image.
    """

    val_fraction: float = 0.15
    calibration_fraction: float = 0.15
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        # checkpoints and ONNX metadata carry these values, so they are checked as input
        fractions = (self.val_fraction, self.calibration_fraction)
        if not all(isinstance(f, (int, float)) and 0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
            raise DeployError(f"split fractions must be in [0, 1) and sum below 1, got val {self.val_fraction}, calibration {self.calibration_fraction}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise DeployError(f"split seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise DeployError(f"--limit must be a positive integer, got {self.limit!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def indices(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Indices into ``labels`` of each part (images beyond ``limit`` in none)."""
        pool = np.arange(len(labels))
        if self.limit is not None and self.limit < len(labels):
            pool = np.sort(np.random.default_rng(self.seed).permutation(len(labels))[: self.limit])
        rng = np.random.default_rng(self.seed)
        parts: dict[str, list[int]] = {"train": [], "val": [], "calibration": []}
        for label in np.unique(labels[pool]):
            members = rng.permutation(pool[labels[pool] == label])
            n_val = int(round(len(members) * self.val_fraction))
            n_cal = int(round(len(members) * self.calibration_fraction))
            parts["val"] += members[:n_val].tolist()
            parts["calibration"] += members[n_val : n_val + n_cal].tolist()
            parts["train"] += members[n_val + n_cal :].tolist()
        return {name: np.sort(np.asarray(idx, np.int64)) for name, idx in parts.items()}

    def apply(self, images: ImageSet) -> dict[str, ImageSet]:
        return {name: images.subset(idx) for name, idx in self.indices(images.labels).items()}


class _BatchedDataset(torch.utils.data.Dataset, ABC):
    """Fills whole batches in one preallocated array (``__getitems__``), because
    stacking per-image tensors cost more than the augmentation itself on CPU."""

    def __init__(self, images: ImageSet, preprocessing: Preprocessing) -> None:
        self.images = images
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.images)

    @abstractmethod
    def _fill(self, index: int, out: np.ndarray) -> None:
        """Write image ``index``, preprocessed, into ``out`` (3, crop, crop)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        out = np.empty((3, self.preprocessing.crop, self.preprocessing.crop), np.float32)
        self._fill(index, out)
        return torch.from_numpy(out), int(self.images.labels[index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor] | LoadFailure:
        crop = self.preprocessing.crop
        batch = np.empty((len(indices), 3, crop, crop), np.float32)
        try:
            for slot, index in enumerate(indices):
                self._fill(index, batch[slot])
        except DeployError as error:
            if torch.utils.data.get_worker_info() is None:
                raise
            return LoadFailure(str(error))
        return torch.from_numpy(batch), torch.from_numpy(self.images.labels[indices])


@dataclass(frozen=True)
class LoadFailure:
    """A DeployError met inside a DataLoader worker, carried to the main process as a
    value: torch re-raises a worker's exception with the worker's traceback folded
    into its message, which would break the one-line error convention."""

    message: str


def _already_batched(batch):
    return batch


class _BatchLoader(torch.utils.data.DataLoader):
    """A DataLoader that turns a worker's :class:`LoadFailure` back into a DeployError."""

    def __iter__(self) -> Iterator:
        for batch in super().__iter__():
            if isinstance(batch, LoadFailure):
                raise DeployError(batch.message)
            yield batch


def batch_loader(dataset: _BatchedDataset, batch_size: int, **options) -> torch.utils.data.DataLoader:
    """A DataLoader over one of our datasets, whose batches come ready-made."""
    return _BatchLoader(dataset, batch_size=batch_size, collate_fn=_already_batched, **options)


MAX_DEFAULT_WORKERS = 4


def default_workers(images: ImageSet, processes_per_node: int = 1) -> int:
    """Loader worker processes for ``--workers`` left unset.

    The embedded digits are decoded from arrays in memory: workers would only add
    process start-up and inter-process copies, so 0. Files on disk need JPEG
    decoding and resizing that can overlap with the step, so up to 4 per training
    process, sharing this machine's cores with the other processes on the node.
    """
    if images.source == EMBEDDED_DIGITS:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cores // max(1, processes_per_node)))


def loader_options(workers: int, device: torch.device, prefetch_factor: int = 2) -> dict:
    """DataLoader options for ``workers`` processes feeding ``device``: workers that
    live across epochs (no re-spawn and re-pickling of the dataset each epoch), each
    ``prefetch_factor`` batches ahead, and page-locked batches for asynchronous copies
    to a GPU."""
    options: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options |= {"persistent_workers": True, "prefetch_factor": prefetch_factor}
    return options


class TrainingDataset(_BatchedDataset):
    """Training view: random crop, flip and PCA jitter per ``augmentation``."""

    def __init__(self, images: ImageSet, preprocessing: Preprocessing, augmentation: Augmentation, seed: int) -> None:
        super().__init__(images, preprocessing)
        self.augmentation = augmentation
        self.seed = seed
        # In shared memory, so that persistent loader workers (which hold a copy of
        # this dataset made when they started) see the epoch the trainer sets.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.jitter: PCAColourJitter | None = None
        if augmentation.pca_std > 0:
            sample = range(0, len(images), max(1, len(images) // 64))
            self.jitter = PCAColourJitter.fit([preprocessing.resized(images.image(i))[::8, ::8] for i in sample])

    @property
    def epoch(self) -> int:
        """Seeds the augmentation with (seed, epoch, index): each epoch sees new crops."""
        return int(self._epoch)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.fill_(value)

    def _fill(self, index: int, out: np.ndarray) -> None:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        pre, aug = self.preprocessing, self.augmentation
        pixels = pre.resized(self.images.image(index))
        if aug.random_crop:
            top = int(rng.integers(0, pixels.shape[0] - pre.crop + 1))
            left = int(rng.integers(0, pixels.shape[1] - pre.crop + 1))
        else:
            top, left = (pixels.shape[0] - pre.crop) // 2, (pixels.shape[1] - pre.crop) // 2
        pixels = pixels[top : top + pre.crop, left : left + pre.crop]
        if aug.horizontal_flip and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        shift = self.jitter.offset(rng, aug.pca_std) if self.jitter is not None else None
        pre.normalise(pixels, out, shift)


class EvalDataset(_BatchedDataset):
    """Evaluation view: the deterministic :class:`Preprocessing` transform."""

    def _fill(self, index: int, out: np.ndarray) -> None:
        self.preprocessing(self.images.image(index), out)


def preprocess_all(images: ImageSet, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Every image through the evaluation transform: (N,3,H,W) float32 and labels."""
    batch = np.empty((len(images), 3, preprocessing.crop, preprocessing.crop), np.float32)
    for index in range(len(images)):
        preprocessing(images.image(index), batch[index])
    return batch, images.labels.copy()


def fit_normalisation(images: ImageSet, preprocessing: Preprocessing, sample: int = 128) -> Preprocessing:
    """Per-channel mean/std of the training images' pixels, measured through
    ``preprocessing``. Sums are accumulated image by image because the resized
    images of a real folder differ in shape (no stacking)."""
    step = max(1, len(images) // sample)
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for i in range(0, len(images), step):
        pixels = preprocessing.resized(images.image(i)).reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.maximum(np.sqrt(np.maximum(total_sq / count - mean**2, 0.0)), 1e-3)
    return Preprocessing(
        preprocessing.resize,
        preprocessing.crop,
        tuple(round(float(v), 6) for v in mean),
        tuple(round(float(v), 6) for v in std),
        preprocessing.max_aspect,
    )


def held_out_images(
    data_source: str, split: Split, preprocessing: Preprocessing, part: str = "val", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The preprocessed ``part`` ("val" or "calibration") of the split a checkpoint was
    trained with: images the model never saw. Raises DeployError if the data is gone."""
    images = split.apply(load_images(data_source))[part]
    if limit is not None:
        images = images.subset(range(min(limit, len(images))))
    return preprocess_all(images, preprocessing)
