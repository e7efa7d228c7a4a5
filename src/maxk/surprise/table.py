"""The records: one ``SurpriseRow`` per explanation, collected in a ``SurpriseTable``.

Every figure is in bits. ``kind`` says what a figure is: "exact" (computed, to float rounding),
"estimate" (with its standard error beside it) or "bound". Bounds here are of two sides, named
in ``kind_note``: the weights row's total is an *upper* bound on the bits of optimisation; a
check no initialisation passed gives a *lower* bound on its bits, so a row built on one has a
lower bound for S(π) and the total.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ..results import Result
from .checks import Accounted, Check


def combine_kinds(*kinds: str) -> str:
    """The kind of a sum: bound if any part is, else estimate if any part is, else exact."""
    return "bound" if "bound" in kinds else ("estimate" if "estimate" in kinds else "exact")


@dataclass(frozen=True)
class SurpriseRow:
    """One explanation's surprise accounting (module docstring).

    explanation:   "none", "none-soft", "weights", or a registered strategy or estimator name
    family:        "none", "weights", "proof" or "estimator"
    observed:      what Y is: "accuracy" (the exact correct count) or "soft_accuracy"
    s_pi, s_y_given_pi, total: bits, with ``*_error`` (standard errors, None if not estimated)
                   and ``*_kind``; total = s_pi + s_y_given_pi, error in quadrature
    s_pi_joint:    a figure for S(π) that does not presume the checks independent (a lower bound:
                   see ``presumption``), None where none can be had
    checks:        the itemised checks (``Check.to_dict()``), largest bits first
    dimensionality, dimensionality_bits: Gross et al.'s unexplained dimensionality and 32 bits per
                   dimension (None where it does not apply)
    details:       what the row was computed from (certified count, estimate, calibration, ...)
    """

    explanation: str
    family: str
    observed: str
    observed_value: float
    s_pi: float
    s_pi_error: float | None
    s_pi_kind: str
    s_y_given_pi: float
    s_y_error: float | None
    s_y_kind: str
    total: float
    total_error: float | None
    kind: str
    kind_note: str = ""
    s_pi_joint: float | None = None
    presumption: str = ""
    checks: tuple[dict, ...] = ()
    dimensionality: int | None = None
    dimensionality_bits: float | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON data."""
        d = asdict(self)
        d["checks"] = list(self.checks)
        return d

    @staticmethod
    def from_dict(d: dict) -> SurpriseRow:
        """The row ``to_dict`` produced."""
        return SurpriseRow(**{**d, "checks": tuple(d.get("checks", ()))})


def make_row(
    explanation: str,
    family: str,
    observed: str,
    observed_value: float,
    pi: Accounted,
    s_y: float,
    s_y_error: float | None,
    s_y_kind: str,
    *,
    checks: list[Check] = (),  # type: ignore[assignment]
    kind_note: str = "",
    s_pi_joint: float | None = None,
    presumption: str = "",
    dimensionality: int | None = None,
    details: dict | None = None,
) -> SurpriseRow:
    """A row from the accounted checks ``pi`` and the residual surprise ``s_y`` (same code path
    for every explanation, Hilton's Boolean circuit included)."""
    from .dimensionality import PER_DIMENSION_BITS

    errs = [e for e in (pi.error, s_y_error) if e is not None]
    total_err = (sum(e * e for e in errs) ** 0.5) if errs else None
    ordered = sorted(checks, key=lambda c: -c.bits)
    return SurpriseRow(
        explanation=explanation,
        family=family,
        observed=observed,
        observed_value=float(observed_value),
        s_pi=pi.bits,
        s_pi_error=pi.error,
        s_pi_kind=pi.kind,
        s_y_given_pi=float(s_y),
        s_y_error=s_y_error,
        s_y_kind=s_y_kind,
        total=pi.bits + float(s_y),
        total_error=total_err,
        kind=combine_kinds(pi.kind, s_y_kind),
        kind_note=kind_note,
        s_pi_joint=s_pi_joint,
        presumption=presumption,
        checks=tuple(c.to_dict() for c in ordered),
        dimensionality=dimensionality,
        dimensionality_bits=None if dimensionality is None else float(dimensionality * PER_DIMENSION_BITS),
        details=details or {},
    )


@dataclass(frozen=True, kw_only=True)
class SurpriseTable(Result):
    """Every explanation's row for one model (or, with ``family``, averaged over noised models).

    rows:        ``SurpriseRow.to_dict()`` per explanation (``row(name)`` rebuilds one)
    observed:    the exact correct count, accuracy and soft accuracy the rows explain
    prior:       the initialisation prior used (samples, seeds, cache file)
    calibration: how the estimators' predictive distributions were calibrated
    family:      None, or the noised models averaged over (noise scales, their observed figures)
    refused:     explanations left out, with the reason
    """

    kind: ClassVar[str] = "surprise"

    rows: list[dict[str, Any]] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)
    prior: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    family: dict[str, Any] | None = None
    refused: dict[str, str] = field(default_factory=dict)

    def row(self, name: str) -> SurpriseRow:
        """The row of explanation ``name`` (KeyError if absent)."""
        for r in self.rows:
            if r["explanation"] == name:
                return SurpriseRow.from_dict(r)
        raise KeyError(name)

    def names(self) -> list[str]:
        """The explanations, in table order."""
        return [r["explanation"] for r in self.rows]

    @staticmethod
    def lower_bound(row: dict) -> bool:
        """Whether a row's total is only a lower bound (a check no initialisation passed)."""
        return row["kind"] == "bound" and row["s_pi_kind"] == "bound"

    def ranking(self, observed: str | None = None) -> list[tuple[str, float]]:
        """(explanation, total bits), smallest total first; only rows explaining ``observed``
        ("accuracy" or "soft_accuracy") if given."""
        rows = [r for r in self.rows if observed is None or r["observed"] == observed]
        return sorted(((r["explanation"], r["total"]) for r in rows), key=lambda x: x[1])

    def best(self, observed: str | None = None, *, lower_bounds: bool = False) -> str:
        """The explanation (other than the weights and none) with the smallest total; rows whose
        total is only a lower bound are skipped unless ``lower_bounds``."""
        by_name = {r["explanation"]: r for r in self.rows}
        for name, _ in self.ranking(observed):
            if name in ("weights", "none", "none-soft"):
                continue
            if lower_bounds or not self.lower_bound(by_name[name]):
                return name
        raise KeyError("no explanation besides none and the weights")

    def gap_to_weights(self, observed: str | None = "accuracy") -> float | None:
        """Best explanation's total minus the weights' description bound, in bits (positive: the
        best explanation costs more than stating the weights); None without a weights row."""
        names = self.names()
        if "weights" not in names:
            return None
        try:
            best = self.row(self.best(observed))
        except KeyError:
            return None
        return best.total - self.row("weights").total
