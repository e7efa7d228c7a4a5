"""One fact an explanation relies on, priced by its pass probability under the prior.

A ``Check`` is a class of identical checks on the weights (``count`` of them, e.g. "token t is in
the cubic proof's certified set for (max, query, copies)" for every (m, q, c, t) of one symmetry
class) with the prior probability that one of them passes, estimated from freshly initialised
models. Its cost is ``count · -log2 p`` bits under the presumption that the checks pass
independently; ``error`` is the standard error of that figure (the between-model spread of the
pass rate, delta method). When no initialised model passed, only an upper confidence bound on p
is known, so the bits are a lower bound (``kind = "bound"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .tails import LN2

CONFIDENCE = 0.95  # one-sided level of the upper bound on a pass rate no initialisation reached


@dataclass(frozen=True)
class Check:
    """``count`` checks of one class; ``p_pass`` their prior pass probability (each); ``bits`` =
    count · -log2 p_pass; ``error`` its standard error (None for a bound or exact figure);
    ``kind``: "estimate", "bound" (a lower bound on the bits) or "exact"; ``passes``/``trials``:
    what the prior's initialisations showed (pooled over models)."""

    name: str
    count: int
    p_pass: float
    bits: float
    error: float | None
    kind: str
    passes: int
    trials: int

    def to_dict(self) -> dict:
        """Plain JSON data."""
        return asdict(self)


def upper_rate(models: int) -> float:
    """One-sided ``CONFIDENCE`` upper bound on a pass rate when none of ``models`` independent
    initialisations passed (per-model, so correlated checks within a model do not inflate it)."""
    return 1.0 - (1.0 - CONFIDENCE) ** (1.0 / max(models, 1))


def exact_check(name: str, count: int, p: float) -> Check:
    """``count`` checks each passing with the known probability ``p`` (no sampling error)."""
    return Check(name, count, p, count * -math.log2(p) if count else 0.0, None, "exact", 0, 0)


def rate_check(name: str, count: int, passes: Sequence[float], trials: Sequence[float]) -> Check:
    """A ``Check`` from per-model pass counts ``passes`` [M] out of ``trials`` [M] (models with no
    trial are ignored). Pooled rate; error from the between-model spread of the per-model rates
    (the binomial error when they do not vary). Cost O(M)."""
    ps, ts = np.asarray(passes, dtype=np.float64), np.asarray(trials, dtype=np.float64)
    live = ts > 0
    ps, ts = ps[live], ts[live]
    total_p, total_t, models = float(ps.sum()), float(ts.sum()), int(live.sum())
    if count == 0:
        return Check(name, 0, 1.0, 0.0, 0.0, "exact", int(total_p), int(total_t))
    if models == 0:
        raise ValueError(f"check {name!r}: the prior has no trial of it")
    if total_p == 0:
        p = upper_rate(models)
        return Check(name, count, p, count * -math.log2(p), None, "bound", 0, int(total_t))
    p = total_p / total_t
    if p >= 1.0:
        return Check(name, count, 1.0, 0.0, 0.0, "estimate", int(total_p), int(total_t))
    rates = ps / ts
    se = float(rates.std(ddof=1) / math.sqrt(models)) if models > 1 else 0.0
    if se == 0.0:
        se = math.sqrt(p * (1 - p) / total_t)
    bits = count * -math.log2(p)
    return Check(name, count, p, bits, count * se / (p * LN2), "estimate", int(total_p), int(total_t))


@dataclass(frozen=True)
class Accounted:
    """The sum of an explanation's checks: bits (under independence), its error (the classes'
    errors combined in quadrature), its kind, and the largest single check (a lower bound on the
    joint surprise that needs no presumption: P(all pass) <= P(any one passes))."""

    bits: float
    error: float | None
    kind: str
    largest_single: float


def account(checks: Iterable[Check]) -> Accounted:
    """Sum ``checks`` under the presumption of independence. Cost O(len(checks))."""
    cs = list(checks)
    bits = float(sum(c.bits for c in cs))
    errs = [c.error for c in cs if c.error is not None]
    err = math.sqrt(sum(e * e for e in errs)) if errs else (0.0 if cs else 0.0)
    kinds = {c.kind for c in cs if c.count > 0}
    kind = "bound" if "bound" in kinds else ("estimate" if "estimate" in kinds else "exact")
    largest = max((c.bits / c.count for c in cs if c.count > 0), default=0.0)
    return Accounted(bits, err, kind, largest)
