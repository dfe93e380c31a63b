"""bench: statistics on known samples, parity metrics on constructed logits, the timed
loop and the harness-overhead check with stand-in runners, the torch runner, and the
command end to end on CPU (onnxruntime and torch rows measured, tensorrt listed as
skipped with its reason), plus one clear line for each bad input. No assertion here
depends on how fast anything ran."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import assert_one_line_error
from PIL import Image
from typer.testing import CliRunner

from alexnet_deploy.bench import planning
from alexnet_deploy.bench.config import BACKENDS, BenchConfig
from alexnet_deploy.bench.inputs import Rotation
from alexnet_deploy.bench.run import run_bench
from alexnet_deploy.bench.timing import HarnessCheck, harness_overhead, median_interval, time_iterations
from alexnet_deploy.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from alexnet_deploy.cli import app
from alexnet_deploy.cli.options import parse_batches, parse_choices
from alexnet_deploy.data.preprocessing import Preprocessing
from alexnet_deploy.devices import cpu_bf16_unavailable_reason, cpu_precision_features
from alexnet_deploy.errors import BackendUnavailable, DeployError
from alexnet_deploy.export.run import export
from alexnet_deploy.graph import load_model
from alexnet_deploy.inference import Runner
from alexnet_deploy.lrn import OpaqueLRN
from alexnet_deploy.metrics import LatencyStats, parity, topk_accuracy
from alexnet_deploy.model import AlexNet, AlexNetConfig
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner
from alexnet_deploy.runners.registry import BF16_NOT_BUILT
from alexnet_deploy.runners.torch import TorchRunner, use_triton_lrn

cli = CliRunner()

ROW_KEYS = {
    "backend", "precision", "device", "batch", "throughput_ips", "latency_ms", "top1_agreement", "max_abs_diff",
    "top1", "top5", "gpu_compute_ms", "h2d_ms", "d2h_ms", "iterations", "stability", "notes", "skipped",
}  # fmt: skip
FAST = ["--iterations", "2", "--warmup", "1", "--max-images", "12"]


@pytest.fixture(scope="module")
def onnx_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """export/ as the pipeline leaves it after `export`: the FP32 reference only."""
    directory = tmp_path_factory.mktemp("export")
    export(tiny_checkpoint, directory / "alexnet.onnx")
    return directory


@pytest.fixture(scope="module")
def onnx_dir_with_fp16(onnx_dir, tmp_path_factory) -> Path:
    """export/ after `build --fp16`: the reference plus its FP16 twin."""
    pytest.importorskip("onnxconverter_common")
    from alexnet_deploy.build.run import save_onnx
    from alexnet_deploy.quantize.fp16 import to_fp16

    directory = tmp_path_factory.mktemp("export16")
    reference = load_model(onnx_dir / "alexnet.onnx")
    onnx.save(reference, str(directory / "alexnet.onnx"))
    save_onnx(to_fp16(reference), directory / "alexnet.fp16.onnx")
    return directory


def run_cli(*args: str):
    return cli.invoke(app, ["bench", *args])


def bench_args(onnx_dir: Path, checkpoint: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--onnx",
        str(onnx_dir / "alexnet.onnx"),
        "--checkpoint",
        str(checkpoint),
        "--engines",
        str(tmp_path / "engines"),
        *FAST,
        *extra,
    ]


# ------------------------------------------------------------------ statistics


def test_latency_stats_on_known_samples():
    stats = LatencyStats.of([50.0, 10.0, 40.0, 20.0, 30.0])
    # rank (n-1)q/100 in 10,20,30,40,50: p50 at 2 -> 30; p90 at 3.6 -> 46; p99 at 3.96 -> 49.6
    assert (stats.p50, stats.p90, stats.p99, stats.mean) == pytest.approx((30.0, 46.0, 49.6, 30.0))


@pytest.mark.parametrize("samples", [[5.0], [3.0, 1.0], list(range(1, 11)), [0.7, 12.0, 3.3, 3.3, 9.1, 0.2, 41.0]])
def test_latency_percentiles_are_numpys_linear_interpolation(samples):
    stats = LatencyStats.of(samples)
    assert (stats.p50, stats.p90, stats.p99) == pytest.approx([float(np.percentile(samples, q)) for q in (50, 90, 99)])


# --------------------------------------------------------------------- parity


def test_parity_on_constructed_logits():
    reference = np.array([[3.0, 1, 0, 0, 0, 0], [0, 3, 1, 0, 0, 0], [0, 0, 3, 1, 0, 0], [0, 0, 0, 3, 1, 0]], np.float32)
    candidate = reference.copy()
    candidate[1] = [0, 1, 3.5, 0, 0, 0]  # argmax moves from 1 to 2: |Δ| 2.5 at class 2
    labels = np.array([0, 1, 5, 3])
    result = parity(reference, candidate, labels)
    assert result.top1_agreement == pytest.approx(0.75)
    assert result.max_abs_diff == pytest.approx(2.5)
    assert result.top1 == pytest.approx(0.5)  # rows 0 and 3
    assert result.top5 == pytest.approx(0.75)  # row 2's label 5 has the lowest logit; the rest are in the top 5


def test_topk_accuracy_with_fewer_classes_than_k_counts_everything():
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]], np.float32)
    labels = np.array([2, 2])
    assert topk_accuracy(logits, labels, 1) == 0.0
    assert topk_accuracy(logits, labels, 2) == 0.5
    assert topk_accuracy(logits, labels, 5) == 1.0


def test_parity_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        parity(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros(2, int))


# --------------------------------------------------------- inputs and timing


def test_rotation_covers_the_pool_with_views_and_one_wrapped_batch():
    pool = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    rotation = Rotation.of(pool, 4)
    assert [b.ravel().tolist() for b in rotation.batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert np.shares_memory(rotation.batches[0], pool) and not np.shares_memory(rotation.batches[2], pool)
    assert all(b.flags.c_contiguous for b in rotation.batches)
    outputs = [np.repeat(b.reshape(-1, 1), 2, axis=1) * 10 for b in rotation.batches]
    assert rotation.per_image(outputs, 10)[:, 0].tolist() == [10.0 * i for i in range(10)]


def test_rotation_of_a_batch_larger_than_the_pool_repeats_images():
    rotation = Rotation.of(np.arange(3, dtype=np.float32).reshape(3, 1), 5)
    assert [b.ravel().tolist() for b in rotation.batches] == [[0, 1, 2, 0, 1]]


class CountingRunner(Runner):
    """Records every batch it is given; returns one logit row per image."""

    backend = "fake"

    def __init__(self, max_batch: int | None = None) -> None:
        super().__init__("fp32", "cpu")
        self.max_batch = max_batch
        self.seen: list[np.ndarray] = []

    def _load(self) -> None:
        """Nothing to load: this runner computes its logits from the images."""

    def _infer(self, images: np.ndarray) -> np.ndarray:
        self.seen.append(images)
        return np.zeros((len(images), 10), np.float32)


def test_timed_loop_warms_up_then_rotates_inputs():
    runner = CountingRunner().load()
    batches = [np.full((2, 1), i, np.float32) for i in range(3)]
    timing = time_iterations(runner, batches, warmup=2, iterations=5)
    assert len(runner.seen) == 7 and timing.iterations == 5 and len(timing.latencies_ms) == 5
    assert [int(b[0, 0]) for b in runner.seen] == [0, 1, 0, 1, 2, 0, 1]  # warm-up, then timed from batch 0
    assert timing.batch == 2 and timing.throughput_ips > 0
    assert len(timing.outputs) == 3  # the first pass over the batches, kept for parity


def test_timed_loop_by_duration_runs_at_least_once():
    runner = CountingRunner().load()
    timing = time_iterations(runner, [np.zeros((1, 1), np.float32)], warmup=0, iterations=None, duration_s=1e-9)
    assert timing.iterations == 1


def test_timed_loop_by_default_budget_stops_at_the_time_but_not_below_the_minimum():
    runner = CountingRunner().load()
    batches = [np.zeros((1, 1), np.float32)]
    timing = time_iterations(runner, batches, warmup=0, iterations=10, duration_s=1e-9, min_iterations=3)
    assert timing.iterations == 3
    assert time_iterations(runner, batches, warmup=0, iterations=10, duration_s=60, min_iterations=3).iterations == 10


class PacedRunner(CountingRunner):
    """Takes ``pace[i % len(pace)]`` seconds for its i-th call: a steady or a jumpy backend."""

    def __init__(self, pace: list[float]) -> None:
        super().__init__()
        self.pace = pace

    def _infer(self, images: np.ndarray) -> np.ndarray:
        time.sleep(self.pace[len(self.seen) % len(self.pace)])
        return super()._infer(images)


def test_a_steady_row_stops_once_its_last_three_windows_agree():
    runner = PacedRunner([0.002]).load()
    timing = time_iterations(
        runner, [np.zeros((1, 1), np.float32)], warmup=0, iterations=None, duration_s=30, window_s=0.02, tolerance=0.5
    )
    assert timing.stability.stable is True and timing.wall_s < 5  # long before its 30 s budget
    last = timing.stability.windows_ips[-3:]
    assert len(timing.stability.windows_ips) >= 3 and max(last) <= 1.5 * min(last)
    assert timing.stability.note() is None


def test_a_row_that_never_settles_runs_its_budget_and_says_unstable():
    runner = PacedRunner([0.001, 0.02]).load()  # every other window 5-20x slower
    timing = time_iterations(
        runner, [np.zeros((1, 1), np.float32)], warmup=0, iterations=None, duration_s=0.5, window_s=1e-6, tolerance=0.1
    )
    assert timing.wall_s >= 0.5 and timing.stability.stable is False
    assert timing.stability.spread > 0.3
    assert timing.stability.note().startswith("unstable (±")
    assert timing.stability.to_dict()["spread"] == timing.stability.spread


def test_a_fixed_count_is_not_cut_short_by_stability():
    runner = PacedRunner([0.001]).load()
    timing = time_iterations(runner, [np.zeros((1, 1), np.float32)], warmup=0, iterations=12, window_s=1e-6)
    assert timing.iterations == 12 and len(timing.stability.windows_ips) == 12


def test_harness_check_feeds_bench_loop_and_bare_call_the_same_inputs():
    runner, bare_inputs = CountingRunner().load(), []
    batches = [np.full((4, 1), i, np.float32) for i in range(3)]
    check = harness_overhead(runner, bare_inputs.append, batches, min_pairs=4, max_pairs=4)
    assert [int(b[0, 0]) for b in runner.seen] == [int(b[0, 0]) for b in bare_inputs] == [0, 1, 2, 0]
    assert check.batch == 4 and check.iterations == 4 and check.bench_ips > 0 and check.bare_ips > 0


def pairs(ratios: list[float]) -> HarnessCheck:
    """A check whose bare/bench pair ratios are ``ratios`` (bench calls of 100 ms)."""
    return HarnessCheck(128, bench_ms=tuple(100.0 for _ in ratios), bare_ms=tuple(100.0 * r for r in ratios))


def test_median_interval_is_the_binomial_order_statistic_interval():
    # n = 10: P(B(10, 1/2) <= 1) = 11/1024, so [x(2), x(9)] covers the median with 97.9%;
    # [x(3), x(8)] would leave 2 * 56/1024 = 10.9% outside, more than 5%.
    assert median_interval(list(range(10))) == (1, 8)
    assert median_interval(list(range(6))) == (0, 5)  # 6 pairs: the range, 96.9%
    assert median_interval(list(range(5))) is None  # 5: even the range covers only 93.8%
    assert median_interval(list(range(20))) == (5, 14)  # the textbook [x(6), x(15)]


def test_harness_verdict_needs_the_whole_interval_on_one_side_of_the_target():
    assert pairs([0.99, 0.995, 1.0, 1.01, 0.985, 1.0]).verdict == "holds"
    assert pairs([0.96, 0.97, 0.965, 0.95, 0.975, 0.96]).verdict == "FAILS"
    noisy = pairs([0.936, 1.02, 0.99, 0.95, 1.01, 0.97])  # the 0.936 is one of them
    assert noisy.verdict == "inconclusive" and not noisy.holds
    assert "95% interval 0.936-1.020" in noisy.summary() and "inconclusive" in noisy.summary()
    assert pairs([0.99, 1.0, 1.0]).verdict == "inconclusive"  # too few pairs for any interval
    assert pairs([0.99, 1.0, 1.0]).to_dict()["interval95"] is None


def test_harness_check_verdict_is_the_median_paired_ratio():
    steady = HarnessCheck(128, bench_ms=(101.0, 100.0, 102.0), bare_ms=(100.0, 99.0, 100.0))
    assert steady.ratio == pytest.approx(0.99)  # pairs: 0.990, 0.990, 0.980
    slow = HarnessCheck(128, bench_ms=(103.0, 103.0, 103.0), bare_ms=(100.0, 100.0, 100.0))
    assert "median bare/bench time 0.971" in slow.summary()
    spiked = HarnessCheck(128, bench_ms=(100.0, 150.0, 100.0), bare_ms=(100.0, 100.0, 100.0))
    assert spiked.ratio == 1.0 and spiked.bench_ips < spiked.bare_ips  # one spike moves the totals, not the median
    assert steady.bench_ips == pytest.approx(128 * 3 / 0.303)


class ScriptedHarness:
    """A bench runner and a bare call whose times follow a script: the harness check's
    stopping rule seen without a clock (``time.perf_counter`` is replaced)."""

    def __init__(self, bench_ms: float, bare_ms: list[float]) -> None:
        self.now, self.bench_ms, self.bare_ms = 0.0, bench_ms, list(bare_ms)

    def clock(self) -> float:
        return self.now

    def bare(self, _batch) -> None:
        self.now += self.bare_ms.pop(0) / 1e3


def test_harness_check_stops_once_the_verdict_is_settled_and_goes_on_while_it_is_not(monkeypatch):
    import alexnet_deploy.bench.timing as timing_module

    def run(bare_ms: list[float]) -> HarnessCheck:
        script = ScriptedHarness(100.0, bare_ms)
        runner = CountingRunner().load()
        original_infer = runner.infer

        def timed_infer(batch):
            script.now += script.bench_ms / 1e3
            return original_infer(batch)

        monkeypatch.setattr(runner, "infer", timed_infer)
        monkeypatch.setattr(timing_module.time, "perf_counter", script.clock)
        return harness_overhead(runner, script.bare, [np.zeros((4, 1), np.float32)], min_pairs=6, max_pairs=12)

    assert run([100.0] * 12).iterations == 6  # quiet: settled at the minimum
    noisy = run([93.6, 102.0, 99.0, 95.0, 101.0, 97.0] * 2)
    assert noisy.iterations == 12 and noisy.verdict == "inconclusive"  # up to the cap, then said so


# ---------------------------------------------------------------- options


def test_batch_list_parses_and_bad_batches_are_rejected():
    assert parse_batches("128") == (128,)
    assert parse_batches("1, 8,32,128") == (1, 8, 32, 128)
    for bad in ("0", "-1", "abc", "8,", "1.5", "8,8"):
        with pytest.raises(DeployError):
            parse_batches(bad)


def test_choices_name_the_unknown_value():
    assert parse_choices("torch,onnxruntime", BACKENDS, "--backends") == ("torch", "onnxruntime")
    with pytest.raises(DeployError, match="unknown backend 'tflite'"):
        parse_choices("torch,tflite", BACKENDS, "--backends")


# --------------------------------------------------------------- torch runner


@pytest.fixture(scope="module")
def val_images(tiny_checkpoint) -> np.ndarray:
    from alexnet_deploy.export.run import validation_images

    images, _ = validation_images(load_checkpoint(tiny_checkpoint), count=6)
    return images


def test_torch_runner_fp32_matches_the_onnxruntime_reference(tiny_checkpoint, onnx_dir, val_images):
    with TorchRunner(tiny_checkpoint) as runner, OnnxRuntimeRunner(onnx_dir / "alexnet.onnx") as reference:
        np.testing.assert_allclose(runner.infer(val_images), reference.infer(val_images), atol=1e-4)
        assert runner.last_timing is None  # stage timing is a CUDA-only measurement


def test_torch_runner_runs_fp16_on_cuda_only(tiny_checkpoint):
    with pytest.raises(BackendUnavailable, match="FP16 on CUDA only"):
        TorchRunner(tiny_checkpoint, "fp16", "cpu").load()


def test_torch_runner_skips_bf16_on_a_cpu_without_native_bf16(tiny_checkpoint, monkeypatch):
    import alexnet_deploy.runners.torch as torch_runner

    monkeypatch.setattr(torch_runner, "cpu_bf16_unavailable_reason", lambda: cpu_bf16_unavailable_reason(("avx512f",)))
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        TorchRunner(tiny_checkpoint, "bf16", "cpu").load()


def test_cpu_features_come_from_cpuinfo_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 ht\n")
    assert cpu_precision_features(cpuinfo) == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert cpu_bf16_unavailable_reason(("avx512f", "avx512_bf16")) is None
    assert cpu_precision_features(tmp_path / "absent") == ()


def test_torch_runner_on_cpu_is_channels_last(tiny_checkpoint, onnx_dir, val_images):
    with TorchRunner(tiny_checkpoint) as runner:
        assert runner.model.features.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert runner.notes == ["channels-last (NHWC) on CPU"]


@pytest.mark.skipif(cpu_bf16_unavailable_reason() is not None, reason="this CPU has no native bf16")
def test_torch_runner_bf16_agrees_with_the_reference(tiny_checkpoint, onnx_dir, val_images):
    with TorchRunner(tiny_checkpoint, "bf16") as runner, OnnxRuntimeRunner(onnx_dir / "alexnet.onnx") as reference:
        logits, expected = runner.infer(val_images), reference.infer(val_images)
        assert logits.dtype == np.float32 and runner.model.features.conv1.weight.dtype == torch.bfloat16
    np.testing.assert_allclose(logits, expected, atol=0.05 * np.abs(expected).max())  # bf16 keeps 8 bits of mantissa


def test_torch_runner_has_no_int8_path(tiny_checkpoint):
    with pytest.raises(BackendUnavailable, match="no INT8 path; use onnxruntime or tensorrt"):
        TorchRunner(tiny_checkpoint, "int8").load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_torch_runner_on_cuda_without_a_gpu_is_unavailable(tiny_checkpoint):
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        TorchRunner(tiny_checkpoint, device="cuda").load()


def test_failed_compile_falls_back_to_eager_and_says_so(tiny_checkpoint, val_images, monkeypatch):
    def broken_compile(model, **options):
        def compiled(x):
            raise RuntimeError("inductor exploded\nlong traceback")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    with TorchRunner(tiny_checkpoint, compile=True) as runner, TorchRunner(tiny_checkpoint) as eager:
        np.testing.assert_array_equal(runner.infer(val_images), eager.infer(val_images))
        assert runner.backend == "torch-compile"
        assert runner.notes == [
            "channels-last (NHWC) on CPU",
            "torch.compile failed (RuntimeError: inductor exploded); ran eager",
        ]


@pytest.mark.slow  # inductor compiles the network for C++: about half a minute on 2 cores
def test_torch_compile_row_is_compiled_timed_and_agrees(tiny_checkpoint, onnx_dir, tmp_path):
    out = tmp_path / "out.json"
    options = ("--batch", "4", "--backends", "torch-compile", "--precisions", "fp32", "--device", "cpu")
    result = run_cli(*bench_args(onnx_dir, tiny_checkpoint, tmp_path, *options), "--json", str(out))
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    assert (row["backend"], row["precision"], row["batch"], row["skipped"]) == ("torch-compile", "fp32", 4, None)
    assert not [note for note in row["notes"] if "torch.compile failed" in note], row["notes"]  # compiled, not eager
    assert row["throughput_ips"] > 0 and row["iterations"] == 2
    assert row["top1_agreement"] == 1.0 and row["max_abs_diff"] <= 1e-4


def test_cuda_forward_swaps_every_lrn_for_the_triton_kernel(tiny_checkpoint):
    model = use_triton_lrn(load_checkpoint(tiny_checkpoint).build_model())
    assert isinstance(model.features.norm1, OpaqueLRN) and isinstance(model.features.norm2, OpaqueLRN)
    assert model.features.norm1.params == load_checkpoint(tiny_checkpoint).config.lrn


# TRITON_INTERPRET must be set before triton is imported, hence a child process (as in test_kernel)
TRITON_NETWORK = """
import sys, numpy as np, torch
from alexnet_deploy.checkpoint import load_checkpoint
from alexnet_deploy.runners.torch import use_triton_lrn
model = load_checkpoint(sys.argv[1]).build_model()
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.inference_mode():
    np.save(sys.argv[3], use_triton_lrn(model)(x).numpy())
"""


def test_network_with_the_triton_lrn_matches_the_reference(tiny_checkpoint, onnx_dir, val_images, tmp_path):
    """The CUDA forward's network (LRN through the custom op and the Triton kernel), run
    in Triton's CPU interpreter, against onnxruntime's standard-op twin."""
    pytest.importorskip("triton")
    np.save(tmp_path / "x.npy", val_images[:2])
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [
        sys.executable,
        "-c",
        TRITON_NETWORK,
        str(tiny_checkpoint),
        str(tmp_path / "x.npy"),
        str(tmp_path / "y.npy"),
    ]
    subprocess.run(command, env=env, check=True, timeout=600)
    with OnnxRuntimeRunner(onnx_dir / "alexnet.onnx") as reference:
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference.infer(val_images[:2]), atol=1e-4)


# ---------------------------------------------------------------- end to end


def test_bench_on_cpu_measures_onnxruntime_and_torch_and_skips_tensorrt(tiny_checkpoint, onnx_dir, tmp_path):
    out = tmp_path / "out.json"
    args = bench_args(
        onnx_dir,
        tiny_checkpoint,
        tmp_path,
        "--batch",
        "4,8",
        "--backends",
        "tensorrt,onnxruntime,torch",
        "--device",
        "cpu",
    )
    result = run_cli(*args, "--json", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report) == ["date", "machine", "config", "reference", "images", "results", "harness_overhead"]
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in report["results"]}
    # 3 backends x 4 precisions, plus onnxruntime's simulated TensorRT INT8 graph, at 2 batches
    assert len(rows) == (3 * 4 + 1) * 2 and all(set(r) == ROW_KEYS for r in rows.values())

    for backend in ("onnxruntime", "torch"):
        for batch in (4, 8):
            row = rows[(backend, "fp32", batch)]
            assert row["skipped"] is None and row["device"] == "cpu" and row["iterations"] == 2
            assert row["throughput_ips"] > 0 and set(row["latency_ms"]) == {"p50", "p90", "p99", "mean"}
            assert row["top1_agreement"] == 1.0 and row["max_abs_diff"] <= 1e-4
            assert 0 <= row["top1"] <= row["top5"] <= 1
    # the reference session itself; only the batch differs (4 here, 64 for the reference),
    # and onnxruntime's CPU GEMM blocking rounds differently per batch (~1e-7)
    assert rows[("onnxruntime", "fp32", 4)]["max_abs_diff"] <= 1e-6

    for precision in ("fp32", "fp16", "bf16", "int8"):
        skipped = rows[("tensorrt", precision, 8)]
        assert skipped["skipped"] and skipped["throughput_ips"] is None and skipped["latency_ms"] is None
    assert rows[("torch", "int8", 4)]["skipped"] == "the torch backend runs fp32, fp16, bf16, not int8"
    assert "alexnet-deploy build --fp16" in rows[("onnxruntime", "fp16", 4)]["skipped"]
    assert rows[("onnxruntime", "bf16", 4)]["skipped"] == BF16_NOT_BUILT
    assert "channels-last (NHWC) on CPU" in rows[("torch", "fp32", 4)]["notes"]

    assert [h["batch"] for h in report["harness_overhead"]] == [4, 8]
    assert "harness overhead at batch 8" in result.stdout and "skipped" in result.stdout
    with Image.open(out.with_suffix(".png")) as plot:  # the plot goes beside --json by default
        assert plot.format == "PNG" and plot.size == (800, 500)


def test_fp16_onnx_is_measured_and_a_missing_int8_is_a_skipped_row(tiny_checkpoint, onnx_dir_with_fp16, tmp_path):
    config = BenchConfig(
        batches=(4,), backends=("onnxruntime",), iterations=1, warmup=0, onnx=onnx_dir_with_fp16 / "alexnet.onnx",
        engines_dir=tmp_path, checkpoint=tiny_checkpoint, max_images=64,
    )  # fmt: skip
    rows = {r.precision: r for r in run_bench(config).rows}
    # FP16 on the learned test model: |Δ| 2e-3 of logits up to 7 measured (test_precision_accuracy.py)
    assert rows["fp16"].skipped is None and rows["fp16"].max_abs_diff < 1e-2 and rows["fp16"].top1_agreement >= 0.98
    assert (
        rows["int8"].skipped
        == f"{onnx_dir_with_fp16 / 'alexnet.int8-ort.onnx'} not found; run `alexnet-deploy build --int8`"
    )
    assert (
        rows["int8-sim"].skipped
        == f"{onnx_dir_with_fp16 / 'alexnet.int8.onnx'} not found; run `alexnet-deploy build --int8`"
    )


def test_int8_rows_time_the_onnxruntime_graph_and_report_the_tensorrt_graph_as_simulated(
    tiny_checkpoint, onnx_dir, tmp_path
):
    from alexnet_deploy.build.run import save_onnx
    from alexnet_deploy.quantize.calibration import quantized_activations
    from alexnet_deploy.quantize.onnxruntime import insert_qdq_for_onnxruntime, output_activations
    from alexnet_deploy.quantize.qdq import insert_qdq

    reference = load_model(onnx_dir / "alexnet.onnx")
    amax = dict.fromkeys(quantized_activations(reference) + output_activations(reference), 8.0)
    onnx.save(reference, str(tmp_path / "alexnet.onnx"))
    save_onnx(insert_qdq(reference, amax), tmp_path / "alexnet.int8.onnx")
    save_onnx(insert_qdq_for_onnxruntime(reference, amax), tmp_path / "alexnet.int8-ort.onnx")
    config = BenchConfig(
        batches=(4,), backends=("onnxruntime",), precisions=("int8",), iterations=1, warmup=0, onnx=tmp_path / "alexnet.onnx",
        engines_dir=tmp_path, checkpoint=tiny_checkpoint, max_images=8,
    )  # fmt: skip
    rows = {r.precision: r for r in run_bench(config).rows}
    assert list(rows) == ["int8", "int8-sim"] and all(r.skipped is None and r.max_abs_diff > 0 for r in rows.values())
    assert "onnxruntime-targeted" in rows["int8"].notes[0] and "simulated" in rows["int8-sim"].notes[0]
    # each row ran its own graph: their logits differ (one is integer arithmetic, one float)
    assert rows["int8"].max_abs_diff != rows["int8-sim"].max_abs_diff


def test_single_batch_plots_accuracy_against_throughput(tiny_checkpoint, onnx_dir, tmp_path):
    plot = tmp_path / "bench.png"
    args = bench_args(
        onnx_dir, tiny_checkpoint, tmp_path, "--batch", "4", "--backends", "onnxruntime", "--precisions", "fp32"
    )
    result = run_cli(*args, "--plot", str(plot))
    assert result.exit_code == 0, result.output
    with Image.open(plot) as image:
        assert image.format == "PNG"


def test_old_directory_spellings_still_work_and_are_hidden(tiny_checkpoint, onnx_dir, tmp_path):
    """--onnx-dir/--engines-dir are hidden aliases of --onnx/--engines for one release."""
    old = ["--onnx-dir", str(onnx_dir), "--checkpoint", str(tiny_checkpoint), "--engines-dir", str(tmp_path), *FAST]
    result = run_cli(
        *old, "--batch", "4", "--backends", "onnxruntime", "--precisions", "fp32", "--json", str(tmp_path / "b.json")
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b.json").read_text())["config"]["onnx"] == str(onnx_dir / "alexnet.onnx")
    help_text = cli.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).output
    assert "--onnx " in help_text and "--engines " in help_text
    assert "--onnx-dir" not in help_text and "--engines-dir" not in help_text


@pytest.fixture
def tensorrt_present(monkeypatch):
    """Pretend TensorRT, pycuda and a GPU are here, so only the engine file decides."""
    import alexnet_deploy.tensorrt.availability

    monkeypatch.setattr(alexnet_deploy.tensorrt.availability, "tensorrt_unavailable_reason", lambda: None)
    monkeypatch.setattr(alexnet_deploy.tensorrt.availability, "runner_unavailable_reason", lambda: None)


def test_missing_engine_is_an_error_when_its_precision_was_named(tiny_checkpoint, onnx_dir, tmp_path, tensorrt_present):
    args = bench_args(onnx_dir, tiny_checkpoint, tmp_path, "--backends", "tensorrt", "--precisions", "fp16")
    assert_one_line_error(run_cli(*args), "alexnet.fp16.plan not found; run `alexnet-deploy build --fp16`")


def write_engine(engines: Path, precision: str, max_batch: int) -> None:
    """A stand-in plan and the sidecar `build` writes beside it (only the profile matters)."""
    from alexnet_deploy.tensorrt.sidecar import BatchProfile, EngineSidecar

    engines.mkdir(exist_ok=True)
    (engines / f"alexnet.{precision}.plan").write_bytes(b"not a real engine")
    profile = BatchProfile("images", [1, 3, 227, 227], [max_batch, 3, 227, 227], [max_batch, 3, 227, 227])
    sidecar = EngineSidecar(
        "alexnet.plan", precision, "10.9", "GPU", "9.0", profile, "alexnet.onnx", "0", 1.0, 4.0, False, "lrn", "now", []
    )
    (engines / f"alexnet.{precision}.json").write_text(sidecar.to_json())


def test_batch_above_the_engine_profile_is_one_line_before_any_timing(
    tiny_checkpoint, onnx_dir, tmp_path, tensorrt_present
):
    write_engine(tmp_path / "engines", "fp16", max_batch=4)
    args = bench_args(onnx_dir, tiny_checkpoint, tmp_path, "--precisions", "fp16", "--batch", "2,8")
    result = run_cli(*args)
    assert_one_line_error(result, "batch 8 exceeds")
    assert "alexnet.fp16.plan's profile maximum 4; rebuild with `alexnet-deploy build --max-batch 8`" in result.stderr


def test_a_runner_refuses_a_batch_above_its_maximum_mid_run(tiny_checkpoint, onnx_dir, tmp_path, monkeypatch):
    """The backstop when only the loaded runner knows its limit."""

    def limited(context, name, precision):
        return planning.Planned(name, precision, "cuda", open=lambda: CountingRunner(max_batch=4))

    monkeypatch.setattr(planning, "plan_row", limited)
    config = BenchConfig(
        batches=(2, 8), backends=("tensorrt",), onnx=onnx_dir / "alexnet.onnx", checkpoint=tiny_checkpoint, max_images=4
    )
    with pytest.raises(DeployError, match="batch 8 exceeds fake/fp32's maximum 4"):
        run_bench(config)


def test_missing_engine_is_a_skipped_row_by_default(tiny_checkpoint, onnx_dir, tmp_path, tensorrt_present):
    config = BenchConfig(
        batches=(2,), backends=("tensorrt",), onnx=onnx_dir / "alexnet.onnx", engines_dir=tmp_path, checkpoint=tiny_checkpoint,
        iterations=1, max_images=4,
    )  # fmt: skip
    assert [r.skipped for r in run_bench(config).rows] == [
        f"{tmp_path / f'alexnet.{p}.plan'} not found; run `alexnet-deploy build --{p}`" for p in ("fp32", "fp16")
    ] + [BF16_NOT_BUILT, f"{tmp_path / 'alexnet.int8.plan'} not found; run `alexnet-deploy build --int8`"]


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory) -> Path:
    config = AlexNetConfig(num_classes=10, width=0.0625)
    path = tmp_path_factory.mktemp("other") / "other.pt"
    save_checkpoint(
        Checkpoint(config, AlexNet(config).state_dict(), [str(i) for i in range(10)], Preprocessing(), "digits"), path
    )
    return path


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--backends", "onnxruntime,tflite"], "unknown backend 'tflite'; choose from tensorrt, onnxruntime, openvino, torch"),
        (["--precisions", "fp32,fp8"], "unknown precision 'fp8'; choose from fp32, fp16, bf16, int8"),
        (["--batch", "0"], "--batch takes positive integers"),
        (["--batch=-4"], "--batch takes positive integers"),
        (["--batch", "32,big"], "got 'big'"),
        (["--iterations", "0"], "--iterations must be at least 1"),
        (["--duration", "5"], "give --iterations or --duration, not both"),
        (["--warmup", "-1"], "--warmup must be 0 or more"),
        (["--device", "tpu"], "'tpu' is not one of 'auto', 'cpu', 'cuda'"),  # Typer checks the Enum
        (["--json", "/nonexistent-dir/out.json"], "output directory /nonexistent-dir does not exist"),
        (["--plot", "/nonexistent-dir/out.png"], "output directory /nonexistent-dir does not exist"),
        (["--precisions", "fp16", "--backends", "onnxruntime"], "alexnet.fp16.onnx not found; run `alexnet-deploy build --fp16`"),
    ],
    ids=[
        "backend", "precision", "batch-zero", "batch-negative", "batch-word", "iterations", "iterations-and-duration",
        "warmup", "device", "json-path", "plot-path", "missing-named-onnx",
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(tiny_checkpoint, onnx_dir, tmp_path, extra, fragment):
    assert_one_line_error(run_cli(*bench_args(onnx_dir, tiny_checkpoint, tmp_path, *extra)), fragment)


def test_missing_reference_onnx_is_one_line(tiny_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli(*bench_args(tmp_path / "empty", tiny_checkpoint, tmp_path))
    assert_one_line_error(result, "reference ONNX")
    assert "run `alexnet-deploy export` first" in result.stderr


def test_checkpoint_the_onnx_did_not_come_from_is_one_line(other_checkpoint, onnx_dir, tmp_path):
    result = run_cli(*bench_args(onnx_dir, other_checkpoint, tmp_path, "--backends", "torch"))
    assert_one_line_error(result, "is not the checkpoint")
