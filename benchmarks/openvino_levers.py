"""Each lever issue 28 names for OpenVINO INT8, measured against the graph and settings
the project ships (``runners/openvino.py`` on the onnxruntime-layout INT8 file), side by
side in one run: throughput at ``--batch`` in interleaved rounds (the order alternating
per round, so load from other jobs hits all alike; ratio = median over rounds of each
round's ratio to the shipped row), and fidelity on the held-out val images (top-1
agreement and max |Δ logits| against onnxruntime FP32, the project's reference).

The levers, each a graph edit of the standard-op twin or a compile setting:

* ``conv1-pad-4`` / ``conv1-pad-8``: conv1's 3-channel input zero-padded to 4 or 8
  channels (an in-graph Pad; conv1's int8 weight padded with zero input channels), so
  the integer kernel's reduction dimension is a multiple of VNNI's 4.
* ``lrn-decomposed``: LRN written as standard ops (x², a 5-channel average as a 5-D
  AveragePool, ``(k + α·avg)^-β``, ×x) that OpenVINO can run in the convolutions'
  layout instead of reordering to its LRN kernel's blocked one.
* ``lrn-as-matmul`` / ``lrn-as-conv``: LRN as ``graph.lrn_as_window_sum`` writes it (x²,
  a banded channel-window sum as a MatMul over the channels or a 1x1 convolution,
  square roots, a division); the MatMul form is what the onnxruntime INT8 row runs.
* ``lrn-qdq-dropped``: the Q/DQ pair between conv's ReLU and the LRN removed (the LRN
  reads conv's float output; its output is still quantized, so pooling stays int8).
* ``pool-float``: the TensorRT-layout file, where pooling runs in float (Q/DQ after the
  pool, not before it).
* ``bf16-float-parts``: ``INFERENCE_PRECISION_HINT=bf16``: everything not integer (LRN,
  reorders, pooling in ``pool-float``) in bf16; only on a CPU with native bf16.
* ``fc-weights-in-by-out``: the fully connected weights stored [in, out] (MatMul, no
  transpose) instead of [out, in] (Gemm transB=1).
* ``throughput-2-streams``: THROUGHPUT hint with two streams, the batch split across two
  asynchronous requests.
* ``cpu-pinning``: ``ENABLE_CPU_PINNING``.

    python benchmarks/openvino_levers.py --onnx export/alexnet.onnx [--batch 128] [--rounds 5] [--json out.json]

docs/bench.md has the measured table and what was kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.doctor import machine_description
from alexnet_deploy.graph import load_model, load_verified, lrn_as_window_sum, to_standard_lrn
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.metrics import parity
from alexnet_deploy.runners import registry
from alexnet_deploy.runners.openvino import INFERENCE_PRECISIONS, PERFORMANCE_HINT, cpu_capabilities
from alexnet_deploy.runners.openvino_core import openvino_core

Infer = Callable[[np.ndarray], np.ndarray]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result


def _producer(graph: onnx.GraphProto, output: str) -> onnx.NodeProto:
    return next(node for node in graph.node if output in node.output)


def conv1_padded(model: onnx.ModelProto, channels: int) -> onnx.ModelProto:
    result = _copy(model)
    graph = result.graph
    conv1 = next(node for node in graph.node if node.op_type == "Conv")
    weight = next(t for t in graph.initializer if t.name == _producer(graph, conv1.input[1]).input[0])
    values = numpy_helper.to_array(weight)
    padded = np.zeros((values.shape[0], channels, *values.shape[2:]), values.dtype)
    padded[:, : values.shape[1]] = values
    weight.CopyFrom(numpy_helper.from_array(padded, weight.name))
    source = graph.input[0].name
    for node in graph.node:
        node.input[:] = [f"{source}_padded" if name == source else name for name in node.input]
    graph.initializer.append(
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, channels - values.shape[1], 0, 0], np.int64), "conv1_pads")
    )
    graph.node.insert(0, helper.make_node("Pad", [source, "conv1_pads"], [f"{source}_padded"]))
    return result


def conv1_space_to_depth(model: onnx.ModelProto, block: int = 4) -> onnx.ModelProto:
    """conv1 (k x k, stride ``block``) as a ceil(k / block)² stride-1 convolution over the
    input rearranged by SpaceToDepth: the same sums (the weight zero-padded to a multiple
    of ``block``), over block² x 3 = 48 input channels instead of 3."""
    result = _copy(model)
    graph = result.graph
    conv1 = next(node for node in graph.node if node.op_type == "Conv")
    attributes = {a.name: helper.get_attribute_value(a) for a in conv1.attribute}
    if list(attributes.get("strides", [1, 1])) != [block, block] or attributes.get("group", 1) != 1:
        raise ValueError(f"conv1 is not a stride-{block} ungrouped convolution")
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    dequantize = _producer(graph, conv1.input[1])
    weight = next(t for t in graph.initializer if t.name == dequantize.input[0])
    values = numpy_helper.to_array(weight)  # (out, in, k, k)
    out_channels, in_channels, kernel = values.shape[0], values.shape[1], values.shape[2]
    taps = -(-kernel // block)
    padded = np.zeros((out_channels, in_channels, taps * block, taps * block), values.dtype)
    padded[:, :, :kernel, :kernel] = values
    # SpaceToDepth's channel (row_offset x block + column_offset) x C + c holds input
    # pixel (block x row + row_offset, block x column + column_offset) of channel c
    rearranged = padded.reshape(out_channels, in_channels, taps, block, taps, block)
    rearranged = rearranged.transpose(0, 3, 5, 1, 2, 4).reshape(out_channels, block * block * in_channels, taps, taps)
    weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(rearranged), weight.name))
    source = graph.input[0].name
    height = graph.input[0].type.tensor_type.shape.dim[2].dim_value
    # rows the rearranged kernel reads beyond the image: pad them (and conv1's own pads) with zeros
    span = height + pads[0] + pads[2]
    extra = (-span) % block
    for node in graph.node:
        node.input[:] = [f"{source}_blocks" if name == source else name for name in node.input]
    graph.initializer.append(
        numpy_helper.from_array(
            np.array([0, 0, pads[0], pads[1], 0, 0, pads[2] + extra, pads[3] + extra], np.int64), "conv1_pads"
        )
    )
    graph.node.insert(0, helper.make_node("Pad", [source, "conv1_pads"], [f"{source}_padded"]))
    graph.node.insert(1, helper.make_node("SpaceToDepth", [f"{source}_padded"], [f"{source}_blocks"], blocksize=block))
    del conv1.attribute[:]
    conv1.attribute.extend([helper.make_attribute("kernel_shape", [taps, taps])])
    return result


def lrn_decomposed(model: onnx.ModelProto) -> onnx.ModelProto:
    result = _copy(model)
    graph = result.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "LRN":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        size, name = attributes["size"], node.name
        graph.initializer.extend(
            numpy_helper.from_array(np.array(value, dtype), f"{name}_{key}")
            for key, value, dtype in (
                ("alpha", attributes.get("alpha", 1e-4), np.float32),  # alpha/size x sum = alpha x average
                ("bias", attributes.get("bias", 1.0), np.float32),
                ("power", -attributes.get("beta", 0.75), np.float32),
                ("axis", [1], np.int64),
            )
        )
        x = node.input[0]
        nodes += [
            helper.make_node("Mul", [x, x], [f"{name}_squares"]),
            helper.make_node("Unsqueeze", [f"{name}_squares", f"{name}_axis"], [f"{name}_5d"]),
            helper.make_node(
                "AveragePool",
                [f"{name}_5d"],
                [f"{name}_average_5d"],
                kernel_shape=[size, 1, 1],
                pads=[(size - 1) // 2, 0, 0, size // 2, 0, 0],
                count_include_pad=1,
            ),
            helper.make_node("Squeeze", [f"{name}_average_5d", f"{name}_axis"], [f"{name}_average"]),
            helper.make_node("Mul", [f"{name}_average", f"{name}_alpha"], [f"{name}_scaled"]),
            helper.make_node("Add", [f"{name}_scaled", f"{name}_bias"], [f"{name}_base"]),
            helper.make_node("Pow", [f"{name}_base", f"{name}_power"], [f"{name}_factor"]),
            helper.make_node("Mul", [x, f"{name}_factor"], node.output),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return result


def lrn_qdq_dropped(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each LRN reads the tensor in front of the Q/DQ pair that feeds it."""
    result = _copy(model)
    graph = result.graph
    for lrn in (node for node in graph.node if node.op_type == "LRN"):
        dequantize = _producer(graph, lrn.input[0])
        if dequantize.op_type == "DequantizeLinear":
            lrn.input[0] = _producer(graph, dequantize.input[0]).input[0]
    onnx_graph_cleanup(graph)
    return result


def fc_weights_in_by_out(model: onnx.ModelProto) -> onnx.ModelProto:
    """Gemm(x, DQ(W[out, in]), transB=1) -> Gemm(x, DQ(W[in, out]), transB=0), same values."""
    result = _copy(model)
    graph = result.graph
    initializers = {t.name: t for t in graph.initializer}
    for gemm in (node for node in graph.node if node.op_type == "Gemm"):
        transposed = [a for a in gemm.attribute if a.name == "transB" and a.i == 1]
        dequantize = _producer(graph, gemm.input[1])
        if not transposed or dequantize.op_type != "DequantizeLinear":
            continue
        weight = initializers[dequantize.input[0]]
        weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(weight).T), weight.name))
        for attribute in dequantize.attribute:
            if attribute.name == "axis":
                attribute.i = 1
        transposed[0].i = 0
    return result


def onnx_graph_cleanup(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads (the bypassed Q/DQ pairs)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if not any(name in read for name in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def compile_infer(model: onnx.ModelProto, **settings) -> Infer:
    import openvino

    with tempfile.TemporaryDirectory() as folder:  # convert_model folds what read_model keeps (runners/openvino.py)
        path = Path(folder) / "model.onnx"
        onnx.save(model, str(path))
        converted = openvino.convert_model(str(path))
    config = {"PERFORMANCE_HINT": PERFORMANCE_HINT, "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS["int8"]}
    compiled = openvino_core().compile_model(converted, "CPU", config | settings)
    if settings.get("PERFORMANCE_HINT") == "THROUGHPUT":
        return _split_across_requests(compiled, int(settings.get("NUM_STREAMS", 2)))
    request = compiled.create_infer_request()

    def infer(images: np.ndarray) -> np.ndarray:
        request.infer({0: images}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    return infer


def _split_across_requests(compiled, parts: int) -> Infer:
    import openvino

    queue = openvino.AsyncInferQueue(compiled, parts)
    outputs: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, index: outputs.__setitem__(index, np.array(request.get_output_tensor(0).data)))

    def infer(images: np.ndarray) -> np.ndarray:
        chunks = np.array_split(images, min(parts, len(images)))
        for index, chunk in enumerate(chunks):
            queue.start_async({0: np.ascontiguousarray(chunk)}, index)
        queue.wait_all()
        return np.concatenate([outputs[index] for index in range(len(chunks))])

    return infer


def levers(shipped: onnx.ModelProto, pool_float: onnx.ModelProto) -> dict[str, Callable[[], Infer]]:
    candidates: dict[str, Callable[[], Infer]] = {
        "shipped": lambda: compile_infer(shipped),
        "conv1-pad-4": lambda: compile_infer(conv1_padded(shipped, 4)),
        "conv1-pad-8": lambda: compile_infer(conv1_padded(shipped, 8)),
        "conv1-space-to-depth": lambda: compile_infer(conv1_space_to_depth(shipped)),
        "lrn-decomposed": lambda: compile_infer(lrn_decomposed(shipped)),
        "lrn-as-matmul": lambda: compile_infer(lrn_as_window_sum(shipped)),
        "lrn-as-conv": lambda: compile_infer(lrn_as_window_sum(shipped, sum_by="conv")),
        "lrn-qdq-dropped": lambda: compile_infer(lrn_qdq_dropped(shipped)),
        "pool-float": lambda: compile_infer(pool_float),
        "fc-weights-in-by-out": lambda: compile_infer(fc_weights_in_by_out(shipped)),
        "throughput-2-streams": lambda: compile_infer(shipped, PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=2),
        "cpu-pinning": lambda: compile_infer(shipped, ENABLE_CPU_PINNING=True),
    }
    if "BF16" in cpu_capabilities():
        candidates["bf16-float-parts"] = lambda: compile_infer(shipped, INFERENCE_PRECISION_HINT="bf16")
    return candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("export/alexnet.onnx"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=0, help="calls per lever per round (0: ~1 s worth)")
    parser.add_argument("--only", default="", help="comma list of levers (shipped is always run)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    fp32 = load_verified(args.onnx)
    meta = export_metadata(fp32, str(args.onnx))
    val, labels = held_out_images(
        meta.data_source, meta.split, meta.preprocessing, "val", 512, meta.classes, meta.class_ids
    )
    files = registry.ModelFiles(args.onnx, args.onnx.parent / "engines")
    shipped_path = registry.BACKENDS["openvino"].artifact(files, "int8").path
    tensorrt_layout = args.onnx.with_name(args.onnx.stem + ".int8.onnx")
    shipped = to_standard_lrn(load_model(shipped_path, require_plugin=False))
    pool_float = to_standard_lrn(load_model(tensorrt_layout, require_plugin=False))
    wanted = {"shipped", *filter(None, args.only.split(","))}
    runs = {name: make() for name, make in levers(shipped, pool_float).items() if not args.only or name in wanted}
    with registry.reference_runner(fp32) as reference_runner:
        reference = reference_runner.infer_all(val)
    fidelity = {}
    for name, infer in runs.items():
        logits = np.concatenate([infer(np.ascontiguousarray(val[i : i + 64])) for i in range(0, len(val), 64)])
        match = parity(reference, logits, labels)
        fidelity[name] = {"top1_agreement": match.top1_agreement, "max_abs_diff": match.max_abs_diff}

    batch = np.ascontiguousarray(val[np.arange(args.batch) % len(val)])
    start = time.perf_counter()
    runs["shipped"](batch)
    iterations = args.iterations or max(1, round(1.0 / (time.perf_counter() - start)))
    ips: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.rounds):
        order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
        for name in order:
            runs[name](batch)  # warm-up after the other levers ran
            start = time.perf_counter()
            for _ in range(iterations):
                runs[name](batch)
            ips[name].append(args.batch * iterations / (time.perf_counter() - start))
    rows = []
    for name, values in ips.items():
        ratios = [v / s for v, s in zip(values, ips["shipped"], strict=True)]
        rows.append(
            {
                "lever": name,
                "img_s": statistics.median(values),
                "ratio": statistics.median(ratios),
                "ratio_range": [min(ratios), max(ratios)],
            }
            | fidelity[name]
        )
    print(f"batch {args.batch}, {args.rounds} rounds x {iterations} calls")
    print(
        "| lever | img/s | × shipped (range over rounds) | top-1 agreement | max abs Δ logits |\n|---|---|---|---|---|"
    )
    for row in rows:
        low, high = row["ratio_range"]
        print(
            f"| {row['lever']} | {row['img_s']:.1f} | {row['ratio']:.3f} ({low:.3f}-{high:.3f}) | "
            f"{row['top1_agreement']:.2%} | {row['max_abs_diff']:.4f} |"
        )
    if args.json is not None:
        report = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_description(),
            "batch": args.batch,
            "rounds": args.rounds,
            "iterations": iterations,
            "rows": rows,
            "ips": ips,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
