"""What ``alexnet-deploy info`` shows: AlexNet's layer table, measured from the model.

Every number comes from running the model once on a 1x3x227x227 float32 input with
forward hooks, so the table stays true when ``model.py`` changes: output shapes are
the tensors the layers really produce, parameters are the layers' own tensors, and
multiply-accumulates (MACs) follow from the module attributes and those shapes::

    conv: out_C * out_H * out_W * (in_C / groups) * kH * kW
    fc:   in_features * out_features

MACs count conv and fc only, the usual convention: pooling compares, ReLU clamps
and LRN's handful of operations per value are negligible next to them. ReLU and
dropout get no row of their own: ReLU runs in place (no new activation, no
parameters) and dropout is the identity at inference.

Pure functions and dataclasses; the CLI renders them.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .errors import DeployError
from .files import write_text_atomic
from .lrn import LocalResponseNorm
from .model import PAPER, TORCHVISION, TORCHVISION_INPUT_SIZE, VARIANTS, AlexNet, AlexNetConfig

LAYER_TYPES: dict[type[nn.Module], str] = {
    nn.Conv2d: "conv",
    LocalResponseNorm: "lrn",
    nn.MaxPool2d: "maxpool",
    nn.AdaptiveAvgPool2d: "avgpool",  # torchvision's variant: the identity at its input sizes
    nn.Linear: "fc",
}
WITHOUT_ROW = (nn.ReLU, nn.Dropout)
# ImageNet-21k has 21,841 classes; at 100,000 the last FC layer alone is 1.6 GB of float32
MAX_CLASSES = 100_000
COLUMNS = ("layer", "type", "kernel", "stride", "pad", "groups", "output C×H×W", "params", "MACs", "act. bytes")


@dataclass(frozen=True)
class LayerRow:
    """One layer at batch 1. ``kernel`` is (kH, kW) for conv/pool and (size,) for
    LRN's channel window; kernel, stride, padding and groups are None where a layer
    type has no such thing."""

    name: str
    type: str
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | None
    groups: int | None
    output: tuple[int, ...]  # C x H x W, or (features,) after the flatten
    parameters: int
    macs: int
    activation_bytes: int


@dataclass(frozen=True)
class LayerTable:
    input_shape: tuple[int, ...]
    rows: list[LayerRow]

    @property
    def parameters(self) -> int:
        return sum(row.parameters for row in self.rows)

    @property
    def macs(self) -> int:
        return sum(row.macs for row in self.rows)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def activation_bytes(self) -> int:
        return sum(row.activation_bytes for row in self.rows)

    def row(self, name: str) -> LayerRow:
        return next(row for row in self.rows if row.name == name)

    def display_rows(self) -> list[tuple[str, ...]]:
        """Text cells under :data:`COLUMNS`, one row per layer and a total row."""
        rows: list[tuple[str, ...]] = [
            (
                row.name,
                row.type,
                _dims(row.kernel) + (" ch" if row.type == "lrn" else ""),
                _step(row.stride),
                _step(row.padding),
                "" if row.groups is None else str(row.groups),
                _dims(row.output),
                f"{row.parameters:,}",
                f"{row.macs:,}",
                f"{row.activation_bytes:,}",
            )
            for row in self.rows
        ]
        totals = (f"{self.parameters:,}", f"{self.macs:,}", f"{self.activation_bytes:,}")
        return [*rows, ("total", "", "", "", "", "", "", *totals)]

    def to_dict(self) -> dict:
        return {
            "input_shape": list(self.input_shape),
            "layers": [asdict(row) for row in self.rows],
            "totals": {
                "parameters": self.parameters,
                "macs": self.macs,
                "gmacs": self.gmacs,
                "activation_bytes": self.activation_bytes,
            },
        }


def _dims(values: tuple[int, ...] | None) -> str:
    """(96, 55, 55) -> "96×55×55"."""
    return "" if values is None else "×".join(str(v) for v in values)


def _step(values: tuple[int, ...] | None) -> str:
    """Stride or padding: (4, 4) -> "4", as the paper's table writes it."""
    return str(values[0]) if values is not None and len(set(values)) == 1 else _dims(values)


def _pair(value: int | str | tuple[int, ...]) -> tuple[int, ...]:
    # MaxPool2d keeps ints where Conv2d keeps pairs; AlexNet pads by numbers, never "same"
    if isinstance(value, str):
        raise ValueError(f"padding {value!r} is not a number of pixels")
    return tuple(value) if isinstance(value, tuple) else (value, value)


def _layer_row(name: str, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> LayerRow:
    out_shape = tuple(output.shape[1:])
    kernel = stride = padding = groups = None
    macs = 0
    if isinstance(module, nn.Conv2d):
        kernel, stride, padding, groups = module.kernel_size, module.stride, _pair(module.padding), module.groups
        macs = output[0].numel() * (module.in_channels // module.groups) * kernel[0] * kernel[1]
    elif isinstance(module, nn.Linear):
        macs = module.in_features * module.out_features
    elif isinstance(module, nn.MaxPool2d):
        kernel, stride, padding = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
    elif isinstance(module, LocalResponseNorm):
        kernel = (module.params.size,)
    elif isinstance(module, nn.AdaptiveAvgPool2d):  # the windows it averages over, at this input
        # the window it averages over at this input; the variant allows only inputs where it is 1x1/1
        kernel = stride = tuple(i // o for i, o in zip(inputs.shape[2:], output.shape[2:], strict=True))
        padding = (0, 0)
    return LayerRow(
        name=name,
        type=LAYER_TYPES.get(type(module), type(module).__name__.lower()),
        kernel=kernel,
        stride=stride,
        padding=padding,
        groups=groups,
        output=out_shape,
        parameters=sum(p.numel() for p in module.parameters(recurse=False)),
        macs=macs,
        activation_bytes=output[0].numel() * output.element_size(),
    )


@torch.no_grad()
def layer_table(model: AlexNet) -> LayerTable:
    """Run ``model`` once at batch 1 and describe every layer that has a row."""
    input_size = model.config.input_size
    rows: list[LayerRow] = []
    handles = []
    for block in (model.features, model.classifier):
        for name, module in block.named_children():
            if isinstance(module, WITHOUT_ROW):
                continue
            handles.append(
                module.register_forward_hook(
                    lambda module, inputs, output, name=name: rows.append(_layer_row(name, module, inputs[0], output))
                )
            )
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, 3, input_size, input_size, dtype=torch.float32))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return LayerTable(input_shape=(1, 3, input_size, input_size), rows=rows)


@dataclass(frozen=True)
class CheckpointSummary:
    """What a checkpoint says about itself, beyond its weights."""

    path: str
    classes: list[str]
    preprocessing: dict
    metrics: dict
    lrn_convention: str
    data_source: str
    split: dict
    origin: dict = field(default_factory=dict)  # an imported model's source (pretrained/)

    @classmethod
    def of(cls, checkpoint: Checkpoint, path: Path) -> CheckpointSummary:
        return cls(
            path=str(path),
            classes=list(checkpoint.classes),
            preprocessing=checkpoint.preprocessing.to_dict(),
            metrics=dict(checkpoint.metrics),
            lrn_convention=checkpoint.lrn_convention,
            data_source=checkpoint.data_source,
            split=checkpoint.split.to_dict(),
            origin=dict(checkpoint.origin),
        )

    def rows(self, max_classes: int = 10) -> list[tuple[str, str]]:
        """(field, text) pairs for a two-column display; long class lists are cut.
        Control characters (an ANSI escape in a class name) are shown escaped, never
        sent to the terminal."""
        return [(name, printable(text)) for name, text in self._rows(max_classes)]

    def _rows(self, max_classes: int) -> list[tuple[str, str]]:
        shown = ", ".join(self.classes[:max_classes]) + (", …" if len(self.classes) > max_classes else "")
        p = self.preprocessing
        metrics = ", ".join(f"{key} {_metric_text(key, value)}" for key, value in self.metrics.items())
        return [
            ("checkpoint", self.path),
            ("classes", f"{len(self.classes)}: {shown}"),
            (
                "preprocessing",
                f"resize {p['resize']}, centre crop {p['crop']}, {p['channel_order']} in [0, {p['pixel_scale']:g}], "
                f"mean {tuple(round(v, 4) for v in p['mean'])}, std {tuple(round(v, 4) for v in p['std'])}",
            ),
            ("val metrics", metrics or "none recorded"),
            ("LRN convention", self.lrn_convention),
            ("data source", self.data_source),
            ("split", ", ".join(f"{k} {v}" for k, v in self.split.items())),
            *self._origin_rows(),
        ]

    def _origin_rows(self) -> list[tuple[str, str]]:
        """Where an imported model came from; nothing for a model trained here."""
        o = self.origin
        if not o:
            return []
        return [
            (
                "imported from",
                f"{o.get('file')} ({o.get('format')}, {o.get('producer')}"
                + (f", opset {o['opset']})" if o.get("opset") is not None else ")"),
            ),
            ("source sha256", str(o.get("sha256"))),
            ("labels", str(o.get("labels"))),
            ("dropped", "; ".join(map(str, o.get("dropped", [])))),
        ]


def printable(text: str) -> str:
    """``text`` with every control or format character (ESC, CR, BEL, bidi overrides)
    written as a Python escape such as ``\\x1b``, so it cannot drive the terminal."""
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char)[0] == "C" else char for char in text
    )


def _metric_text(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2%}" if "top" in key else f"{value:.4g}"
    return str(value)


@dataclass
class ModelInfo:
    """The layer table of one AlexNet, and where its weights came from.

    ``model`` is kept (not serialised) so the conv1 filter picture can be drawn from
    the same weights; ``trained`` is False for a freshly initialised model.
    """

    config: AlexNetConfig
    table: LayerTable
    checkpoint: CheckpointSummary | None
    model: AlexNet = field(repr=False, compare=False)
    onnx: list[tuple[str, str]] = field(default_factory=list)  # --onnx: what its metadata says

    @property
    def trained(self) -> bool:
        return self.checkpoint is not None

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            **self.table.to_dict(),
            "checkpoint": asdict(self.checkpoint) if self.checkpoint is not None else None,
        } | ({"onnx": dict(self.onnx)} if self.onnx else {})


def onnx_rows(path: Path) -> list[tuple[str, str]]:
    """(field, text) pairs of one of our ONNX files' metadata: its precision, and for an
    INT8 file its target runtime, calibration and the layers a budget left out of INT8."""
    from .graph import load_verified
    from .metadata import export_metadata

    metadata = export_metadata(load_verified(Path(path)), str(path))
    rows = [("onnx", str(path)), ("precision", metadata.precision.value)]
    if metadata.target_runtime is not None:
        rows.append(("target runtime", metadata.target_runtime))
    calibration = metadata.calibration
    if calibration is not None:
        rows.append(("calibration", f"{calibration.method}, {calibration.images} images"))
        rows.append(("mixed", calibration.mixed_precision() or "none: every Conv/Gemm in INT8"))
    return [(name, printable(text)) for name, text in rows]


def inspect_model(
    checkpoint: Path | None = None, groups: int | None = None, classes: int | None = None, variant: str | None = None
) -> ModelInfo:
    """Describe the checkpoint's AlexNet, or a fresh one (defaults: 1000 classes, the
    paper's variant with groups 2; torchvision's at 224 px, groups 1).

    With a checkpoint, ``groups``, ``classes`` and ``variant`` may only restate its
    architecture: a contradiction is an error rather than silently ignored.
    """
    if groups is not None and groups not in (1, 2):
        raise DeployError(f"--groups must be 1 or 2, got {groups}")
    if classes is not None and not 2 <= classes <= MAX_CLASSES:
        raise DeployError(f"--classes must be in [2, {MAX_CLASSES:,}], got {classes}")
    if variant is not None and variant not in VARIANTS:
        raise DeployError(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if checkpoint is None:
        if variant == TORCHVISION and groups not in (None, 1):
            raise DeployError(f"--groups {groups}: the torchvision variant has no grouped convolutions")
        torchvision = variant == TORCHVISION
        config = AlexNetConfig(
            num_classes=1000 if classes is None else classes,
            groups=(1 if torchvision else 2) if groups is None else groups,
            input_size=TORCHVISION_INPUT_SIZE if torchvision else AlexNetConfig.input_size,
            variant=variant or PAPER,
        )
        model = AlexNet(config).eval()
        return ModelInfo(config=config, table=layer_table(model), checkpoint=None, model=model)

    loaded = load_checkpoint(checkpoint)
    restated = (
        ("--groups", groups, loaded.config.groups),
        ("--classes", classes, loaded.config.num_classes),
        ("--variant", variant, loaded.config.variant),
    )
    for option, given, actual in restated:
        if given is not None and given != actual:
            raise DeployError(
                f"{option} {given} contradicts checkpoint {checkpoint}, whose model has {actual}; leave it out"
            )
    model = loaded.build_model()
    return ModelInfo(
        config=loaded.config, table=layer_table(model), checkpoint=CheckpointSummary.of(loaded, checkpoint), model=model
    )


def write_info_json(info: ModelInfo, path: Path) -> None:
    write_text_atomic(Path(path), json.dumps(info.to_dict(), indent=2) + "\n")
