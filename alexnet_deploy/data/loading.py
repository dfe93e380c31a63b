"""The torch datasets and loaders training and evaluation batches come from: whole
batches filled in one array, worker counts and loader options per device."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DeployError
from .augmentation import Augmentation, PCAColourJitter
from .preprocessing import Preprocessing
from .sources import EMBEDDED_DIGITS, ImageSet


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

    def __iter__(self) -> Iterator:  # type: ignore[override]  # a generator over the base loader's iterator
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
    """Training view: random crop, flip and PCA jitter per ``augmentation`` (flips, when
    left unset, as ``images`` allow)."""

    def __init__(self, images: ImageSet, preprocessing: Preprocessing, augmentation: Augmentation, seed: int) -> None:
        super().__init__(images, preprocessing)
        self.augmentation = augmentation.for_data(images.mirror_safe)
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
