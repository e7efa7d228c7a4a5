"""The record every evaluation returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EvalResult:
    """Accuracy, soft accuracy (mean probability on the right answer) and mean loss of a model
    over an input distribution. ``ci95`` holds (low, high) intervals when the figures are
    sampled rather than exhaustive."""

    dist: str
    method: str
    n_sequences: int
    correct: int | None
    accuracy: float
    soft_accuracy: float
    loss: float
    seconds: float
    samples: int | None = None
    ci95: dict | None = field(default=None)

    def to_dict(self) -> dict:
        return asdict(self)
