"""What every heuristic estimator returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Estimate:
    """An estimate of expected soft accuracy and what computing it cost.

    spread: a predictive standard deviation where the method has one (sampling's standard error,
    or a propagated variance), else None.
    """

    method: str
    estimate: float
    flops: int
    seconds: float
    dist: str = "uniform"
    spread: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
