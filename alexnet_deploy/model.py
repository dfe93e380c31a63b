"""AlexNet as in Krizhevsky, Sutskever & Hinton (2012), Figure 2 and Section 3.

Layer table at 227x227x3 input (``groups=2`` reproduces the paper's two-GPU split)::

    layer   kernel       stride pad groups  output
    conv1   96 @ 11x11   4      0   1       96 x 55 x 55  -> ReLU -> LRN -> maxpool 3/2 -> 27
    conv2   256 @ 5x5    1      2   g       256 x 27 x 27 -> ReLU -> LRN -> maxpool 3/2 -> 13
    conv3   384 @ 3x3    1      1   1       384 x 13 x 13 -> ReLU
    conv4   384 @ 3x3    1      1   g       384 x 13 x 13 -> ReLU
    conv5   256 @ 3x3    1      1   g       256 x 13 x 13 -> ReLU -> maxpool 3/2 -> 6
    fc6     9216 -> 4096 (dropout 0.5 before) -> ReLU
    fc7     4096 -> 4096 (dropout 0.5 before) -> ReLU
    fc8     4096 -> classes (logits; softmax belongs to the loss / output head)

Parameters at 1000 classes: 60,965,224 with ``groups=2`` (the default, as in the
paper), 62,378,344 with ``groups=1``.

``variant="torchvision"`` is torchvision's ``alexnet`` instead (Krizhevsky 2014, "One
weird trick for parallelizing convolutional neural networks"), at 224x224x3::

    layer   kernel       stride pad groups  output
    conv1   64 @ 11x11   4      2   1       64 x 55 x 55  -> ReLU -> maxpool 3/2 -> 27
    conv2   192 @ 5x5    1      2   1       192 x 27 x 27 -> ReLU -> maxpool 3/2 -> 13
    conv3   384 @ 3x3    1      1   1       384 x 13 x 13 -> ReLU
    conv4   256 @ 3x3    1      1   1       256 x 13 x 13 -> ReLU
    conv5   256 @ 3x3    1      1   1       256 x 13 x 13 -> ReLU -> maxpool 3/2 -> 6
    avgpool adaptive average pool to 6 x 6 (the identity at 223-250 px, the sizes allowed)
    fc6-fc8 as above

No LRN, no groups: 61,100,840 parameters at 1000 classes. Its state-dict names are
ours (``features.conv1.weight`` ...); ``pretrained`` maps torchvision's
(``features.0.weight`` ...) onto them.

Initialisation deviates from the paper on purpose: the paper's N(0, 0.01) weights
with bias 1 make a from-scratch run crawl for many epochs; Kaiming-normal weights
(He et al. 2015) train the same architecture in a few epochs on small data.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import cast

import torch
from torch import nn

from .choices import Variant
from .lrn import LocalResponseNorm, LRNParams

# Upper bounds for configs read from files: a crafted checkpoint must fail fast, not
# after allocating gigabytes. 100k classes (ImageNet-21k has 21,841) is a 1.6 GB fc8.
MAX_CLASSES = 100_000
MAX_INPUT_SIZE = 1024
MAX_LRN_SIZE = 64

PAPER, TORCHVISION = Variant.PAPER.value, Variant.TORCHVISION.value
VARIANTS = Variant.values()
# conv1 channels ... conv5 channels, and conv1's padding, per variant
_CHANNELS = {PAPER: (96, 256, 384, 384, 256), TORCHVISION: (64, 192, 384, 256, 256)}
_CONV1_PADDING = {PAPER: 0, TORCHVISION: 2}
POOLED_SIZE = 6  # torchvision's adaptive average pool output, and pool5's at 224/227 px
TORCHVISION_INPUT_SIZE = 224


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class AlexNetConfig:
    num_classes: int = 1000
    groups: int = 2
    width: float = 1.0  # channel multiplier, < 1 only to make tests fast
    dropout: float = 0.5
    input_size: int = 227
    lrn: LRNParams = field(default_factory=LRNParams)  # unused by the torchvision variant
    variant: str = PAPER

    def __post_init__(self) -> None:
        # read back from checkpoints: a bool is an int to Python but never a count here,
        # and a string must not reach a comparison ("'<' not supported")
        for name in ("groups", "num_classes"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("width", "dropout"):
            if not _is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if isinstance(self.variant, Variant):  # kept as a plain string: checkpoints hold plain values
            object.__setattr__(self, "variant", self.variant.value)
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.groups not in (1, 2):
            raise ValueError(f"groups must be 1 or 2, got {self.groups}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not 0 < self.width <= 1:
            raise ValueError(f"width must be in (0, 1], got {self.width}")
        if self.num_classes > MAX_CLASSES:
            raise ValueError(f"num_classes must be an integer of at most {MAX_CLASSES:,}, got {self.num_classes}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not _is_int(self.input_size) or not 1 <= feature_map_size(self.input_size, self.variant) <= (
            feature_map_size(MAX_INPUT_SIZE, self.variant)
        ):
            raise ValueError(f"input_size must be an integer from 67 to {MAX_INPUT_SIZE}, got {self.input_size!r}")
        lrn = self.lrn
        if not _is_int(lrn.size) or not 1 <= lrn.size <= MAX_LRN_SIZE:
            raise ValueError(f"LRN size must be an integer from 1 to {MAX_LRN_SIZE}, got {lrn.size!r}")
        if not all(_is_number(v) for v in (lrn.alpha, lrn.beta, lrn.bias)):
            raise ValueError(f"LRN alpha, beta and bias must be numbers, got {lrn}")
        if not (
            math.isfinite(lrn.alpha)
            and lrn.alpha >= 0
            and math.isfinite(lrn.beta)
            and math.isfinite(lrn.bias)
            and lrn.bias > 0
        ):
            raise ValueError(f"LRN needs finite alpha >= 0, finite beta and bias > 0, got {lrn}")
        if self.variant == TORCHVISION and self.groups != 1:
            raise ValueError(
                f"the torchvision variant has no grouped convolutions: groups must be 1, got {self.groups}"
            )
        if self.variant == TORCHVISION and feature_map_size(self.input_size, TORCHVISION) != POOLED_SIZE:
            # its adaptive pool is then the identity, which every runtime runs (an AveragePool 1x1/1)
            raise ValueError(
                f"the torchvision variant takes inputs of 223 to 250 px (pool5 {POOLED_SIZE}x{POOLED_SIZE}), "
                f"got input_size {self.input_size}"
            )

    def channels(self, paper_channels: int) -> int:
        """Scale a paper channel count by ``width``, kept even so groups=2 divides it."""
        return max(2, 2 * round(paper_channels * self.width / 2))

    @property
    def has_lrn(self) -> bool:
        """Whether the network normalises after conv1 and conv2 (the paper's does)."""
        return self.variant == PAPER

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AlexNetConfig:
        data = dict(data)
        data["lrn"] = LRNParams(**data.get("lrn", {}))
        return cls(**data)


def feature_map_size(input_size: int, variant: str = PAPER) -> int:
    """Spatial size after pool5, by the (n - k + 2p) / s + 1 rule."""
    size = (input_size - 11 + 2 * _CONV1_PADDING[variant]) // 4 + 1  # conv1
    for _ in range(3):  # pool1, pool2, pool5 (conv2-5 keep the size)
        size = (size - 3) // 2 + 1
    return size


def expected_shapes(config: AlexNetConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every state-dict entry of ``AlexNet(config)``, found on the meta
    device, so no memory is allocated (a crafted config cannot blow memory up here)."""
    with torch.device("meta"):
        model = AlexNet(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


class AlexNet(nn.Module):
    def __init__(self, config: AlexNetConfig = AlexNetConfig()) -> None:
        super().__init__()
        self.config = config
        g = config.groups
        c1, c2, c3, c4, c5 = (config.channels(n) for n in _CHANNELS[config.variant])
        f = config.channels(4096)
        # LRN after conv1's and conv2's ReLU in the paper's network; torchvision's has none
        norm1, norm2 = (
            ([("norm1", LocalResponseNorm(config.lrn))], [("norm2", LocalResponseNorm(config.lrn))])
            if config.has_lrn
            else ([], [])
        )
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=_CONV1_PADDING[config.variant])),
            ("relu1", nn.ReLU(inplace=True)),
            *norm1,
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv2", nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=g)),
            ("relu2", nn.ReLU(inplace=True)),
            *norm2,
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv3", nn.Conv2d(c2, c3, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(c3, c4, kernel_size=3, padding=1, groups=g)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(c4, c5, kernel_size=3, padding=1, groups=g)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),
        ]
        if config.variant == TORCHVISION:
            layers.append(("avgpool", nn.AdaptiveAvgPool2d(POOLED_SIZE)))
        self.features = nn.Sequential(OrderedDict(layers))
        spatial = feature_map_size(config.input_size, config.variant)
        self.classifier = nn.Sequential(
            OrderedDict(
                drop6=nn.Dropout(config.dropout),
                fc6=nn.Linear(c5 * spatial * spatial, f),
                relu6=nn.ReLU(inplace=True),
                drop7=nn.Dropout(config.dropout),
                fc7=nn.Linear(f, f),
                relu7=nn.ReLU(inplace=True),
                fc8=nn.Linear(f, config.num_classes),
            )
        )
        self._initialise()

    @property
    def conv1(self) -> nn.Conv2d:
        """The first convolution: its kernels are the paper's Figure 3 (``info --filters``)."""
        return cast(nn.Conv2d, self.features.conv1)

    @property
    def fc8(self) -> nn.Linear:
        """The classifier's last layer, one output per class."""
        return cast(nn.Linear, self.classifier.fc8)

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.fc8.weight, std=0.01)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        return self.classifier(torch.flatten(features, 1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
