"""Import torchvision's AlexNet from its state dict (``alexnet-owt-7be5be79.pth``, or
``torch.save(model.state_dict(), ...)`` of ``torchvision.models.alexnet``), validated
first.

The file is read with ``torch.load(weights_only=True)``: tensors and plain containers
only, no code from the file runs. A whole pickled model (``torch.save(model)``) cannot
be read that way, so it is refused with that reason. Both of torch's formats are read:
the zip archive torch has written since 1.6, and the older single pickle stream the
published 2017 file uses.

The state dict must be torchvision's, entry by entry in its order: the names
``features.{0,3,6,8,10}`` and ``classifier.{1,4,6}`` (weight, bias), every shape the
``alexnet`` of the torchvision table in ``model.py`` has (fc8 may have any class count;
not 1000 needs ``--labels``). Anything else (a ResNet, a VGG, a layer of another width)
is refused in one line naming the first entry that differs.

Validation: our model against torchvision's forward pass written from its definition
with ``torch.nn.functional`` on the source tensors under their own names, at 224 px
through torchvision's preprocessing (``importing.finish_import``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from ..checkpoint import FORMAT as CHECKPOINT_FORMAT
from ..errors import DeployError
from ..files import check_output_paths, require_file, sha256_file
from ..model import POOLED_SIZE, TORCHVISION, TORCHVISION_INPUT_SIZE, AlexNetConfig, expected_shapes
from .importing import ImportResult, finish_import

# torchvision's module index -> our layer name, in the order its state dict lists them
TORCHVISION_LAYERS = (
    ("features.0", "features.conv1"),
    ("features.3", "features.conv2"),
    ("features.6", "features.conv3"),
    ("features.8", "features.conv4"),
    ("features.10", "features.conv5"),
    ("classifier.1", "classifier.fc6"),
    ("classifier.4", "classifier.fc7"),
    ("classifier.6", "classifier.fc8"),
)
STATE_DICT_SUFFIXES = (".pth", ".pt")
# A torchvision AlexNet state dict is 244 MB (233 MiB); far larger is not one, and is
# refused before torch.load spends time and memory on it.
MAX_STATE_DICT_BYTES = 1 << 30


def _source_keys() -> list[str]:
    return [f"{name}.{kind}" for name, _ in TORCHVISION_LAYERS for kind in ("weight", "bias")]


def _read(path: Path) -> object:
    source = str(path)
    if path.stat().st_size > MAX_STATE_DICT_BYTES:
        raise DeployError(f"{source} is {path.stat().st_size / 2**30:.1f} GiB, far more than an AlexNet state dict")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error) or "global" in str(error):
            raise DeployError(
                f"{source} is a whole pickled model or holds objects other than tensors, which only loading it "
                "with code execution could read: save torchvision's weights with "
                "torch.save(model.state_dict(), PATH) and import that"
            ) from None
        raise DeployError(f"{source} is not a readable state dict (UnpicklingError; truncated?)") from None
    except Exception as error:  # noqa: BLE001 -- torch raises many types for a foreign or truncated file
        raise DeployError(f"{source} is not a readable state dict ({error.__class__.__name__}; truncated?)") from None


def match_state_dict(loaded: object, source: str) -> tuple[dict[str, torch.Tensor], int]:
    """torchvision's entries renamed to ours, and the class count; refuses anything else."""
    if isinstance(loaded, dict) and loaded.get("format") == CHECKPOINT_FORMAT:
        raise DeployError(f"{source} is an alexnet-deploy checkpoint already: use it as --checkpoint, no import needed")
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise DeployError(f"{source} is not a state dict (a dictionary of tensors), so not torchvision's AlexNet")
    keys, expected_keys = list(loaded), _source_keys()
    if keys != expected_keys:
        missing = [k for k in expected_keys if k not in loaded]
        unexpected = [k for k in keys if k not in expected_keys]
        detail = (
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            if missing or unexpected
            else f"its entries are in another order ({keys[:4]}...)"
        )
        raise DeployError(
            f"{source} is not torchvision's AlexNet state dict: {len(keys)} entries where it has "
            f"{len(expected_keys)}; {detail}"
        )
    fc8 = loaded["classifier.6.weight"]
    classes = int(fc8.shape[0]) if fc8.ndim == 2 else 0
    if classes < 2:
        raise DeployError(f"{source}: classifier.6.weight has shape {tuple(fc8.shape)}, not (classes, 4096)")
    config = AlexNetConfig(num_classes=classes, groups=1, input_size=TORCHVISION_INPUT_SIZE, variant=TORCHVISION)
    shapes = expected_shapes(config)
    state_dict: dict[str, torch.Tensor] = {}
    for (theirs, ours), kind in ((layer, kind) for layer in TORCHVISION_LAYERS for kind in ("weight", "bias")):
        tensor = loaded[f"{theirs}.{kind}"]
        if tuple(tensor.shape) != shapes[f"{ours}.{kind}"]:
            raise DeployError(
                f"{source} is not torchvision's AlexNet: {theirs}.{kind} ({ours.split('.')[1]}) has shape "
                f"{tuple(tensor.shape)}, expected {shapes[f'{ours}.{kind}']}"
            )
        if not tensor.is_floating_point():
            raise DeployError(f"{source}: {theirs}.{kind} is {tensor.dtype}, not floating point (a quantized model?)")
        state_dict[f"{ours}.{kind}"] = tensor.detach().to(torch.float32).clone()
    return state_dict, classes


@torch.no_grad()
def torchvision_forward(weights: dict[str, torch.Tensor], images: np.ndarray) -> np.ndarray:
    """torchvision's ``AlexNet.forward`` in eval mode, written out from its definition
    on its own state-dict names: the reference an imported state dict is checked against."""
    x = torch.from_numpy(images)
    for index, stride, padding, pool in ((0, 4, 2, True), (3, 1, 2, True), (6, 1, 1, False), (8, 1, 1, False)):
        x = functional.conv2d(
            x, weights[f"features.{index}.weight"], weights[f"features.{index}.bias"], stride, padding
        )
        x = functional.relu(x)
        x = functional.max_pool2d(x, 3, 2) if pool else x
    x = functional.relu(functional.conv2d(x, weights["features.10.weight"], weights["features.10.bias"], 1, 1))
    x = functional.adaptive_avg_pool2d(functional.max_pool2d(x, 3, 2), POOLED_SIZE)
    x = torch.flatten(x, 1)
    x = functional.relu(functional.linear(x, weights["classifier.1.weight"], weights["classifier.1.bias"]))
    x = functional.relu(functional.linear(x, weights["classifier.4.weight"], weights["classifier.4.bias"]))
    return functional.linear(x, weights["classifier.6.weight"], weights["classifier.6.bias"]).numpy()


def import_state_dict(
    path: Path, output: Path, labels_path: Path | None = None, data: Path | None = None
) -> ImportResult:
    """torchvision's AlexNet state dict at ``path`` as our checkpoint at ``output``."""
    path, output = Path(path), Path(output)
    check_output_paths({"MODEL": path, "--labels": labels_path}, {"--output": output}, {"--data": data})
    require_file(path, "state dict", "torchvision's alexnet-owt-7be5be79.pth (docs/pretrained.md)")
    source = str(path)
    loaded = _read(path)
    state_dict, classes = match_state_dict(loaded, source)
    assert isinstance(loaded, dict)  # match_state_dict checked it
    source_weights = {key: tensor.to(torch.float32) for key, tensor in loaded.items()}
    config = AlexNetConfig(num_classes=classes, groups=1, input_size=TORCHVISION_INPUT_SIZE, variant=TORCHVISION)
    origin = {
        "format": "torchvision state_dict",
        "file": path.name,
        "sha256": sha256_file(path),
        "producer": "torchvision.models.alexnet",
        "opset": None,
        "input": "224 x 224 RGB, torchvision's ImageNet normalisation",
        "dropped": [],
        "layers": [f"{ours.split('.')[1]} <- {theirs}" for theirs, ours in TORCHVISION_LAYERS],
    }
    return finish_import(
        config,
        state_dict,
        output,
        labels_path,
        data,
        origin,
        lambda images: torchvision_forward(source_weights, images),
        f"torchvision's forward pass on {source}",
    )
