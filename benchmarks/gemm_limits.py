"""What this CPU can compute at most, to put bench's CPU rows in proportion: the
fastest float32 and int8 dense kernels of the installed libraries (torch, onnxruntime,
OpenVINO; GEMMs of ``--size``³ and a 3x3 convolution) and the bandwidth of a large
memory copy, each the median of interleaved rounds so load from other jobs hits all
alike. The kernels live in the package (``alexnet_deploy.profile.limits``, whose
docstring says why there are several), where ``alexnet-deploy profile`` measures them
in its own run.

AlexNet is 1.44 GFLOP per image (2 × 0.72 GMAC, ``alexnet-deploy info``), nearly all
of it in conv and fully connected layers: a row computing them directly in float32
cannot beat ``FP32 limit / 1.44`` img/s, one in int8 not ``INT8 limit / 1.44``. A
backend may compute less than the direct count (OpenVINO's CPU plugin runs 3x3
convolutions by Winograd where it pays, its ``WINOGRAD`` capability), so a float32 row
above 100% of its limit is arithmetic saved, not a broken clock. With ``--bench
out.json`` (written by ``alexnet-deploy bench --json``) each CPU row's share of its
limit is printed beside it: bf16 rows are put against the FP32 limit (no bf16 kernel is
measured here), so they may exceed 100%.

    python benchmarks/gemm_limits.py [--size 4096] [--rounds 5] [--bench out.json] [--json limits.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from alexnet_deploy.doctor import machine_description
from alexnet_deploy.profile.limits import measure_limits

GFLOP_PER_IMAGE = 1.44
INT8_PRECISIONS = ("int8", "int8-qdq")  # rows that compute in integers (int8-sim does not)


def row_shares(bench: dict, fp32_rate: float, int8_rate: float) -> list[tuple[str, int, float, str, float]]:
    """(backend/precision, batch, img/s, limit name, share) for every CPU row that ran."""
    shares = []
    for row in bench["results"]:
        if row.get("skipped") or row["device"] != "cpu" or not row.get("throughput_ips"):
            continue
        integer = row["precision"] in INT8_PRECISIONS and row["backend"] in ("onnxruntime", "openvino")
        limit, rate = ("INT8", int8_rate) if integer else ("FP32", fp32_rate)
        ips = row["throughput_ips"]
        shares.append((f"{row['backend']}/{row['precision']}", row["batch"], ips, limit, ips * GFLOP_PER_IMAGE / rate))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bench", type=Path, help="a bench --json report, to print each CPU row's share")
    parser.add_argument("--json", type=Path, help="write the limits (and shares) here")
    args = parser.parse_args()

    limits = measure_limits(args.size, args.rounds)
    rates = limits.rounds
    fp32_rate, int8_rate = limits.fp32_gflops, limits.int8_gops
    machine = machine_description()
    print(f"{machine['cpu']}, {machine['cpu_cores']} cores, ISA: {', '.join(machine['cpu_precision_features'])}")
    for name, values in rates.items():
        rate, low, high = sorted(values)[len(values) // 2], min(values), max(values)
        print(
            f"{name}: {rate:.0f} G(FL)OP/s or GB/s, median of {args.rounds} (range {low:.0f}-{high:.0f})"
            + ("" if name.startswith("copy") else f", bound {rate / GFLOP_PER_IMAGE:.0f} img/s")
        )
    print(
        f"limits: FP32 {fp32_rate:.0f} GFLOP/s ({limits.fastest['fp32']}), INT8 {int8_rate:.0f} GOP/s ({limits.fastest['int8']})"
    )
    report: dict = {"machine": machine} | limits.to_dict()
    if args.bench is not None:
        shares = row_shares(json.loads(args.bench.read_text()), fp32_rate, int8_rate)
        print("\n| row | batch | img/s | limit | share of limit |\n|---|---|---|---|---|")
        for name, batch, ips, limit, share in shares:
            print(f"| {name} | {batch} | {ips:.1f} | {limit} | {share:.0%} |")
        report["shares"] = [dict(zip(("row", "batch", "img_s", "limit", "share"), s, strict=True)) for s in shares]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
