"""Reduced precision on the CPU, measured side by side (issue 14): onnxruntime FP32
against our two INT8 graphs and onnxruntime's own ``quantize_static`` (int8 and uint8
activations), torch-compile channels-last FP32 against bf16, and the fastest row
against the CPU's FP32 GEMM-rate bound.

The machine may be shared, so nothing is timed alone: every round calls each model
once on the same batch, and a 4096² float32 GEMM, in turn (the order rotates each
round), so load from other jobs hits every figure alike; the figures to trust are the
**ratios within the run**. The GEMM rate turns into an images/s bound through
AlexNet's 1.44 GFLOP per image (2 × 0.72 GMAC): no FP32 network can beat that rate on
this CPU unless it computes less, so it puts the fastest row in proportion.

Accuracy is judged like every bench row: top-1 agreement with onnxruntime FP32 on all
held-out val images. Run after the README's main job (``build`` writes the INT8 files):

    python benchmarks/cpu_precision.py [--batch 128] [--rounds 8] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from alexnet_deploy.artifacts import ORT_INT8, ArtifactLayout
from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.devices import cpu_bf16_unavailable_reason
from alexnet_deploy.doctor import machine_description
from alexnet_deploy.graph import load_model
from alexnet_deploy.inference import Runner
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.metrics import compare_logits
from alexnet_deploy.quantize.baseline import onnxruntime_int8
from alexnet_deploy.quantize.images import load_calibration_set
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner
from alexnet_deploy.runners.torch import TorchRunner

GFLOP_PER_IMAGE = 1.44
GEMM_SIZE = 4096


@dataclass
class Entry:
    name: str
    runner: Runner | None  # None: the GEMM
    seconds: float = 0.0
    calls: int = 0
    agreement: float | None = None


def gemm_call() -> Callable[[], None]:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator) for _ in range(2))
    out = torch.empty(GEMM_SIZE, GEMM_SIZE)
    return lambda: torch.mm(a, b, out=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, default=Path("export/alexnet.onnx"))
    parser.add_argument("--checkpoint", type=Path, default=Path("export/alexnet.pt"))
    parser.add_argument("--calibration", type=Path, default=Path("calibration"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    fp32 = load_model(args.onnx)
    metadata = export_metadata(fp32, str(args.onnx))
    preprocessing = metadata.preprocessing
    images, _ = held_out_images(metadata.data_source, metadata.split, preprocessing, "val")
    batch = np.resize(images, (args.batch, *images.shape[1:]))
    calibration = load_calibration_set(args.calibration, preprocessing, None).images
    with tempfile.TemporaryDirectory() as workdir:
        static = {a: onnxruntime_int8(fp32, calibration, Path(workdir), a) for a in ("int8", "uint8")}

    layout = ArtifactLayout.from_onnx(args.onnx)
    entries = [
        Entry("onnxruntime fp32", OnnxRuntimeRunner(fp32)),
        Entry("onnxruntime int8, onnxruntime graph (ours)", OnnxRuntimeRunner(layout.onnx(ORT_INT8), "int8")),
        Entry("onnxruntime int8, TensorRT graph (simulated)", OnnxRuntimeRunner(layout.onnx("int8"), "int8")),
        Entry("onnxruntime quantize_static, int8 activations", OnnxRuntimeRunner(static["int8"], "int8")),
        Entry("onnxruntime quantize_static, uint8 activations", OnnxRuntimeRunner(static["uint8"], "int8")),
        Entry("torch-compile fp32, channels-last", TorchRunner(args.checkpoint, "fp32", "cpu", compile=True)),
    ]
    bf16_reason = cpu_bf16_unavailable_reason()
    if bf16_reason is None:
        entries.append(
            Entry("torch-compile bf16, channels-last", TorchRunner(args.checkpoint, "bf16", "cpu", compile=True))
        )
    gemm = Entry(f"float32 GEMM {GEMM_SIZE}²", None)
    gemm_run = gemm_call()

    reference = entries[0].runner.load().infer_all(images)
    for entry in entries:
        entry.runner.load()
        entry.agreement = compare_logits(reference, entry.runner.infer_all(images))[1]
        entry.runner.infer(batch)  # warm-up at the timed batch (torch.compile compiles here)
    gemm_run()

    timed = [*entries, gemm]
    for round_index in range(args.rounds):
        shift = round_index % len(timed)
        for entry in timed[shift:] + timed[:shift]:
            start = time.perf_counter()
            if entry.runner is None:
                gemm_run()
            else:
                entry.runner.infer(batch)
            entry.seconds += time.perf_counter() - start
            entry.calls += 1
    for entry in entries:
        entry.runner.close()

    ips = {e.name: args.batch * e.calls / e.seconds for e in entries}
    gemm_gflops = 2 * GEMM_SIZE**3 * gemm.calls / gemm.seconds / 1e9
    bound = gemm_gflops / GFLOP_PER_IMAGE
    fp32_ips = ips["onnxruntime fp32"]
    machine = machine_description()
    lines = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {machine['cpu']} · {machine['cpu_cores']} cores · "
        f"precision features: {', '.join(machine['cpu_precision_features']) or 'unknown'} · "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()} · "
        f"onnxruntime {machine['versions'].get('onnxruntime')} · torch {machine['versions'].get('torch')}",
        "",
        f"batch {args.batch}, {args.rounds} interleaved rounds, agreement on {len(images)} held-out val images",
        "",
        "| model | img/s | × onnxruntime fp32 | top-1 agreement | share of FP32 GEMM bound |",
        "|---|---|---|---|---|",
    ]
    for entry in entries:
        lines.append(
            f"| {entry.name} | {ips[entry.name]:.1f} | {ips[entry.name] / fp32_ips:.2f} | "
            f"{entry.agreement:.2%} | {ips[entry.name] / bound:.0%} |"
        )
    ours = ips["onnxruntime int8, onnxruntime graph (ours)"]
    lines += [
        "",
        f"float32 GEMM ({GEMM_SIZE}², torch, {torch.get_num_threads()} threads): {gemm_gflops:.0f} GFLOP/s "
        f"→ FP32 bound {bound:.1f} img/s at {GFLOP_PER_IMAGE} GFLOP/image",
        f"ours / quantize_static: {ours / ips['onnxruntime quantize_static, uint8 activations']:.2f} (uint8), "
        f"{ours / ips['onnxruntime quantize_static, int8 activations']:.2f} (int8)",
    ]
    if bf16_reason is None:
        ratio = ips["torch-compile bf16, channels-last"] / ips["torch-compile fp32, channels-last"]
        lines.append(f"torch-compile bf16 / fp32 (both channels-last): {ratio:.2f}")
    else:
        lines.append(f"bf16 skipped: {bf16_reason}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
