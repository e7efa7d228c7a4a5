"""The result records every evaluation, proof and estimator returns (one family).

Each is a frozen dataclass built by keyword, with the fields every result shares first: ``method``
(the registered name: "exhaustive", "cubic", "bins", ...), ``dist`` (the distribution's name),
``n_sequences`` (N), ``seconds``, ``flops`` (counted by the code that did the work; None where
nothing is counted) and ``options`` (the method's settings). ``to_dict()`` gives plain JSON data
with a ``kind`` tag and ``Result.from_dict`` rebuilds the same record, so a sweep's records
reload as the same Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

_KINDS: dict[str, type[Result]] = {}


def plain(x: Any) -> Any:
    """``x`` as JSON-native data: numpy scalars and arrays become Python numbers and lists,
    tuples become lists, dict keys strings."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


@dataclass(frozen=True, kw_only=True)
class Result:
    """Fields every result shares; subclasses add what they measured."""

    kind: ClassVar[str] = "result"

    method: str
    dist: str
    n_sequences: int
    seconds: float
    flops: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _KINDS[cls.kind] = cls

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (dict, list, tuple, np.ndarray, np.generic)):
                object.__setattr__(self, f.name, plain(v))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: every field plus ``kind``."""
        return {"kind": self.kind, **{f.name: plain(getattr(self, f.name)) for f in fields(self)}}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Result:
        """The record ``to_dict`` produced (dispatched on ``kind``)."""
        d = dict(d)
        kind = d.pop("kind", None)
        if kind not in _KINDS:
            raise ValueError(f"unknown result kind {kind!r}")
        return _KINDS[kind](**d)


@dataclass(frozen=True, kw_only=True)
class EvalResult(Result):
    """Accuracy, soft accuracy (mean probability on the right answer) and mean loss of a model
    over a distribution: exhaustive (``correct`` is the exact count) or sampled (``samples``
    inputs; ``spread`` holds each figure's standard error)."""

    kind: ClassVar[str] = "evaluation"

    correct: int | None
    accuracy: float
    soft_accuracy: float
    loss: float
    samples: int | None = None
    spread: dict[str, float] | None = None

    @property
    def ci95(self) -> dict[str, tuple[float, float]] | None:
        """95% normal intervals (figure ± 1.96 standard errors) when sampled, else None."""
        if self.spread is None:
            return None
        return {
            name: (getattr(self, name) - 1.96 * se, getattr(self, name) + 1.96 * se) for name, se in self.spread.items()
        }


@dataclass(frozen=True, kw_only=True)
class ProofResult(Result):
    """A certified lower bound on accuracy and what checking it cost.

    bound:      the largest float <= certified / n_sequences: a lower bound on the exact
                real-number model's accuracy
    certified:  number of inputs (exact integer) certified correct
    flops:      floating-point operations the verification performed (counted as it ran)
    cost:       asymptotic form, e.g. "O(n^3 k^2)"
    """

    kind: ClassVar[str] = "proof"

    bound: float
    certified: int
    cost: str


@dataclass(frozen=True, kw_only=True)
class Estimate(Result):
    """A heuristic estimate of expected soft accuracy and what computing it cost.

    spread:  a predictive standard deviation where the method has one (sampling's standard error,
             or a propagated variance), else None
    details: what the method reports beside (sample counts, dropped mass, per-stratum parts)
    """

    kind: ClassVar[str] = "estimate"

    estimate: float
    spread: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
