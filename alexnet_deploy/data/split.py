"""The deterministic, stratified train/val/calibration split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DeployError

if TYPE_CHECKING:  # the split is also read by the light configs: no Pillow at import
    from .sources import ImageSet


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
        # a bool is an int to Python, never a fraction, seed or limit here
        if not all(_is_number(f) and 0 <= f < 1 for f in fractions) or sum(fractions) >= 1:
            raise DeployError(
                f"split fractions must be in [0, 1) and sum below 1, got val {self.val_fraction}, calibration {self.calibration_fraction}"
            )
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise DeployError(f"split seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.limit is not None and (not _is_int(self.limit) or self.limit < 1):
            raise DeployError(f"--limit must be a positive integer (the split's limit), got {self.limit!r}")

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
            n_val = round(len(members) * self.val_fraction)
            n_cal = round(len(members) * self.calibration_fraction)
            parts["val"] += members[:n_val].tolist()
            parts["calibration"] += members[n_val : n_val + n_cal].tolist()
            parts["train"] += members[n_val + n_cal :].tolist()
        return {name: np.sort(np.asarray(idx, np.int64)) for name, idx in parts.items()}

    def apply(self, images: ImageSet) -> dict[str, ImageSet]:
        return {name: images.subset(idx) for name, idx in self.indices(images.labels).items()}
