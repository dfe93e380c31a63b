"""What every import shares: the preprocessing each source model was trained with, the
checkpoint an import writes (labels, ``--data`` folder, split, origin), and its
validation against the source model before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import Checkpoint, check_names_fit, save_checkpoint
from ..data.preprocessing import Preprocessing
from ..data.sources import NO_DATA, load_labelled_folder
from ..data.split import Split
from ..errors import DeployError
from ..model import TORCHVISION, AlexNetConfig
from .imagenet import read_labels

# The BVLC model's input: 227 x 227 crops of 256-pixel images, BGR, in 0-255, less
# the per-channel mean of Caffe's ILSVRC-2012 mean image (ilsvrc_2012_mean.npy
# averaged over its pixels), no division. We resize the shorter side to 256 and crop
# the centre, as for every model here; Caffe itself warped images to 256 x 256
# (docs/pretrained.md weighs the difference).
CAFFE_PREPROCESSING = Preprocessing(
    resize=256,
    crop=227,
    mean=(104.00698793, 116.66876762, 122.67891434),
    std=(1.0, 1.0, 1.0),
    channel_order="BGR",
    pixel_scale=255.0,
)
# torchvision's ImageNet models: Resize(256) (bilinear, antialiased), CenterCrop(224),
# ToTensor (RGB in [0, 1]), Normalize with the ImageNet mean and std (torchvision's
# ``AlexNet_Weights.IMAGENET1K_V1.transforms``); ``Preprocessing`` computes the same
# geometry as torchvision (tests/test_torchvision.py holds the two side by side).
TORCHVISION_PREPROCESSING = Preprocessing(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# An imported model is never trained: its --data folder is only judged and
# calibrated on, so it is split half and half (Split wants the two to sum below 1;
# the 5% left over is unused).
IMPORT_SPLIT = Split(val_fraction=0.5, calibration_fraction=0.45)
# The torch model must reproduce the source model to this relative difference
# (max |Δ| / max |reference|) on the validation inputs, float32 both sides.
IMPORT_TOLERANCE = 1e-5
VALIDATION_IMAGES = 4


@dataclass
class ImportResult:
    checkpoint: Path
    source_sha256: str
    classes: int
    labels: str  # where the class names came from
    data: str  # the --data folder, or "none"
    validation: str
    dropped: list[str]
    variant: str = "paper"


def source_preprocessing(config: AlexNetConfig) -> Preprocessing:
    """What the source model was trained on: torchvision's transforms, or Caffe's."""
    return TORCHVISION_PREPROCESSING if config.variant == TORCHVISION else CAFFE_PREPROCESSING


def validation_inputs(preprocessing: Preprocessing) -> np.ndarray:
    """Random-pixel crops through ``preprocessing``, so they have the scale the source
    model's weights expect: (VALIDATION_IMAGES, 3, crop, crop) float32."""
    size = preprocessing.crop
    pixels = np.random.default_rng(0).integers(0, 256, (VALIDATION_IMAGES, size, size, 3), dtype=np.uint8)
    return np.stack([preprocessing.normalise(image) for image in pixels])


def finish_import(
    config: AlexNetConfig,
    state_dict: dict[str, torch.Tensor],
    output: Path,
    labels_path: Path | None,
    data: Path | None,
    origin: dict,
    reference: Callable[[np.ndarray], np.ndarray],
    against: str,
) -> ImportResult:
    """Label, check and validate the imported weights, then write the checkpoint.

    ``reference`` computes the source model's logits (onnxruntime on the source graph,
    or torchvision's forward pass on the source state dict); ours must equal them to
    :data:`IMPORT_TOLERANCE` with 100% top-1 agreement, or nothing is written. ``origin``
    gets the labels' source and the ``--data`` folder is checked to hold these classes."""
    labels = read_labels(labels_path, config.num_classes)
    check_names_fit([*labels.names, *labels.ids], f"--labels {labels.source}")  # what every loader would refuse
    data_source = NO_DATA
    if data is not None:
        data_source = load_labelled_folder(Path(data), labels.names, labels.ids).source
    preprocessing = source_preprocessing(config)
    checkpoint = Checkpoint(
        config=config,
        state_dict=state_dict,
        classes=labels.names,
        preprocessing=preprocessing,
        data_source=data_source,
        split=IMPORT_SPLIT,
        class_ids=labels.ids,
        origin=origin | {"labels": labels.source},
    )
    model = checkpoint.build_model()
    images = validation_inputs(preprocessing)
    expected = reference(images)
    with torch.no_grad():
        ours = model(torch.from_numpy(images)).numpy()
    scale = float(np.abs(expected).max()) or 1.0
    relative = float(np.abs(ours - expected).max()) / scale
    agreement = float(np.mean(ours.argmax(1) == expected.argmax(1)))
    summary = (
        f"{len(images)} random-pixel images: max relative |Δ logits| {relative:.1e} "
        f"(tolerance {IMPORT_TOLERANCE:.0e}), top-1 agreement {agreement:.0%}"
    )
    if not relative <= IMPORT_TOLERANCE or agreement < 1.0:
        raise DeployError(f"import validation failed against {against}: {summary}; nothing written")
    checkpoint.metrics = {"import_validation": summary}
    save_checkpoint(checkpoint, output)
    dropped = list(origin.get("dropped", []))
    return ImportResult(
        output, origin["sha256"], len(labels.names), labels.source, data_source, summary, dropped, config.variant
    )
