"""Training throughput of our loop (``train.train_one_epoch``) next to a bare PyTorch
loop (forward, loss, backward, step; nothing else) on the same model, batch and data
loader, measured in the same run. The target: ours within 5% of the bare loop, i.e.
our harness (metrics, progress reporting) costs next to nothing.

A third figure, the bare loop over tensors already in memory, is the compute ceiling:
the gap between it and the loader figures is what producing augmented images costs
(on 2 CPU cores it is not hidden, since the model itself uses both cores).

Runs alternate so drift in machine load hits every variant equally; each reports its
best run.

    python benchmarks/train_throughput.py [--batch-size 32] [--steps 8] [--rounds 2] [--width 1.0]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from alexnet_deploy.data import Augmentation, Preprocessing, TrainingDataset, batch_loader, load_digits
from alexnet_deploy.model import AlexNet, AlexNetConfig
from alexnet_deploy.progress import SilentProgress
from alexnet_deploy.train import train_one_epoch


def bare_loop(model, optimizer, batches) -> float:
    """``batches``: a list of tensors in memory, or the data loader itself."""
    model.train()
    seen = 0
    started = time.perf_counter()
    for images, labels in batches:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    return seen / (time.perf_counter() - started)


def our_loop(model, optimizer, loader) -> float:
    started = time.perf_counter()
    _, seen = train_one_epoch(model, loader, optimizer, torch.device("cpu"), SilentProgress())
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    images = load_digits().subset(range(args.batch_size * args.steps))
    dataset = TrainingDataset(images, Preprocessing(), Augmentation(), seed=0)
    loader = batch_loader(dataset, args.batch_size, shuffle=True, drop_last=True)
    batches = list(loader)  # the bare loop gets the very same tensors, pre-made
    model = AlexNet(AlexNetConfig(num_classes=10, width=args.width))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    bare_loop(model, optimizer, batches[:1])  # warm-up: allocator, kernels

    in_memory, bare, ours = [], [], []
    for _ in range(args.rounds):
        in_memory.append(bare_loop(model, optimizer, batches))
        bare.append(bare_loop(model, optimizer, loader))
        ours.append(our_loop(model, optimizer, loader))
    print(f"model: AlexNet width {args.width}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads")
    print(f"bare PyTorch loop, tensors in memory (ceiling): {max(in_memory):8.1f} img/s")
    print(f"bare PyTorch loop, same augmenting loader:      {max(bare):8.1f} img/s")
    print(f"our training loop, same augmenting loader:      {max(ours):8.1f} img/s")
    print(f"ratio ours / bare (same loader): {max(ours) / max(bare):.3f} (target >= 0.95)")
    print(f"data pipeline share of a step:   {1 - max(bare) / max(in_memory):.1%}")


if __name__ == "__main__":
    main()
