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
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DeployError

EMBEDDED_DIGITS = "digits"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, crop ``crop`` x ``crop``, scale to [0, 1],
    normalise by ``mean``/``std`` per RGB channel. Output: float32 CHW."""

    resize: int = 256
    crop: int = 227
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )

    def resized(self, image: Image.Image) -> np.ndarray:
        """Shorter side to ``resize`` (bilinear), as uint8 HWC."""
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


def _file_loader(path: Path):
    def load() -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise DeployError(f"cannot read image {path}: {error.__class__.__name__}") from None

    return load


def _check_image_header(path: Path) -> None:
    """Reject unreadable files up front (headers only, no decode), so a bad file is
    reported before training starts rather than from inside a data-loader worker."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for a damaged file
        raise DeployError(f"cannot read image {path}: {error.__class__.__name__}") from None


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
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DeployError(f"class folder {class_dir} has no images ({', '.join(IMAGE_SUFFIXES)})")
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
    stay held out however often training is re-run with other seeds.
    """

    val_fraction: float = 0.15
    calibration_fraction: float = 0.15
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def indices(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        parts: dict[str, list[int]] = {"train": [], "val": [], "calibration": []}
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            n_val = int(round(len(members) * self.val_fraction))
            n_cal = int(round(len(members) * self.calibration_fraction))
            parts["val"] += members[:n_val].tolist()
            parts["calibration"] += members[n_val : n_val + n_cal].tolist()
            parts["train"] += members[n_val + n_cal :].tolist()
        return {name: np.sort(np.asarray(idx, np.int64)) for name, idx in parts.items()}

    def apply(self, images: ImageSet) -> dict[str, ImageSet]:
        return {name: images.subset(idx) for name, idx in self.indices(images.labels).items()}


def limit_images(images: ImageSet, limit: int | None, seed: int = 0) -> ImageSet:
    """Keep at most ``limit`` images, drawn evenly across classes (for smoke runs)."""
    if limit is None or limit >= len(images):
        return images
    if limit < 1:
        raise DeployError(f"--limit must be positive, got {limit}")
    order = np.random.default_rng(seed).permutation(len(images))
    return images.subset(np.sort(order[:limit]))


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

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        crop = self.preprocessing.crop
        batch = np.empty((len(indices), 3, crop, crop), np.float32)
        for slot, index in enumerate(indices):
            self._fill(index, batch[slot])
        return torch.from_numpy(batch), torch.from_numpy(self.images.labels[indices])


def _already_batched(batch):
    return batch


def batch_loader(dataset: _BatchedDataset, batch_size: int, **options) -> torch.utils.data.DataLoader:
    """A DataLoader over one of our datasets, whose batches come ready-made."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=_already_batched, **options)


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
    """Per-channel mean/std of the training images, measured through ``preprocessing``."""
    step = max(1, len(images) // sample)
    pixels = np.stack([preprocessing.resized(images.image(i)) for i in range(0, len(images), step)])
    scaled = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    std = np.maximum(scaled.std(axis=0), 1e-3)
    return Preprocessing(
        preprocessing.resize,
        preprocessing.crop,
        tuple(round(float(v), 6) for v in scaled.mean(axis=0)),
        tuple(round(float(v), 6) for v in std),
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
