"""Is the bench harness's measured overhead real, or the method's noise?

Times, on one onnxruntime FP32 session of the main job's export at batch 128, two kinds
of interleaved pair checks, alternating, ``--repeats`` times each:

* **A/B**, what ``bench`` reports: one bench-loop iteration (``runner.infer`` through
  ``bench.timing.time_iterations``) against one bare ``session.run`` on the same input;
* **A/A**, the control: bare ``session.run`` against bare ``session.run``, the same
  pairing, ordering and statistics, where the true ratio is 1 by construction.

If the A/B medians sit inside the spread of the A/A medians, the harness costs nothing
the method can see, and a low A/B ratio in one run is noise. Each check runs a fixed
``--pairs`` (no early stop), so the two kinds are compared on equal terms. ``--load``
adds a busy-looping process per core beside the measurement (a shared machine).

    python benchmarks/harness_noise.py [--onnx export/alexnet.onnx] [--batch 128] [--pairs 10]
                                       [--repeats 5] [--load]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np

from alexnet_deploy.bench.timing import HARNESS_TOLERANCE, HarnessCheck, harness_overhead, median_interval
from alexnet_deploy.data.preprocessing import held_out_images
from alexnet_deploy.graph import load_model
from alexnet_deploy.metadata import export_metadata
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner


def a_a_check(runner: OnnxRuntimeRunner, batches: list[np.ndarray], pairs: int) -> HarnessCheck:
    """Bare against bare, paired and alternated exactly as :func:`harness_overhead` pairs."""
    first: list[float] = []
    second: list[float] = []
    for i in range(pairs):
        batch = batches[i % len(batches)]
        for first_turn in (True, False) if i % 2 == 0 else (False, True):
            start = time.perf_counter()
            runner.run_bare(batch)
            (first if first_turn else second).append((time.perf_counter() - start) * 1e3)
    return HarnessCheck(len(batches[0]), tuple(first), tuple(second))


def busy() -> None:
    while True:
        pass


def describe(name: str, checks: list[HarnessCheck]) -> str:
    ratios = [c.ratio for c in checks]
    verdicts = ", ".join(c.verdict for c in checks)
    widths = [c.interval[1] - c.interval[0] for c in checks if c.interval]
    return (
        f"  {name}: median ratio per check {', '.join(f'{r:.3f}' for r in ratios)}\n"
        f"      median of checks {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}; "
        f"95% interval width median {statistics.median(widths):.3f}; verdicts: {verdicts}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("export/alexnet.onnx"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load", action="store_true", help="a busy-looping process per core alongside")
    args = parser.parse_args()

    model = load_model(args.onnx, require_plugin=False)
    metadata = export_metadata(model, str(args.onnx))
    images, _ = held_out_images(metadata.data_source, metadata.split, metadata.preprocessing, "val")
    batches = [images[i : i + args.batch] for i in range(0, len(images) - args.batch + 1, args.batch)]
    hogs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(multiprocessing.cpu_count())]
    if args.load:
        for hog in hogs:
            hog.start()
    a_b: list[HarnessCheck] = []
    a_a: list[HarnessCheck] = []
    try:
        with OnnxRuntimeRunner(model, "fp32", "cpu") as runner:
            for _ in range(2):
                runner.infer(batches[0])  # warm-up
            for repeat in range(args.repeats):
                a_b.append(harness_overhead(runner, runner.run_bare, batches, args.pairs, args.pairs))
                a_a.append(a_a_check(runner, batches, args.pairs))
                print(
                    f"repeat {repeat + 1}/{args.repeats}: A/B {a_b[-1].ratio:.3f}, A/A {a_a[-1].ratio:.3f}", flush=True
                )
    finally:
        for hog in hogs:
            if hog.is_alive():
                hog.terminate()

    print(
        f"\nbatch {args.batch}, {args.pairs} pairs per check, {args.repeats} checks of each kind"
        f"{', a busy process per core alongside' if args.load else ''}; target >= {1 - HARNESS_TOLERANCE:.2f}"
    )
    print(describe("A/B bench loop vs bare session.run", a_b))
    print(describe("A/A bare vs bare (control)   ", a_a))
    pooled_ab = [r for c in a_b for r in c.pair_ratios]
    pooled_aa = [r for c in a_a for r in c.pair_ratios]
    for name, pooled in (("A/B", pooled_ab), ("A/A", pooled_aa)):
        interval = median_interval(pooled)
        assert interval is not None
        print(
            f"  pooled {name}: {len(pooled)} pairs, median {statistics.median(pooled):.4f}, "
            f"95% interval {interval[0]:.4f}-{interval[1]:.4f}"
        )


if __name__ == "__main__":
    main()
