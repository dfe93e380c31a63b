"""A perf_analyzer-style load test of a running Triton server: for each concurrency
level, that many client threads (one tritonclient each) send requests back to back
until the duration or the request budget runs out. Per level: throughput, latency
percentiles (the same ``LatencyStats`` as ``bench``), errors, and the server's own
batch-size histogram from its statistics API (the proof that dynamic batching batched).

Hand-written rather than perf_analyzer (``tritonclient[perf-analyzer]``): that is a
separate C++ binary, while these ~100 lines share the client, the error convention and
the report format with the rest of the package.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import DeployError
from ..graph import INPUT_NAME
from ..metrics import LatencyStats
from .client import TritonClassifier
from .config import ENSEMBLE, IMAGE_INPUT, LoadConfig


def parse_levels(text: str) -> tuple[int, ...]:
    levels = tuple(int(p) for p in text.split(",") if p.strip().isdigit() and int(p) > 0)
    if len(levels) != len(text.split(",")) or not levels:
        raise DeployError(f"--concurrency takes positive integers such as 1,4,16; got {text!r}")
    return levels


@dataclass
class LoadRow:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    images_per_s: float
    latency_ms: LatencyStats | None
    server_batches: dict[int, int] = field(default_factory=dict)  # batch size -> executions
    first_error: str | None = None

    @property
    def mean_server_batch(self) -> float | None:
        executions = sum(self.server_batches.values())
        return sum(b * n for b, n in self.server_batches.items()) / executions if executions else None


@dataclass
class LoadReport:
    config: LoadConfig
    measured_model: str  # whose batch statistics are reported
    rows: list[LoadRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        rows = [asdict(row) | {"mean_server_batch": row.mean_server_batch} for row in self.rows]
        return {"config": asdict(self.config), "measured_model": self.measured_model, "rows": rows}


def _payload(config: LoadConfig, client: TritonClassifier) -> dict[str, np.ndarray]:
    """Deterministic inputs: a 256x320 random-pixel PNG for the ensemble (the server
    decodes and resizes it, as a photo), else a normal (batch, 3, S, S) tensor."""
    rng = np.random.default_rng(0)
    if config.model == ENSEMBLE:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(buffer, "PNG")
        return {IMAGE_INPUT: np.frombuffer(buffer.getvalue(), np.uint8)}
    dims = client.model_input_dims(config.model, INPUT_NAME)
    return {INPUT_NAME: rng.standard_normal((config.batch, *dims)).astype(np.float32)}


def _batch_histogram(client: TritonClassifier, model: str) -> dict[int, int]:
    stats = client.statistics(model)
    return {int(s["batch_size"]): int(s["compute_infer"]["count"]) for s in stats.get("batch_stats", [])}


def _settled_batches(
    client: TritonClassifier, model: str, before: dict[int, int], expected_images: int
) -> dict[int, int]:
    """Executions per batch size since ``before``. Triton records an execution's
    statistics after it has sent the responses, so a client can see its last answer
    before the server has counted it: poll briefly until every image is accounted for."""
    deadline = time.perf_counter() + 2.0
    while True:
        after = _batch_histogram(client, model)
        batches = {b: n - before.get(b, 0) for b, n in sorted(after.items()) if n - before.get(b, 0) > 0}
        if sum(b * n for b, n in batches.items()) >= expected_images or time.perf_counter() > deadline:
            return batches
        time.sleep(0.02)


def _level(config: LoadConfig, payload: dict, measured: str, concurrency: int) -> LoadRow:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    budget = [config.requests]

    def take() -> bool:
        with lock:
            if budget[0] is None:
                return time.perf_counter() < deadline
            budget[0] -= 1
            return budget[0] >= 0

    def worker() -> None:
        with TritonClassifier(config.url, config.protocol, config.model) as client:
            while take():
                started = time.perf_counter()
                try:
                    client.infer_raw(payload)
                except DeployError as error:
                    with lock:
                        errors.append(str(error))
                    continue
                with lock:
                    latencies.append((time.perf_counter() - started) * 1e3)

    with TritonClassifier(config.url, config.protocol) as stats_client:
        before = _batch_histogram(stats_client, measured)
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        started = time.perf_counter()
        deadline = started + (config.duration_s or 0)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        done = len(latencies)
        batches = _settled_batches(stats_client, measured, before, expected_images=done * config.batch)
    return LoadRow(
        concurrency,
        done,
        len(errors),
        seconds,
        done / seconds,
        done * config.batch / seconds,
        LatencyStats.of(latencies) if latencies else None,
        batches,
        errors[0] if errors else None,
    )


def run_loadtest(config: LoadConfig) -> LoadReport:
    config.check()
    with TritonClassifier(config.url, config.protocol, config.model) as client:
        measured = client.batched_model(config.model)
        payload = _payload(config, client)
        before_warm_up = _batch_histogram(client, measured)
        client.infer_raw(payload)  # warm-up, and a wrong model/URL fails here with its message
        # The warm-up's execution is counted after its response is sent; wait for it, or
        # the first level's "before" snapshot can miss it and report it as its own.
        _settled_batches(client, measured, before_warm_up, expected_images=config.batch)
    report = LoadReport(config, measured)
    for concurrency in config.concurrency:
        report.rows.append(_level(config, payload, measured, concurrency))
    return report
