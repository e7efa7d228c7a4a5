"""``wick-residual``: the cumulant explanation's estimate plus the sampled mean of what it leaves
unexplained (DESIGN §7, control variates).

With W(x) the explanation's per-input Wick value (``maxk.wick_propagation``), E[W] is exactly
the cumulant estimate, so

    estimate = E[W] + mean over sampled x of (f(x) − W(x))

is unbiased for any model, whatever the explanation presumes: the explanation only lowers the
variance, from Var(f) to Var(f − W). The inputs are drawn plainly or by the systematic design
(evenly spaced down the order-statistic hierarchy, ``maxk.estimators.systematic``); the spread is
the residual's standard error (successive differences for the systematic design). FLOPs count
the explanation and every sampled input.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from ..wick_propagation import explain
from ..wick_propagation.formula import flops_per_input as wick_flops_per_input
from .base import EstimateValue
from .budget import most_samples, residual_flops_bound
from .sampling import _check_samples
from .systematic import check_levels, successive_difference_spread, systematic_chunks

DESIGNS = ("systematic", "plain")
CONTROLS = ("auto", "wick", "first", "constant")
_FIELD = {"wick": "wick", "first": "wick_first", "constant": "constant"}  # control -> values() field
_CHUNK = 1 << 13


SAMPLES = 100_000  # inputs drawn when no FLOPs cap chooses them


def wick_residual(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    samples: int = SAMPLES,
    design: str = "systematic",
    levels: int = 3,
    control: str = "auto",
    order: int = 2,
    max_heavy: int = 12,
    flops: float | None = None,
) -> EstimateValue:
    """E[c] + the mean of f − c over ``samples`` inputs drawn by ``design`` ("systematic" or
    "plain"), with the control c one of the explanation's per-input values whose mean is known
    exactly: W ("wick", second order), W1 ("first", mean propagation) or the row's estimate alone
    ("constant"). "auto" picks the one with the smallest standard error on an independent pilot of a
    tenth of the samples drawn by the same design (far from the mean the second-order Taylor terms
    in the wires can explode on noisy models, and the systematic design already stratifies what
    the constant explains); the estimate uses the other nine tenths, so it stays unbiased.
    spread = the residual mean's standard error.

    The explanation is ``cumulant``'s with ``order`` (1: mean propagation, W = W1) and
    ``max_heavy`` (its heavy-token cap); any setting keeps the estimate unbiased, a poorer one
    only explains less of the variance. ``flops`` = F (instead of ``samples``, default SAMPLES = 100 000):
    spend at most F FLOPs in all — build the explanation, then draw the most inputs whose
    counted cost (``budget.residual_flops_bound``) fits what is left; MaxkError if fewer than the
    minimum (20 for "auto", else 2) fit. Cost: the explanation (as ``cumulant``) plus, per input,
    one pass through the tables and O(h·n) for W."""
    if flops is not None and samples != SAMPLES:
        raise MaxkError("give samples or flops (a total FLOPs cap that chooses the samples), not both")
    if flops is not None and (
        isinstance(flops, bool)
        or not isinstance(flops, (int, float, np.integer, np.floating))
        or not (math.isfinite(flops) and flops > 0)
    ):
        raise MaxkError(f"flops must be a positive finite number of FLOPs, got {flops!r}")
    samples = _check_samples(samples, 2)
    levels = check_levels(levels)
    if design not in DESIGNS:
        raise MaxkError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if control not in CONTROLS:
        raise MaxkError(f"control must be one of {', '.join(CONTROLS)}, got {control!r}")
    if control == "auto" and samples < 20:
        raise MaxkError(f"control 'auto' needs samples >= 20 (a pilot of a tenth), got {samples}")
    n, k = tables.n, tables.k
    f0 = counter.total
    expl = explain(tables, dist, counter=counter, order=order, max_heavy=max_heavy)
    if flops is not None:
        samples = _samples_within(tables, dist, float(flops) - (counter.total - f0), design, levels, control)
    known = {"wick": expl.estimate, "first": expl.estimate_first, "constant": expl.estimate}

    def draw(size: int) -> Iterator[np.ndarray]:
        """``size`` inputs by the design, in chunks."""
        if design == "systematic":
            return systematic_chunks(dist, n, k, size, levels, rng, counter)
        return (dist.sample(n, k, min(_CHUNK, size - s0), rng) for s0 in range(0, size, _CHUNK))

    def spread_of(r: np.ndarray) -> float:
        """The standard error of the mean of residuals r drawn by the design."""
        if design == "systematic":
            return successive_difference_spread(r, counter)
        return float(r.std(ddof=1) / np.sqrt(len(r)))

    pilot_spread: dict[str, float] = {}
    n_pilot = 0
    if control == "auto":  # an independent pilot by the same design; the estimate uses none of it
        n_pilot = samples // 10
        vals = [expl.values(x, counter) for x in draw(n_pilot)]
        for c, fld in _FIELD.items():
            pilot_spread[c] = spread_of(np.concatenate([v["soft"] - v[fld] for v in vals]))
        counter.add(3 * n_pilot * len(_FIELD), "pilot")
        control = min(pilot_spread, key=lambda c: pilot_spread[c])
        samples -= n_pilot
    chunks = draw(samples)
    parts = []
    for x in chunks:
        v = expl.values(x, counter)
        parts.append(np.asarray(v["soft"], dtype=np.float64) - np.asarray(v[_FIELD[control]], dtype=np.float64))
    r = np.concatenate(parts)
    counter.add(3 * samples, "reduce")
    spread = spread_of(r)
    details = {
        "samples": samples + n_pilot,
        "explanation_flops": expl.flops,
        "order": order,
        "max_heavy": max_heavy,
        "pilot": n_pilot,
        "design": design,
        "control": control,
        "pilot_spread": pilot_spread,
        "explanation": float(known[control]),
        "residual_mean": float(r.mean()),
        "residual_sd": float(r.std(ddof=1)),
    }
    if design == "systematic":
        details["levels"] = levels
    return EstimateValue(float(known[control] + r.mean()), spread=spread, details=details)


def _samples_within(
    tables: CircuitTables, dist: Distribution, left: float, design: str, levels: int, control: str
) -> int:
    """The most inputs whose counted cost after the explanation fits ``left`` FLOPs; MaxkError
    below the minimum. Cost O(log(left) · left / 8192 / per-input FLOPs)."""
    least = 20 if control == "auto" else 2
    start = int(max(left, 0.0) // wick_flops_per_input(tables.n_heads, tables.n, tables.k)) + 1
    s = most_samples(lambda m: residual_flops_bound(tables, dist, m, design, levels, control), left, start)
    if s < least:
        need = residual_flops_bound(tables, dist, least, design, levels, control)
        raise MaxkError(
            f"wick-residual: after its explanation {left:.3g} FLOPs are left, too few for {least} inputs ({need:.3g})"
        )
    return s
