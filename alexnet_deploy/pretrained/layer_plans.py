"""The two AlexNets an imported graph is walked against, layer by layer (``matching``):
the paper's, as BVLC's Caffe model has it, and torchvision's ``alexnet``. A step is a
layer spec (:class:`Conv`, :class:`Pool`, :class:`Fc`) or the name of a parameterless
one ("Relu", "norm1"/"norm2" for LRN, "avgpool", "flatten")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    name: str
    channels: int
    kernel: int
    stride: int
    pad: int
    grouped: bool  # conv2/4/5: the paper's two-GPU split (groups 1 or 2, the same for all three)


@dataclass(frozen=True)
class Pool:
    name: str
    last: bool = False  # pool5: may pad its end edge where no window reaches


@dataclass(frozen=True)
class Fc:
    name: str
    inputs: int
    outputs: int | None  # None: the class count, whatever it is


# The 2012 paper's AlexNet (model.py's table), as the BVLC Caffe model is laid out.
PAPER_PLAN: tuple[object, ...] = (
    Conv("conv1", 96, 11, 4, 0, False),
    "Relu",
    "norm1",
    Pool("pool1"),
    Conv("conv2", 256, 5, 1, 2, True),
    "Relu",
    "norm2",
    Pool("pool2"),
    Conv("conv3", 384, 3, 1, 1, False),
    "Relu",
    Conv("conv4", 384, 3, 1, 1, True),
    "Relu",
    Conv("conv5", 256, 3, 1, 1, True),
    "Relu",
    Pool("pool5", last=True),
    "flatten",
    Fc("fc6", 256 * 6 * 6, 4096),
    "Relu",
    Fc("fc7", 4096, 4096),
    "Relu",
    Fc("fc8", 4096, None),
)


# torchvision's ``alexnet`` ("One weird trick", 2014), as torch.onnx.export writes it at
# 224 px: no LRN, no groups, conv1 padded by 2, and its adaptive pool to 6 x 6 as an
# identity AveragePool 1x1/1 (both exporters; optional, an optimiser may drop it).
TORCHVISION_PLAN: tuple[object, ...] = (
    Conv("conv1", 64, 11, 4, 2, False),
    "Relu",
    Pool("pool1"),
    Conv("conv2", 192, 5, 1, 2, False),
    "Relu",
    Pool("pool2"),
    Conv("conv3", 384, 3, 1, 1, False),
    "Relu",
    Conv("conv4", 256, 3, 1, 1, False),
    "Relu",
    Conv("conv5", 256, 3, 1, 1, False),
    "Relu",
    Pool("pool5"),
    "avgpool",
    "flatten",
    Fc("fc6", 256 * 6 * 6, 4096),
    "Relu",
    Fc("fc7", 4096, 4096),
    "Relu",
    Fc("fc8", 4096, None),
)
TORCHVISION_CONV1_CHANNELS = 64  # how the walk tells torchvision's graph from the paper's (96)
