"""What serving is configured by, stated once: the served model names, the model
repository's scheduling, the server's ports and the load test's levels.

Light on purpose (no numpy, onnx or tritonclient): the CLI takes its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..choices import Protocol, RepositoryFlavour
from ..errors import DeployError

ENSEMBLE = "alexnet"  # bytes -> preprocess -> classifier: what clients call
PREPROCESS = "preprocess"
ONNX_MODEL = "alexnet_onnx"
IMAGE_INPUT = "IMAGE"  # encoded image bytes as UINT8 [-1] (see docs/serving.md for why not BYTES)
# Triton's conventional ports, which `serve` listens on unless told otherwise; the
# library's ServerConfig defaults to free ephemeral ports (tests, several servers).
TRITON_HTTP_PORT, TRITON_GRPC_PORT, TRITON_METRICS_PORT = 8000, 8001, 8002


def tensorrt_model_name(precision: str) -> str:
    return f"alexnet_tensorrt_{precision}"


def openvino_model_name(precision: str) -> str:
    return f"alexnet_openvino_{precision}"


def served_model_name(backend: str, precision: str) -> str:
    """The repository's model that classifies with ``backend`` at ``precision``."""
    if backend == "onnxruntime":
        return ONNX_MODEL
    return openvino_model_name(precision) if backend == "openvino" else tensorrt_model_name(precision)


@dataclass(frozen=True)
class RepositoryConfig:
    """Scheduling choices written into every classification model's config."""

    max_batch: int = 64  # alexnet_onnx; TensorRT models take their engine profile's max
    preferred_batches: tuple[int, ...] = (4, 8, 16)
    queue_delay_us: int = 2000  # how long the batcher may hold a request to grow a batch
    instances: int = 1  # per model; CPU here has 2 cores, one session uses both
    preprocess_instances: int = 2
    flavour: RepositoryFlavour | str = RepositoryFlavour.STOCK

    def check(self) -> None:
        if self.flavour not in RepositoryFlavour.values():
            raise DeployError(
                f"unknown repository flavour {str(self.flavour)!r}; choose from {', '.join(RepositoryFlavour.values())}"
            )
        if self.max_batch < 1 or self.instances < 1 or self.preprocess_instances < 1 or self.queue_delay_us < 0:
            raise DeployError("max batch and instance counts must be >= 1, queue delay >= 0")


@dataclass
class ServerConfig:
    repository: Path | None  # None (serve only): written from the export into a temporary folder
    http_port: int = 0  # 0: a free ephemeral port
    grpc_port: int = 0
    metrics_port: int = 0
    startup_timeout_s: float = 120.0
    shutdown_timeout_s: float = 30.0
    log: Path | None = None  # server stdout/stderr; None: a temporary file


@dataclass(frozen=True)
class LoadConfig:
    url: str
    protocol: Protocol | str = Protocol.HTTP
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float | None = 10.0  # per level; None when ``requests`` bounds it instead
    requests: int | None = None  # per level
    batch: int = 1
    model: str = ENSEMBLE  # the ensemble (encoded images) or a classification model (tensors)
    max_threads: int = 256

    def check(self) -> None:
        if self.protocol not in Protocol.values():
            raise DeployError(f"unknown protocol {str(self.protocol)!r}; choose from {', '.join(Protocol.values())}")
        if (self.duration_s is None) == (self.requests is None):
            raise DeployError("give exactly one of --duration and --requests")
        if (self.duration_s is not None and self.duration_s <= 0) or (self.requests is not None and self.requests < 1):
            raise DeployError("--duration and --requests must be positive")
        if self.batch < 1 or max(self.concurrency) > self.max_threads:
            raise DeployError(f"--batch must be >= 1 and --concurrency at most {self.max_threads}")
        if self.model == ENSEMBLE and self.batch != 1:
            raise DeployError(
                f"the {ENSEMBLE} ensemble takes one encoded image per request; use --model alexnet_onnx for --batch {self.batch}"
            )
