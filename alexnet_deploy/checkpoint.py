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

from .data import Preprocessing, Split
from .errors import DeployError
from .files import atomic_output, sha256_file
from .lrn import CONVENTION
from .model import AlexNet, AlexNetConfig

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

    def build_model(self) -> AlexNet:
        """An AlexNet in eval mode carrying these weights; a mismatch is a DeployError."""
        model = AlexNet(self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0:2]
            raise DeployError(f"checkpoint does not match the AlexNet architecture {self.config}: {' '.join(first)}") from None
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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a foreign file
        raise DeployError(f"{path} is not an alexnet-deploy checkpoint ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DeployError(f"{path} is not an alexnet-deploy checkpoint (expected format {FORMAT!r})")
    try:
        checkpoint = Checkpoint(
            config=AlexNetConfig.from_dict(payload["config"]),
            state_dict=payload["state_dict"],
            classes=list(payload["classes"]),
            preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
            data_source=payload["data_source"],
            split=Split(**payload["split"]),
            metrics=dict(payload.get("metrics", {})),
            lrn_convention=payload["lrn_convention"],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DeployError(f"{path} is a damaged alexnet-deploy checkpoint: {error}") from None
    if checkpoint.lrn_convention != CONVENTION:
        raise DeployError(f"{path} uses LRN convention {checkpoint.lrn_convention!r}, this version uses {CONVENTION!r}")
    if len(checkpoint.classes) != checkpoint.config.num_classes:
        raise DeployError(f"{path} lists {len(checkpoint.classes)} classes but its model has {checkpoint.config.num_classes}")
    return checkpoint


def checkpoint_hash(path: Path) -> str:
    return sha256_file(Path(path))
