"""Training throughput, measured so that variants can be compared: our loop
(``train.train_one_epoch``) against a bare PyTorch loop (forward, loss, backward,
step; nothing else) on the same loader, the same loop on tensors already in memory
(the compute ceiling), our loop as it was before the speed-ups of 2026-12 (SGD's
per-parameter loop instead of the fused kernel, LRN through autograd of its textbook
formulation instead of the hand-written gradient, the contiguous layout), our loop in the
contiguous layout alone, our loop
under bf16 autocast, and 2 processes under torchrun (DDP, Gloo) against 1, all in one run.

Method (an earlier version gave one 1-batch warm-up to whichever variant ran first
and reported each variant's best run, and so put our loop *above* its own ceiling):

* Every timed run of every variant starts from the same weights and a fresh
  optimizer, runs ``--warmup`` untimed steps of its own kind, then ``--steps`` timed
  ones. The 2-process variant does the same inside each rank, after process start-up
  and rendezvous, and reports world images / slowest rank's time.
* Rounds are interleaved, each one starting with the next variant in turn, so drift
  in machine load and position effects fall on every variant alike.
* Each variant reports the median over rounds with its min-max spread, and each
  comparison is the median of per-round ratios (paired: both numbers from one round).
* The loader-bound share of a step is timed directly in our loop: the time spent
  waiting for the next batch over the time of the whole timed run.

    python benchmarks/train_throughput.py [--batch-size 16] [--steps 8] [--warmup 2] [--rounds 3]
                                          [--width 1.0] [--no-ddp] [--no-bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from alexnet_deploy.data.augmentation import Augmentation
from alexnet_deploy.data.loading import TrainingDataset, batch_loader
from alexnet_deploy.data.preprocessing import Preprocessing
from alexnet_deploy.data.sources import load_digits
from alexnet_deploy.lrn import LocalResponseNorm, LRNParams
from alexnet_deploy.model import AlexNet, AlexNetConfig
from alexnet_deploy.progress import SilentProgress
from alexnet_deploy.train import distributed
from alexnet_deploy.train.epoch import train_one_epoch
from alexnet_deploy.train.precision import Precision
from alexnet_deploy.train.recipe import recipe_defaults

CPU = torch.device("cpu")


@dataclass
class Timing:
    images_per_s: float
    loader_share: float | None = None


class TimedLoader:
    """Wraps a loader, adding up the time spent waiting for each next batch."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader
        self.waiting = 0.0

    def __iter__(self) -> Iterator:
        batches = iter(self.loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waiting += time.perf_counter() - started
            yield batch


@dataclass
class Bench:
    """One model and its starting weights, and the loaders every variant draws from."""

    args: argparse.Namespace
    model: torch.nn.Module
    initial: dict
    warmup_loader: torch.utils.data.DataLoader
    timed_loader: torch.utils.data.DataLoader
    warmup_batches: list
    timed_batches: list

    def fresh(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        self.model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # undo channels-last
        self.model.load_state_dict(self.initial)
        return self.model, sgd(self.model)

    def bare(self, in_memory: bool) -> Timing:
        model, optimizer = self.fresh()
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as our loop trains
        warmup, timed = (
            (self.warmup_batches, self.timed_batches) if in_memory else (self.warmup_loader, self.timed_loader)
        )
        bare_loop(model, optimizer, warmup)
        started = time.perf_counter()
        seen = bare_loop(model, optimizer, timed)
        return Timing(seen / (time.perf_counter() - started))

    def ours(self, precision: Precision, before_speedups: bool = False) -> Timing:
        if before_speedups:
            with autograd_lrn():
                model, _ = self.fresh()
                return self._ours(model, sgd(model, fused=False), precision)
        model, optimizer = self.fresh()
        return self._ours(model, optimizer, precision)

    def _ours(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, precision: Precision) -> Timing:
        model = model.to(memory_format=precision.memory_format)  # type: ignore[call-overload]  # torch stubs omit it
        train_one_epoch(model, self.warmup_loader, optimizer, CPU, SilentProgress(), precision)
        timed = TimedLoader(self.timed_loader)
        started = time.perf_counter()
        _, seen = train_one_epoch(model, timed, optimizer, CPU, SilentProgress(), precision)
        elapsed = time.perf_counter() - started
        return Timing(seen / elapsed, timed.waiting / elapsed)

    def ddp(self, processes: int) -> Timing:
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}", "--rdzv-backend=c10d",
            "--rdzv-endpoint=127.0.0.1:0", "--max-restarts=0", __file__, "--ddp-worker",
            *(f"--{k.replace('_', '-')}={v}" for k, v in vars(self.args).items() if k in ("batch_size", "steps", "warmup", "width")),
        ]  # fmt: skip
        threads = max(1, torch.get_num_threads() // processes)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME="lo")
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
        if result.returncode != 0:
            raise SystemExit(f"error: the {processes}-process run failed: {result.stderr.strip().splitlines()[-1:]}")
        return Timing(**json.loads(result.stdout.strip().splitlines()[-1]))


def sgd(model: torch.nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    """The training's optimizer (``train.loop.make_optimizer``: Nesterov SGD, fused), at a
    small lr; ``fused=False`` is torch's default per-parameter implementation."""
    return torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4, nesterov=True, fused=fused)


def textbook_lrn(x: torch.Tensor, params: LRNParams) -> torch.Tensor:
    """LRN as this project computed it before its hand-written gradient: square, pad,
    average over a channel window with ``avg_pool3d``, and autograd through all of it."""
    squares = F.pad(x.float().square().unsqueeze(1), (0, 0, 0, 0, params.window_before, params.window_after))
    mean_square = F.avg_pool3d(squares, (params.size, 1, 1), stride=1).squeeze(1)
    return (x.float() / (params.bias + params.alpha * mean_square).pow(params.beta)).to(x.dtype)


@contextlib.contextmanager
def autograd_lrn() -> Iterator[None]:
    """Every ``LocalResponseNorm`` computes :func:`textbook_lrn` while inside."""
    original = LocalResponseNorm.forward
    LocalResponseNorm.forward = lambda self, x: textbook_lrn(x, self.params)  # type: ignore[method-assign]
    try:
        yield
    finally:
        LocalResponseNorm.forward = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Contiguous(Precision):
    """fp32 in the contiguous (NCHW) layout, which training used on the CPU before 2026-12."""

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.contiguous_format


def bare_loop(model, optimizer, batches) -> int:
    """``batches``: a list of tensors in memory, or a data loader."""
    model.train()
    seen = 0
    for images, labels in batches:
        loss = F.cross_entropy(model(images.to(memory_format=torch.channels_last)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    return seen


def make_dataset(args: argparse.Namespace) -> TrainingDataset:
    images = load_digits().subset(range(args.batch_size * (args.warmup + args.steps)))
    dataset = TrainingDataset(images, Preprocessing(), Augmentation(), seed=0)
    dataset.epoch = 1
    return dataset


def make_model(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    return AlexNet(AlexNetConfig(num_classes=10, width=args.width))


def make_bench(args: argparse.Namespace) -> Bench:
    dataset = make_dataset(args)
    split = args.batch_size * args.warmup
    warmup_loader = batch_loader(dataset, args.batch_size, sampler=range(split))
    timed_loader = batch_loader(dataset, args.batch_size, sampler=range(split, len(dataset)))
    model = make_model(args)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    return Bench(args, model, initial, warmup_loader, timed_loader, list(warmup_loader), list(timed_loader))


def ddp_worker(args: argparse.Namespace) -> None:
    """One rank of the N-process variant (started by torchrun from :meth:`Bench.ddp`):
    the same global batch, split, and the same warm-up, inside the process group."""
    context = distributed.from_environment()
    distributed.start(context, CPU, timeout_s=120)
    per_rank = args.batch_size // context.world_size
    dataset = make_dataset(args)
    split = args.batch_size * args.warmup
    # rank r takes every world_size-th image: the union of the ranks' step-t batches is
    # the 1-process run's step-t batch
    warmup_loader = batch_loader(dataset, per_rank, sampler=range(context.rank, split, context.world_size))
    timed_loader = batch_loader(
        dataset, per_rank, sampler=range(split + context.rank, len(dataset), context.world_size)
    )
    model = torch.nn.parallel.DistributedDataParallel(make_model(args))
    optimizer = sgd(model)
    train_one_epoch(model, warmup_loader, optimizer, CPU, SilentProgress())
    timed = TimedLoader(timed_loader)
    torch.distributed.barrier()
    started = time.perf_counter()
    _, seen = train_one_epoch(model, timed, optimizer, CPU, SilentProgress())
    elapsed = time.perf_counter() - started
    seen, waiting = distributed.all_reduce_sums(context, [seen, timed.waiting], CPU)
    slowest = torch.tensor([elapsed], dtype=torch.float64)
    torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
    if context.is_main:
        elapsed = float(slowest)
        print(json.dumps({"images_per_s": seen / elapsed, "loader_share": waiting / context.world_size / elapsed}))
    distributed.stop(context)


@dataclass
class Variant:
    name: str
    label: str
    run: Callable[[], Timing]
    timings: list[Timing] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [t.images_per_s for t in self.timings]


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def paired(a: Variant, b: Variant) -> list[float]:
    return [x / y for x, y in zip(a.rates(), b.rates(), strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch-size",
        type=int,
        default=recipe_defaults("fast").batch_size,
        help="global batch (split across processes); default: the main job's",
    )
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before every timed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=2, help="processes of the torchrun variant")
    parser.add_argument("--no-ddp", action="store_true", help="skip the torchrun variant")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 variant")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker(args)
        return

    bench = make_bench(args)
    variants = [
        Variant("ceiling", "bare loop, tensors in memory (ceiling)", lambda: bench.bare(in_memory=True)),
        Variant("bare", "bare loop, augmenting loader", lambda: bench.bare(in_memory=False)),
        Variant("ours", "our loop, fp32, 1 process", lambda: bench.ours(Precision("fp32"))),
        Variant(
            "before",
            "our loop before the speed-ups (unfused SGD, autograd LRN)",
            lambda: bench.ours(Contiguous("fp32"), before_speedups=True),
        ),
        Variant("nchw", "our loop, fp32, contiguous (NCHW)", lambda: bench.ours(Contiguous("fp32"))),
    ]
    if not args.no_bf16:
        variants.append(Variant("bf16", "our loop, bf16 autocast, 1 process", lambda: bench.ours(Precision("bf16"))))
    if not args.no_ddp:
        variants.append(
            Variant(
                "ddp", f"our loop, fp32, {args.processes} processes (torchrun, gloo)", lambda: bench.ddp(args.processes)
            )
        )
    for round_index in range(args.rounds):
        order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
        for variant in order:
            variant.timings.append(variant.run())
        print(
            f"round {round_index + 1}/{args.rounds}: "
            + ", ".join(f"{v.name} {v.timings[-1].images_per_s:.1f}" for v in variants),
            flush=True,
        )

    by_name = {v.name: v for v in variants}
    print(
        f"\nAlexNet width {args.width}, global batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"{args.rounds} interleaved rounds, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print("img/s: median (min-max over rounds)")
    for variant in variants:
        share = [t.loader_share for t in variant.timings if t.loader_share is not None]
        extra = f"   loader-bound share {spread([100 * s for s in share])}%" if share else ""
        print(f"  {variant.label:<48} {spread(variant.rates()):>22}{extra}")
    print("ratios: median of per-round ratios (min-max)")
    comparisons = [
        ("ours", "bare", "ours / bare loop, same loader (target >= 0.95)"),
        ("ours", "ceiling", "ours / in-memory ceiling"),
        ("ours", "before", "ours / ours before the speed-ups"),
        ("ours", "nchw", "channels-last (ours) / contiguous"),
    ]
    if "bf16" in by_name:
        comparisons.append(("bf16", "ours", "bf16 / fp32"))
    if "ddp" in by_name:
        comparisons.append(("ddp", "ours", f"{args.processes} processes / 1 process"))
    for a, b, label in comparisons:
        print(f"  {label:<48} {spread(paired(by_name[a], by_name[b]), 3):>22}")


if __name__ == "__main__":
    main()
