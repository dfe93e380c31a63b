"""The images a bench run times on: held-out val images rotated through batch-sized
inputs, and the check that the largest batch fits this machine's memory."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DeployError

# Peak memory per image of batch, as a multiple of one preprocessed input image
# (3 x crop x crop float32): the rotated input copies, onnxruntime's activations and
# the logits. Measured: see docs/bench.md ("Memory").
MEMORY_PER_INPUT_BYTES = 12


@dataclass
class Rotation:
    """A pool of images cut into ``batch``-sized inputs that together cover it:
    contiguous views where they fit, one wrapped copy at the end."""

    batches: list[np.ndarray]
    indices: list[np.ndarray]  # the pool index of each image of each batch

    @classmethod
    def of(cls, pool: np.ndarray, batch: int) -> Rotation:
        count = math.ceil(len(pool) / batch)
        indices = [(r * batch + np.arange(batch)) % len(pool) for r in range(count)]
        batches = [
            pool[idx[0] : idx[0] + batch] if idx[-1] == idx[0] + batch - 1 else np.ascontiguousarray(pool[idx])
            for idx in indices
        ]
        return cls(batches, indices)

    def per_image(self, outputs: Sequence[np.ndarray], pool_size: int) -> np.ndarray:
        """Outputs of every batch, reassembled into one row per pool image."""
        result = np.empty((pool_size, outputs[0].shape[1]), np.float32)
        for idx, logits in zip(self.indices, outputs, strict=True):
            result[idx] = logits
        return result


def memory_limit_bytes() -> int | None:
    """The memory this process could ever have: physical memory (MemTotal), or the
    cgroup's limit when a container sets a lower one; None where neither is known.
    Not MemAvailable: on a shared machine that swings by gigabytes from one second to
    the next, and a batch that fits must not be refused because a neighbour is busy."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        limits = []  # no readable /proc/meminfo (not Linux): only a cgroup limit can bound the batch
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limits.append(int(Path(cgroup).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            continue
    return min(limits) if limits else None


def check_memory(batches: Sequence[int], crop: int, limit: int | None) -> None:
    """Refuse a batch whose estimated working set exceeds the machine's memory,
    before allocating it (numpy would otherwise try, and the OOM killer end it)."""
    if limit is None:
        return
    per_image = MEMORY_PER_INPUT_BYTES * 3 * crop * crop * 4
    largest = max(batches)
    if largest * per_image > limit:
        fits = max(1, limit // per_image)
        raise DeployError(
            f"--batch {largest} needs about {largest * per_image / 2**30:.1f} GiB "
            f"({per_image / 2**20:.1f} MiB per {crop}×{crop} image), more than this machine's "
            f"{limit / 2**30:.1f} GiB of memory; use --batch {fits} or less"
        )
