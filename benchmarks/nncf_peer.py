"""Our OpenVINO INT8 against NNCF's post-training quantization of the same FP32 model,
side by side in one run (issue 28), with the INT8 GEMM limit measured in that run.

NNCF (``pip install nncf``; a benchmark dependency only, never a runtime one) quantizes
the FP32 export's standard-op twin with ``nncf.quantize`` on the same calibration images
our ``build`` used (the checkpoint's held-out calibration split, as many as ``--calib``).
Both INT8 models are compiled the way ``runners/openvino.py`` compiles ours (LATENCY
hint, f32 where not integer). Speed: interleaved rounds of ``--iterations`` calls each at
``--batch``, the order alternating per round, so load from other jobs hits both alike;
the ratio is the median of the per-round ratios, with its range. Fidelity: top-1
agreement and max |Δ logits| against onnxruntime FP32 (the project's reference) on the
held-out val images. Share of the limit: img/s x 2 x MACs per image / the INT8 GEMM rate
(``profile.limits``), measured once in every round so that it meets the same load.

With ``--nodes`` both compiled models are also profiled (OpenVINO PERF_COUNT, the median
of ``--rounds`` calls) and their executed nodes printed side by side: kernel and time of
each, in execution order, which shows where the two differ or that they do not.

    python benchmarks/nncf_peer.py --onnx export/alexnet.onnx [--batch 128] [--rounds 6] [--nodes] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.doctor import machine_description
from alexnet_deploy.graph import load_model, load_verified, to_standard_lrn
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.metrics import parity
from alexnet_deploy.profile.layers import layer_work
from alexnet_deploy.profile.limits import measure_limits
from alexnet_deploy.runners import registry
from alexnet_deploy.runners.openvino import INFERENCE_PRECISIONS, PERFORMANCE_HINT
from alexnet_deploy.runners.openvino_core import openvino_core


def compile_openvino(model) -> object:

    config = {"PERFORMANCE_HINT": PERFORMANCE_HINT, "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS["int8"]}
    return openvino_core().compile_model(model, "CPU", config)


def nncf_int8(fp32: onnx.ModelProto, calibration: np.ndarray, batch: int) -> object:
    """NNCF's default post-training quantization (mixed preset off: symmetric, as ours)."""
    import nncf
    import openvino

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fp32.onnx"
        onnx.save(to_standard_lrn(fp32), str(path))
        model = openvino.convert_model(str(path))
    chunks = [calibration[i : i + batch] for i in range(0, len(calibration), batch)]
    # subset_size counts the dataset's items, here batches, not images: every batch is used
    return nncf.quantize(model, nncf.Dataset(chunks), subset_size=len(chunks))


def infer_with(compiled) -> object:
    request = compiled.create_infer_request()

    def run(images: np.ndarray) -> np.ndarray:
        request.infer({0: images}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    return run


def node_times(model, images: np.ndarray, calls: int) -> list[tuple[str, str, float]]:
    """(node type, kernel, median ms) of each executed node of ``model`` compiled as
    ours is, PERF_COUNT on, over ``calls`` calls after a warm-up."""

    config = {"PERFORMANCE_HINT": PERFORMANCE_HINT, "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS["int8"]}
    request = openvino_core().compile_model(model, "CPU", config | {"PERF_COUNT": True}).create_infer_request()
    request.infer({0: images})
    times: dict[tuple[int, str, str], list[float]] = {}
    for _ in range(calls):
        request.infer({0: images})
        executed = (info for info in request.get_profiling_info() if str(info.status).endswith("EXECUTED"))
        for index, info in enumerate(executed):
            key = (index, info.node_type, info.exec_type)
            times.setdefault(key, []).append(info.real_time.total_seconds() * 1e3)
    return [(kind, kernel, statistics.median(values)) for (_, kind, kernel), values in times.items()]


def print_nodes(ours: list[tuple[str, str, float]], theirs: list[tuple[str, str, float]]) -> None:
    print("| ours: node | kernel | ms | NNCF: node | kernel | ms |\n|---|---|---|---|---|---|")
    blank = ("", "", float("nan"))
    for index in range(max(len(ours), len(theirs))):
        a = ours[index] if index < len(ours) else blank
        b = theirs[index] if index < len(theirs) else blank
        print(f"| {a[0]} | {a[1]} | {a[2]:.2f} | {b[0]} | {b[1]} | {b[2]:.2f} |")
    print(f"| total | | {sum(t for *_, t in ours):.1f} | total | | {sum(t for *_, t in theirs):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("export/alexnet.onnx"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=2, help="calls per model per round")
    parser.add_argument("--calib", type=int, default=500)
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--limit-size", type=int, default=2048)
    parser.add_argument("--nodes", action="store_true", help="also print both models' profiled nodes side by side")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    fp32 = load_verified(args.onnx)
    meta = export_metadata(fp32, str(args.onnx))
    source = (meta.data_source, meta.split, meta.preprocessing)
    calibration, _ = held_out_images(*source, "calibration", args.calib, meta.classes, meta.class_ids)
    val, labels = held_out_images(*source, "val", args.val, meta.classes, meta.class_ids)
    files = registry.ModelFiles(args.onnx, args.onnx.parent / "engines")
    ours = registry.open_runner("openvino", "int8", files).load()
    nncf_model = nncf_int8(fp32, calibration, args.batch)
    theirs = infer_with(compile_openvino(nncf_model))
    with registry.reference_runner(fp32) as reference_runner:
        reference = reference_runner.infer_all(val)
    fidelity = {}
    for name, run in (("ours", ours.infer), ("nncf", theirs)):
        logits = np.concatenate(
            [run(np.ascontiguousarray(val[i : i + args.batch])) for i in range(0, len(val), args.batch)]
        )
        match = parity(reference, logits, labels)
        fidelity[name] = {
            "top1_agreement": match.top1_agreement,
            "max_abs_diff": match.max_abs_diff,
            "top1": match.top1,
        }

    batch = np.ascontiguousarray(val[np.arange(args.batch) % len(val)])
    runs = {"ours": ours.infer, "nncf": theirs}
    for run in runs.values():
        run(batch)  # warm-up
    ips: dict[str, list[float]] = {name: [] for name in runs}
    int8_rates: list[float] = []
    for round_index in range(args.rounds):
        int8_rates.append(measure_limits(args.limit_size, 1).int8_gops)  # in the round, so under its load
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in order:
            start = time.perf_counter()
            for _ in range(args.iterations):
                runs[name](batch)
            ips[name].append(args.batch * args.iterations / (time.perf_counter() - start))
    ratios = [a / b for a, b in zip(ips["ours"], ips["nncf"], strict=True)]
    gops_per_image = 2 * sum(w.macs for w in layer_work(fp32)) / 1e9
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "batch": args.batch,
        "ips": ips,
        "median_ips": {name: statistics.median(values) for name, values in ips.items()},
        "ratio_ours_over_nncf": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "int8_gops": int8_rates,
        "share_of_int8_limit": {  # median over rounds of each round's img/s x GOP/image / that round's INT8 rate
            name: statistics.median(v * gops_per_image / r for v, r in zip(values, int8_rates, strict=True))
            for name, values in ips.items()
        },
        "fidelity": fidelity,
        "notes": ours.notes,
    }
    if args.nodes:
        with tempfile.TemporaryDirectory() as folder:  # our file as the runner compiles it (runners/openvino.py)
            path = Path(folder) / "ours.onnx"
            shipped = registry.BACKENDS["openvino"].artifact(files, "int8").path
            onnx.save(to_standard_lrn(load_model(shipped, require_plugin=False)), str(path))
            import openvino

            nodes = {"ours": node_times(openvino.convert_model(str(path)), batch, args.rounds)}
        nodes["nncf"] = node_times(nncf_model, batch, args.rounds)
        print_nodes(nodes["ours"], nodes["nncf"])
        report["nodes"] = nodes
    print(json.dumps({k: v for k, v in report.items() if k not in ("machine", "ips", "nodes")}, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
