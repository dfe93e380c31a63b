"""What a profile run found: per row (backend x precision x batch) the layers with their
times, rates and verdicts, the end-to-end time they are compared with, and the limits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class OpRecord:
    """One profiled op counted with a layer: the backend's name and type for it, its
    time per call, its precision, and the graph nodes the backend fused into it."""

    name: str
    type: str
    ms: float
    precision: str = ""
    fused: list[str] = field(default_factory=list)


@dataclass
class LayerProfile:
    """One AlexNet layer in one row (or the conversions / unmapped ops of that row).
    ``ms`` per call of the whole batch; ``macs`` per image; rates over the batch."""

    layer: str
    ms: float
    share: float  # of the row's profiled time
    ops: list[OpRecord]
    macs: int = 0
    gmacs_per_s: float | None = None
    limit_share: float | None = None  # of the FP32 or INT8 limit (fastest dense kernel) measured in the run
    intensity: float | None = None  # operations per byte moved
    bound: str | None = None  # "memory" or "compute" (roofline), None for non-layers
    gbps: float | None = None
    bandwidth_share: float | None = None  # of the copy bandwidth measured in the run

    @property
    def counted_with_it(self) -> list[str]:
        """What else was counted with this layer: the ops the backend ran apart from its
        main (longest) op, with their times, and the graph nodes it fused into them."""
        ordered = sorted(self.ops, key=lambda op: -op.ms)
        apart = [f"{op.type} {op.ms:.3g} ms" for op in ordered[1:]]
        fused = [name for op in ordered for name in op.fused if name != op.name and "/" in name]
        return apart + ([f"fused: {', '.join(fused)}"] if fused else [])


@dataclass
class ProfileRow:
    backend: str
    precision: str
    batch: int
    device: str
    profiler: str
    end_to_end_ms: float  # median of the same runner's unprofiled calls
    limit: str  # "FP32", "INT8", or "" where no limit was measured (a GPU row)
    layers: list[LayerProfile]
    left_out: str  # what the profiler does not time
    limits: dict = field(default_factory=dict)  # limits.Limits.to_dict(), measured just before this row
    notes: list[str] = field(default_factory=list)

    @property
    def profiled_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)

    @property
    def coverage(self) -> float:
        """The sum of the layer times over the end-to-end time."""
        return self.profiled_ms / self.end_to_end_ms

    def to_dict(self) -> dict:
        return asdict(self) | {"profiled_ms": self.profiled_ms, "coverage": self.coverage}


@dataclass
class ProfileReport:
    rows: list[ProfileRow]
    skipped: list[tuple[str, str, str]]  # (backend, precision, why)
    limits: dict
    machine: dict
    date: str
    config: dict

    def to_dict(self) -> dict:
        return {
            "date": self.date,
            "machine": self.machine,
            "config": self.config,
            "limits": self.limits,
            "rows": [row.to_dict() for row in self.rows],
            "skipped": [{"backend": b, "precision": p, "reason": r} for b, p, r in self.skipped],
        }
