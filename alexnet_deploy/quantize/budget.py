"""The INT8 accuracy budget of ``build --min-agreement/--max-drop``: light (no numpy,
no onnx), so ``BuildConfig`` and the CLI can hold one; the search that meets it is
:mod:`.fallback`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DeployError

if TYPE_CHECKING:
    from .sensitivity import Outcome


@dataclass(frozen=True)
class Budget:
    """What the INT8 files must keep on the held-out val images: top-1 agreement with
    FP32 of at least ``min_agreement`` (a fraction) and a top-1 drop against the labels
    of at most ``max_drop`` percentage points. None: no such bound."""

    min_agreement: float | None = None
    max_drop: float | None = None

    @property
    def active(self) -> bool:
        return self.min_agreement is not None or self.max_drop is not None

    def check(self) -> None:
        if self.min_agreement is not None and not (math.isfinite(self.min_agreement) and 0 < self.min_agreement <= 1):
            raise DeployError(f"--min-agreement is a fraction in (0, 1], such as 0.99; got {self.min_agreement}")
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and 0 <= self.max_drop <= 100):
            raise DeployError(f"--max-drop is in percentage points, 0 to 100; got {self.max_drop}")

    def met(self, result: Outcome, fp32_top1: float | None) -> bool:
        if self.min_agreement is not None and result.agreement < self.min_agreement:
            return False
        if self.max_drop is not None and fp32_top1 is not None and result.top1 is not None:
            return 100 * (fp32_top1 - result.top1) <= self.max_drop + 1e-9  # float rounding of the points
        return True

    def describe(self) -> str:
        parts = []
        if self.min_agreement is not None:
            parts.append(f"top-1 agreement >= {self.min_agreement:.2%}")
        if self.max_drop is not None:
            parts.append(f"top-1 drop <= {self.max_drop:g} points")
        return " and ".join(parts)

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("min_agreement", self.min_agreement), ("max_drop", self.max_drop)) if v is not None}
