"""Data-parallel training under ``torchrun``: PyTorch's own distributed stack, no
launcher of ours.

``torchrun --nproc-per-node N $(which alexnet-deploy) train ...`` starts N copies of
the command with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (and the rendezvous address) in
their environment; :func:`from_environment` reads them. Without that environment the
context is the single process (rank 0 of 1) and nothing here touches
``torch.distributed``, so a plain ``alexnet-deploy train`` behaves as before.

What each piece is for:

* :func:`start` joins the process group: NCCL on CUDA (one GPU per local rank), Gloo
  on CPU. A rendezvous that does not complete within the timeout is a one-line
  :class:`DeployError`, not a traceback from every rank.
* :func:`train_sampler`: a :class:`DistributedSampler` over the deterministic train
  split: disjoint shards of one permutation drawn from (seed, epoch).
* :class:`StridedShard`: the val split cut into disjoint, unpadded shards (rank,
  rank + W, ...), so summing hits and counts across ranks gives exactly the
  single-process figures (``DistributedSampler`` pads with repeats, which would count
  some images twice).
* :func:`all_reduce_sums` and :func:`run_on_main` (rank 0 does it, everyone gets the
  result or the error), so ranks never diverge and never wait on a rank that failed.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

from ..errors import DeployError
from .config import DEFAULT_DIST_TIMEOUT_S

T = TypeVar("T")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits among the ones torchrun started (1 of 1 without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(environ: dict[str, str] | None = None) -> DistributedContext:
    """The context torchrun's variables describe; the single process if they are absent."""
    variables: Mapping[str, str] = os.environ if environ is None else environ
    if not all(name in variables for name in TORCHRUN_VARIABLES):
        return DistributedContext()
    try:
        return DistributedContext(
            rank=int(variables["RANK"]),
            world_size=int(variables["WORLD_SIZE"]),
            local_rank=int(variables["LOCAL_RANK"]),
            local_world_size=int(variables.get("LOCAL_WORLD_SIZE", variables["WORLD_SIZE"])),
        )
    except ValueError:
        raise DeployError(f"torchrun variables {TORCHRUN_VARIABLES} must be integers") from None


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(context: DistributedContext, device: torch.device) -> torch.device:
    """One GPU per local rank on CUDA; the CPU is shared."""
    if device.type != "cuda" or not context.enabled:
        return device
    if context.local_rank >= torch.cuda.device_count():
        raise DeployError(
            f"local rank {context.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
            "start at most that many processes per node (--nproc-per-node)"
        )
    return torch.device("cuda", context.local_rank)


def start(context: DistributedContext, device: torch.device, timeout_s: float = DEFAULT_DIST_TIMEOUT_S) -> None:
    """Join the process group (no-op for a single process)."""
    if not context.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            backend_for(device),
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    except (RuntimeError, dist.DistError) as error:
        raise DeployError(f"rank {context.rank}: rendezvous failed ({_first_line(error)})") from None


def barrier(context: DistributedContext) -> None:
    """Every rank waits for the others (no-op for a single process)."""
    if context.enabled:
        dist.barrier()


def stop(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def peer_failures_as_errors(context: DistributedContext) -> Iterator[None]:
    """A collective that fails because another rank died or timed out becomes one
    line naming this rank, instead of a C++ backtrace from every survivor."""
    try:
        yield
    except dist.DistError as error:
        if not context.enabled:
            raise
        raise DeployError(f"rank {context.rank}: another rank failed or timed out ({_first_line(error)})") from None
    except RuntimeError as error:
        if not context.enabled or not _is_collective_failure(error):
            raise
        raise DeployError(f"rank {context.rank}: another rank failed or timed out ({_first_line(error)})") from None


def _is_collective_failure(error: RuntimeError) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {lines[0] if lines else ''}"


def run_on_main(context: DistributedContext, work: Callable[[], T]) -> T:
    """Rank 0 runs ``work``; every rank returns its result or raises its DeployError.

    Used for reading the resume state: on several nodes only rank 0's node is sure
    to hold the files rank 0 wrote, and a failure there must stop all ranks, not
    leave them waiting in a collective.
    """
    if not context.enabled:
        return work()
    outcome: list = [None, None]
    if context.is_main:
        try:
            outcome = [work(), None]
        except DeployError as error:
            outcome = [None, str(error)]
    dist.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise DeployError(outcome[1])
    return outcome[0]


def all_reduce_sums(context: DistributedContext, values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64, so counts stay exact)."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def train_sampler(dataset, context: DistributedContext, seed: int, drop_last: bool) -> DistributedSampler:
    """This rank's shard of one seeded permutation per epoch (``set_epoch`` before each)."""
    return DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=drop_last
    )


class StridedShard(Sampler[int]):
    """Indices rank, rank + world_size, ...: disjoint shards covering every index once."""

    def __init__(self, length: int, context: DistributedContext) -> None:
        self.indices = range(context.rank, length, context.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
