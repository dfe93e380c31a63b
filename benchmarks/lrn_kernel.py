"""Micro-benchmark of the Triton LRN kernel on a CUDA GPU, at AlexNet's two LRN shapes.

LRN is memory-bound: its floor is one read and one write of the activation. The
ceiling it is measured against is therefore a device-to-device copy of the same bytes
(``copy_`` into a preallocated tensor), timed in the same run on the same data; the
figure of merit is the kernel's achieved bandwidth as a share of that copy's (goal:
>= 80 %). PyTorch's ``local_response_norm`` is timed alongside for scale.

Timings are ``triton.testing.do_bench`` medians (it flushes L2 between runs, so every
run reads from DRAM). Inputs are ReLU'd Gaussian activations, never zeros. Each Triton
row is also checked against the float32 torch reference, so a fast wrong kernel
cannot produce a good-looking table.

    python benchmarks/lrn_kernel.py [--batch 128] [--markdown docs/lrn-kernel.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from alexnet_deploy.lrn import LRNParams, local_response_norm
from alexnet_deploy.plugin.kernel import TACTICS, lrn_triton

LAYERS = {"conv1": (96, 55, 55), "conv2": (256, 27, 27)}  # AlexNet's LRN inputs (C, H, W)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
GOAL = 0.80
TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3}  # relative to the largest output; fp16 rounds once


@dataclass
class Row:
    layer: str
    dtype: str
    implementation: str
    ms: float
    gb_per_s: float
    of_copy: float  # achieved bandwidth / copy bandwidth
    max_error: float | None  # max |y - reference| / max |reference|; None for the copy and torch itself


def bench(fn, rep_ms: int) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")


def measure(layer: str, dtype_name: str, batch: int, rep_ms: int) -> list[Row]:
    dtype = DTYPES[dtype_name]
    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn((batch, *LAYERS[layer]), device="cuda", generator=generator).mul_(40).relu_().to(dtype)
    out = torch.empty_like(x)
    moved = 2 * x.numel() * x.element_size()  # one read + one write, for every implementation
    params = LRNParams()
    reference = local_response_norm(x, params).float()

    def row(name: str, ms: float, error: float | None, copy_ms: float) -> Row:
        return Row(layer, dtype_name, name, ms, moved / ms / 1e6, copy_ms / ms, error)

    copy_ms = bench(lambda: out.copy_(x), rep_ms)
    rows = [row("D2D copy (ceiling)", copy_ms, None, copy_ms)]
    torch_ms = bench(lambda: F.local_response_norm(x, params.size, params.alpha, params.beta, params.bias), rep_ms)
    rows.append(row("torch local_response_norm", torch_ms, None, copy_ms))
    for tactic, config in TACTICS.items():
        error = ((lrn_triton(x, params, config).float() - reference).abs().max() / reference.abs().max()).item()
        ms = bench(lambda config=config: lrn_triton(x, params, config), rep_ms)
        name = f"triton tactic {tactic} (block {config.block}, {config.channels_per_program} ch, lookahead {config.lookahead}, {config.num_warps} warps)"
        rows.append(row(name, ms, error, copy_ms))
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| layer | dtype | implementation | median ms | GB/s | % of copy | max rel. error |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        error = "" if r.max_error is None else f"{r.max_error:.2e}"
        lines.append(
            f"| {r.layer} | {r.dtype} | {r.implementation} | {r.ms:.4f} | {r.gb_per_s:.0f} | {100 * r.of_copy:.1f} | {error} |"
        )
    return "\n".join(lines)


def summary(rows: list[Row]) -> list[str]:
    """Best Triton tactic per (layer, dtype) against the goal."""
    lines = []
    for layer in LAYERS:
        for dtype in DTYPES:
            triton_rows = [r for r in rows if r.layer == layer and r.dtype == dtype and r.max_error is not None]
            if not triton_rows:
                continue
            best = max(triton_rows, key=lambda r: r.of_copy)
            verdict = "meets" if best.of_copy >= GOAL else "misses"
            lines.append(
                f"- {layer} {dtype}: best {best.implementation.split(' (')[0]} at {best.gb_per_s:.0f} GB/s, "
                f"{100 * best.of_copy:.1f} % of copy -- {verdict} the {100 * GOAL:.0f} % goal"
            )
            wrong = [r.implementation.split(" (")[0] for r in triton_rows if r.max_error > TOLERANCE[dtype]]
            if wrong:
                lines.append(
                    f"- {layer} {dtype}: WRONG RESULTS from {', '.join(wrong)} (error above {TOLERANCE[dtype]:g})"
                )
    return lines


def markdown(rows: list[Row], batch: int) -> str:
    device = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    import triton

    return "\n".join(
        [
            f"# LRN kernel micro-benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            "",
            f"Device: {device} (sm_{major}{minor}); torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"triton {triton.__version__}, Python {platform.python_version()}.",
            "",
            f"AlexNet's LRN inputs at batch {batch}, ReLU'd Gaussian data. Bandwidth counts one read and one "
            "write of the activation; the D2D copy of the same bytes in the same run is the ceiling. "
            "Medians of `triton.testing.do_bench` (L2 flushed between runs).",
            "",
            table(rows),
            "",
            *summary(rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rep", type=int, default=200, help="milliseconds of timed runs per measurement")
    parser.add_argument("--markdown", type=Path, help="also write the result as a dated markdown file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("lrn_kernel benchmark: needs a CUDA GPU, none is visible", file=sys.stderr)
        return 2
    rows = [row for layer in LAYERS for dtype in DTYPES for row in measure(layer, dtype, args.batch, args.rep)]
    print(table(rows))
    print("\n".join(summary(rows)))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, args.batch))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
