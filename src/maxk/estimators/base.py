"""What an estimator function returns to the registry, which builds the ``Estimate`` record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EstimateValue:
    """An estimator's findings: the estimated expected soft accuracy, a predictive standard
    deviation where the method has one (sampling's standard error, or a propagated variance),
    and details it reports beside (sample counts, dropped mass, per-stratum parts)."""

    estimate: float
    spread: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
