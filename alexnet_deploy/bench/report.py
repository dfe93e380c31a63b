"""What a bench run found: one :class:`BenchRow` per backend x precision x batch, and
the :class:`BenchReport` that holds them with the harness checks and the machine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..metrics import LatencyStats
from .config import BenchConfig
from .timing import HarnessCheck


@dataclass
class BenchRow:
    """One backend x precision x batch. Keys are stable; what was not measured is None."""

    backend: str
    precision: str
    device: str
    batch: int
    throughput_ips: float | None = None
    latency_ms: LatencyStats | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    top1: float | None = None
    top5: float | None = None
    gpu_compute_ms: float | None = None  # median of the runner's CUDA-event stage times
    h2d_ms: float | None = None
    d2h_ms: float | None = None
    iterations: int | None = None
    stability: dict | None = None  # timing.Stability.to_dict(): each window's img/s, the spread, the verdict
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BenchReport:
    rows: list[BenchRow]
    harness: list[HarnessCheck]
    images: int
    image_source: str
    reference: str
    config: BenchConfig
    machine: dict
    date: str

    @property
    def measured(self) -> list[BenchRow]:
        return [r for r in self.rows if r.skipped is None]

    def to_dict(self) -> dict:
        return {
            "date": self.date,
            "machine": self.machine,
            "config": self.config.to_dict(),
            "reference": self.reference,
            "images": {"count": self.images, "source": self.image_source},
            "results": [r.to_dict() for r in self.rows],
            "harness_overhead": [h.to_dict() for h in self.harness],
        }
