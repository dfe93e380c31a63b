"""Served throughput vs in-process onnxruntime, and startup time, in one run.

Starts the local Triton server (``alexnet-deploy serve``'s repository: the python
backend runs our onnxruntime runner), then on the same machine, one after the other:

* in process: ``OnnxRuntimeRunner.infer`` on batches of ``--batch`` (default 16, the
  largest preferred batch in the repository's dynamic-batching config) for ``--duration``;
* served: ``loadtest`` with ``--concurrency`` (default 16) client threads sending
  batch-1 requests to ``alexnet_onnx`` (preprocessed tensors: like for like with the
  in-process row) and to the ``alexnet`` ensemble (PNG bytes; decoding included).

The goal in issue 12 is served >= 0.8x in-process. On a CPU-only machine the clients,
the server and the model share the same cores, so the figures are CPU figures.

    python benchmarks/serving.py [--onnx export/alexnet.onnx] [--duration 20] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from alexnet_deploy.graph import load_model
from alexnet_deploy.runners.onnxruntime import OnnxRuntimeRunner
from alexnet_deploy.serve.config import LoadConfig, RepositoryConfig, ServerConfig
from alexnet_deploy.serve.loadtest import run_loadtest
from alexnet_deploy.serve.predict import ModelInfo
from alexnet_deploy.serve.repository import write_repository
from alexnet_deploy.serve.server import TritonServer


def in_process_ips(onnx: Path, batch: int, duration: float) -> float:
    size = ModelInfo.of(load_model(onnx, require_plugin=False), str(onnx)).preprocessing.crop
    images = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    with OnnxRuntimeRunner(onnx) as runner:
        runner.infer(images)  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < duration:
            runner.infer(images)
            done += batch
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=Path("export/alexnet.onnx"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        repository = write_repository(args.onnx, Path(scratch) / "repo", config=RepositoryConfig(flavour="local")).path
        with TritonServer(ServerConfig(repository, startup_timeout_s=300)) as server:
            startup = server.startup_s
            served = {}
            for model, protocol in (("alexnet_onnx", "grpc"), ("alexnet", "grpc")):
                config = LoadConfig(server.grpc_url, protocol, (args.concurrency,), args.duration, None, 1, model)
                served[model] = run_loadtest(config).rows[0]
    local = in_process_ips(args.onnx, args.batch, args.duration)

    load = os.getloadavg()
    lines = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} CPU, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} (shared with other jobs), {args.onnx}, {args.duration:.0f} s per row",
        "",
        f"Startup (launch to ready, 3 python-backend stubs importing torch/onnxruntime): {startup:.1f} s",
        "",
        "| row | img/s | p50 ms | p99 ms | server batches (size×executions) | vs in-process |",
        "|---|---|---|---|---|---|",
        f"| in-process onnxruntime, batch {args.batch} | {local:.1f} | | | | 1.00× |",
    ]
    for model, row in served.items():
        histogram = " ".join(f"{b}×{n}" for b, n in row.server_batches.items())
        what = "tensors" if model == "alexnet_onnx" else "PNG bytes, server-side preprocess"
        lines.append(
            f"| served `{model}` ({what}), {args.concurrency} gRPC clients × batch 1 | {row.images_per_s:.1f} | "
            f"{row.latency_ms.p50:.0f} | {row.latency_ms.p99:.0f} | {histogram} | {row.images_per_s / local:.2f}× |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
