"""The paper's training augmentation (Section 4.1): random crops, flips, PCA colour jitter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """The paper's training augmentation (Section 4.1), each part switchable:
    random ``crop``-sized patches of the resized image, horizontal flips, and PCA
    colour jitter (alpha ~ N(0, ``pca_std``) along the RGB principal components).

    ``horizontal_flip`` None means "where the data allows": on for images whose class
    survives a mirror, off for the embedded digits (``ImageSet.mirror_safe``)."""

    random_crop: bool = True
    horizontal_flip: bool | None = None
    pca_std: float = 0.1  # 0 disables the colour jitter

    def for_data(self, mirror_safe: bool) -> Augmentation:
        """This augmentation with an unset ``horizontal_flip`` decided by the data."""
        return self if self.horizontal_flip is not None else replace(self, horizontal_flip=mirror_safe)


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
