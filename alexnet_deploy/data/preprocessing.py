"""The one preprocessing definition every step uses (training, export validation,
calibration, evaluation, bench, predict, serving), its normalisation fitted on the
training split, and the held-out images later steps judge on."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
from PIL import Image

from ..errors import DeployError
from .sources import ImageSet, load_images
from .split import Split

MAX_RESIZE = 4096  # beyond this a crafted config allocates gigabytes per image
CHANNEL_ORDERS = ("RGB", "BGR")
# What a full-intensity pixel becomes before the mean is subtracted: 1 for models
# trained on [0, 1] images (ours, torchvision's), 255 for Caffe's, which kept bytes.
PIXEL_SCALES = (1.0, 255.0)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, crop ``crop`` x ``crop``, put the channels
    in ``channel_order``, scale pixels to [0, ``pixel_scale``], normalise by
    ``mean``/``std`` per channel (given in ``channel_order``, in pixel-scale units).
    Output: float32 CHW.

    The geometry is torchvision's ``Resize(resize)`` (PIL bilinear, which antialiases)
    then ``CenterCrop(crop)``, to the pixel: the longer side is ``int(resize * long /
    short)`` and the crop's offset half the margin rounded. ``ToTensor`` + ``Normalize``
    is the same arithmetic in another order (float32 rounding apart).

    Models trained here use RGB, [0, 1] and the training split's mean/std; the
    imported BVLC Caffe AlexNet uses BGR, [0, 255], the ImageNet mean and std 1
    (``alexnet_deploy.pretrained``). Files written before these two fields existed
    read back as RGB and 1, which is what they were.

    An image longer than ``max_aspect`` times its shorter side is first cropped to
    that aspect ratio around its centre, so a 1x4000 sliver is not resized into a
    256 x 1,024,000 array of which only a 227-pixel window is ever used.
    """

    resize: int = 256
    crop: int = 227
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_aspect: float = 4.0
    channel_order: str = "RGB"
    pixel_scale: float = 1.0

    def __post_init__(self) -> None:
        # checkpoints and ONNX metadata carry these values, so they are checked as input
        if not 1 <= self.crop <= self.resize <= MAX_RESIZE:
            raise DeployError(
                f"preprocessing needs 1 <= crop <= resize <= {MAX_RESIZE}, got crop {self.crop}, resize {self.resize}"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise DeployError(f"preprocessing {name} must be 3 finite numbers, got {values}")
        if not all(v > 0 for v in self.std):
            raise DeployError(f"preprocessing std must be positive, got {self.std}")
        if not 1 <= self.max_aspect <= 100:
            raise DeployError(f"preprocessing max_aspect must be in [1, 100], got {self.max_aspect}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise DeployError(
                f"preprocessing channel_order must be one of {CHANNEL_ORDERS}, got {self.channel_order!r}"
            )
        if self.pixel_scale not in PIXEL_SCALES:
            raise DeployError(f"preprocessing pixel_scale must be one of {PIXEL_SCALES}, got {self.pixel_scale!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """As ``to_dict`` wrote it. Read back from checkpoints and ONNX metadata, so each
        field's type is checked rather than coerced (``int("256")``, ``int(256.9)``)."""
        sizes, channels = (data["resize"], data["crop"]), (data["mean"], data["std"])
        max_aspect = data.get("max_aspect", cls.max_aspect)
        channel_order = data.get("channel_order", cls.channel_order)
        pixel_scale = data.get("pixel_scale", cls.pixel_scale)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
            raise TypeError(f"preprocessing resize and crop must be integers, got {sizes}")
        numbers = all(isinstance(v, (list, tuple)) and all(_real(x) for x in v) for v in channels)
        if not numbers or not _real(max_aspect) or not _real(pixel_scale):
            raise TypeError("preprocessing mean, std, max_aspect and pixel_scale must be numbers")
        if not isinstance(channel_order, str):
            raise TypeError(f"preprocessing channel_order must be a string, got {channel_order!r}")
        return cls(
            resize=sizes[0],
            crop=sizes[1],
            mean=_rgb(channels[0]),
            std=_rgb(channels[1]),
            max_aspect=float(max_aspect),
            channel_order=channel_order,
            pixel_scale=float(pixel_scale),
        )

    def resized(self, image: Image.Image) -> np.ndarray:
        """At most ``max_aspect``, then shorter side to ``resize`` (bilinear), as uint8 HWC."""
        width, height = image.size
        longest = math.ceil(min(width, height) * self.max_aspect)
        if max(width, height) > longest:
            left, top = max(0, (width - longest) // 2), max(0, (height - longest) // 2)
            image = image.crop((left, top, left + min(width, longest), top + min(height, longest)))
            width, height = image.size
        # torchvision's Resize(int) arithmetic: the longer side is truncated, not rounded
        short, long = sorted((width, height))
        longer = int(self.resize * long / short)
        size = (self.resize, longer) if width <= height else (longer, self.resize)
        return np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR))

    def normalise(
        self, pixels: np.ndarray, out: np.ndarray | None = None, shift: np.ndarray | None = None
    ) -> np.ndarray:
        """uint8 HWC RGB crop -> normalised float32 CHW in ``channel_order``, written
        into ``out`` if given.

        Done in place (cast on assignment, then one multiply and one subtract) because
        per-image temporaries made the data pipeline a visible share of a CPU
        training step. ``shift`` is an extra per-channel RGB offset in [0, 1] pixel
        units (the PCA colour jitter), added before normalisation.
        """
        if out is None:
            out = np.empty((3, *pixels.shape[:2]), np.float32)
        std = np.asarray(self.std, np.float32)
        offset = np.asarray(self.mean, np.float32) / std
        channels = pixels.transpose(2, 0, 1)
        if self.channel_order == "BGR":
            channels = channels[::-1]
        if shift is not None:
            shift = shift[::-1] if self.channel_order == "BGR" else shift
            offset = offset - shift.astype(np.float32) * self.pixel_scale / std
        out[...] = channels
        out *= (self.pixel_scale / (255.0 * std))[:, None, None]
        out -= offset[:, None, None]
        return out

    def __call__(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """Deterministic evaluation transform: centre crop, placed as torchvision's
        CenterCrop places it (half the margin, rounded half to even)."""
        pixels = self.resized(image)
        top = round((pixels.shape[0] - self.crop) / 2)
        left = round((pixels.shape[1] - self.crop) / 2)
        return self.normalise(pixels[top : top + self.crop, left : left + self.crop], out)


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
        _rgb(round(float(v), 6) for v in mean),
        _rgb(round(float(v), 6) for v in std),
        preprocessing.max_aspect,
    )


def held_out_images(
    data_source: str,
    split: Split,
    preprocessing: Preprocessing,
    part: str = "val",
    limit: int | None = None,
    classes: Sequence[str] | None = None,
    class_ids: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The preprocessed ``part`` ("val" or "calibration") of the split a checkpoint was
    trained with: images the model never saw. Raises DeployError if the data is gone,
    or holds other ``classes`` than the model's (see :func:`load_images`)."""
    images = split.apply(load_images(data_source, classes, class_ids))[part]
    if limit is not None:
        images = images.subset(range(min(limit, len(images))))
    return preprocess_all(images, preprocessing)


def _real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rgb(values: Iterable[float]) -> tuple[float, float, float]:
    """Per-channel values as floats; ``Preprocessing`` checks there are three."""
    return cast("tuple[float, float, float]", tuple(float(v) for v in values))
