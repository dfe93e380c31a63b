"""The checkpoint our training writes and every later step reads.

One ``torch.save`` file holding plain tensors and plain Python values (so it loads
with ``weights_only=True``): the state dict plus everything later steps must not
guess — architecture config, class names, preprocessing, the data split that keeps
calibration/val images held out, the LRN convention and the validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data.preprocessing import Preprocessing
from .data.split import Split
from .errors import DeployError
from .files import atomic_output, sha256_file
from .lrn import CONVENTION
from .model import AlexNet, AlexNetConfig, expected_shapes

FORMAT = "alexnet-deploy/checkpoint/1"


@dataclass
class Checkpoint:
    config: AlexNetConfig
    state_dict: dict[str, torch.Tensor]
    classes: list[str]
    preprocessing: Preprocessing
    data_source: str
    split: Split = field(default_factory=Split)
    metrics: dict = field(default_factory=dict)  # last epoch's val top-1/top-5 etc.
    lrn_convention: str = CONVENTION

    def check_weights(self) -> None:
        """Names and shapes against the architecture (on the meta device, so before any
        allocation), then finiteness: a NaN model must never reach export."""
        expected = expected_shapes(self.config)
        if not isinstance(self.state_dict, dict) or not all(
            isinstance(v, torch.Tensor) for v in self.state_dict.values()
        ):
            raise DeployError("checkpoint weights are not a dictionary of tensors")
        missing, unexpected = (
            sorted(expected.keys() - self.state_dict.keys()),
            sorted(self.state_dict.keys() - expected.keys()),
        )
        if missing or unexpected:
            raise DeployError(
                f"checkpoint does not match the AlexNet architecture {self.config}: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for name, shape in expected.items():
            if tuple(self.state_dict[name].shape) != shape:
                raise DeployError(
                    f"checkpoint does not match the AlexNet architecture {self.config}: "
                    f"{name} has shape {tuple(self.state_dict[name].shape)}, expected {shape}"
                )
        for name, tensor in self.state_dict.items():
            if not bool(torch.isfinite(tensor).all()):
                raise DeployError(f"checkpoint weights {name} hold NaN or infinite values (training diverged?)")

    def build_model(self) -> AlexNet:
        """An AlexNet in eval mode carrying these weights; a mismatch is a DeployError."""
        self.check_weights()
        model = AlexNet(self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0:2]
            raise DeployError(
                f"checkpoint does not match the AlexNet architecture {self.config}: {' '.join(first)}"
            ) from None
        return model.eval()

    def to_payload(self) -> dict:
        return {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "state_dict": self.state_dict,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "data_source": self.data_source,
            "split": self.split.to_dict(),
            "metrics": self.metrics,
            "lrn_convention": self.lrn_convention,
        }


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    with atomic_output(Path(path)) as tmp:
        torch.save(checkpoint.to_payload(), tmp)


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"checkpoint {path} not found (train one with `alexnet-deploy train`)")
    return checkpoint_from_payload(load_payload(path, "an alexnet-deploy checkpoint"), path)


def load_payload(path: Path, what: str) -> object:
    """``torch.load`` with ``weights_only=True`` (no code runs from the file); any
    failure to read it becomes one line saying ``path`` is not ``what``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch raises many types for a foreign or truncated file
        raise DeployError(f"{path} is not {what} ({error.__class__.__name__})") from None


def checkpoint_from_payload(payload: object, path: Path) -> Checkpoint:
    """The checkpoint a saved payload describes, every field checked; ``path`` names
    the file in messages."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DeployError(f"{path} is not an alexnet-deploy checkpoint (expected format {FORMAT!r})")
    try:
        checkpoint = Checkpoint(
            config=AlexNetConfig.from_dict(payload["config"]),
            state_dict=payload["state_dict"],
            classes=[str(name) for name in payload["classes"]],
            preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
            data_source=str(payload["data_source"]),
            split=Split(**payload["split"]),
            metrics=dict(payload.get("metrics", {})),
            lrn_convention=payload["lrn_convention"],
        )
    except (KeyError, TypeError, ValueError, AttributeError, DeployError) as error:
        raise DeployError(f"{path} is a damaged alexnet-deploy checkpoint: {error}") from None
    if checkpoint.lrn_convention != CONVENTION:
        raise DeployError(f"{path} uses LRN convention {checkpoint.lrn_convention!r}, this version uses {CONVENTION!r}")
    if len(checkpoint.classes) != checkpoint.config.num_classes:
        raise DeployError(
            f"{path} lists {len(checkpoint.classes)} classes but its model has {checkpoint.config.num_classes}"
        )
    if checkpoint.preprocessing.crop != checkpoint.config.input_size:
        raise DeployError(
            f"{path} crops images to {checkpoint.preprocessing.crop} but its model takes {checkpoint.config.input_size}"
        )
    return checkpoint


def checkpoint_hash(path: Path) -> str:
    return sha256_file(Path(path))
