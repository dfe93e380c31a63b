"""Plant an INT8 outlier channel into a checkpoint without changing what it computes.

One output channel of layer A is scaled by ``s`` (weights and bias) and the matching
input channel(s) of the next layer B by ``1/s``. ReLU, max-pool, flatten and dropout
commute with a positive scale, so the FP32 logits move only by float rounding, but one
per-tensor INT8 scale can no longer cover both that channel and the rest of B's input:
the accuracy loss an outlier channel of a trained network causes (issue 27).

    python scripts/plant_outlier.py export/alexnet.pt /tmp/planted.pt --between conv4 --scale 10000

Pairs: conv3->conv4, conv4->conv5, conv5->fc6 (the channel's 6x6 positions of the
flattened pool5 output), fc6->fc7, fc7->fc8. conv1 and conv2 feed LRN, which does not
commute with a scale, so they are refused. The channel defaults to A's output channel
with the largest weight norm (a live one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

PAIRS = {"conv3": "conv4", "conv4": "conv5", "conv5": "fc6", "fc6": "fc7", "fc7": "fc8"}


def _key(layer: str) -> str:
    return f"{'features' if layer.startswith('conv') else 'classifier'}.{layer}"


def plant_outlier(
    state_dict: dict[str, torch.Tensor], between: str, scale: float, channel: int | None = None
) -> tuple[dict[str, torch.Tensor], int]:
    """A copy of ``state_dict`` with output channel ``channel`` of ``between`` scaled by
    ``scale`` and the matching inputs of the next layer by 1/scale; and the channel."""
    if between not in PAIRS:
        raise SystemExit(
            f"error: --between must be one of {', '.join(PAIRS)} (its output must reach the next layer through ReLU/pool only)"
        )
    if not scale > 0:
        raise SystemExit("error: --scale must be positive (a negative scale does not commute with ReLU)")
    following = PAIRS[between]
    weights = {name: tensor.clone() for name, tensor in state_dict.items()}
    a_weight, a_bias = weights[f"{_key(between)}.weight"], weights[f"{_key(between)}.bias"]
    b_weight = weights[f"{_key(following)}.weight"]
    if channel is None:
        channel = int(a_weight.flatten(1).norm(dim=1).argmax())
    if not 0 <= channel < a_weight.shape[0]:
        raise SystemExit(f"error: {between} has {a_weight.shape[0]} output channels, not {channel}")
    a_weight[channel] *= scale
    a_bias[channel] *= scale
    if following.startswith("conv"):
        # grouped conv: B's input channel `channel` is local index channel % per_group of its group
        per_group_in = b_weight.shape[1]
        group, local = divmod(channel, per_group_in)
        per_group_out = b_weight.shape[0] // (a_weight.shape[0] // per_group_in)
        b_weight[group * per_group_out : (group + 1) * per_group_out, local] /= scale
    elif between.startswith("conv"):  # conv5 -> fc6: the channel's positions in the flattened pool5 output
        positions = b_weight.shape[1] // a_weight.shape[0]
        b_weight[:, channel * positions : (channel + 1) * positions] /= scale
    else:
        b_weight[:, channel] /= scale
    return weights, channel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--between", required=True, choices=list(PAIRS), help="layer A (B is the next one)")
    parser.add_argument("--scale", type=float, default=10_000.0)
    parser.add_argument("--channel", type=int, default=None)
    args = parser.parse_args()

    from alexnet_deploy.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    checkpoint.state_dict, channel = plant_outlier(checkpoint.state_dict, args.between, args.scale, args.channel)
    checkpoint.check_weights()
    save_checkpoint(checkpoint, args.output)
    print(
        f"wrote {args.output}: {args.between} output channel {channel} x {args.scale:g}, "
        f"{PAIRS[args.between]}'s matching input x 1/{args.scale:g}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
