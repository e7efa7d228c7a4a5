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

``explanation="cells"`` swaps the cumulant explanation for the cheap top-two cell explanation of
``maxk.estimators.residual_cells`` (W(x) = its cell's mean-field value, E[W] exact over the
kernel's laws): ≈ 2–25·10⁶ FLOPs at n = 64, k = 10 instead of ≥ 2·10⁸, so the control variate
runs from budgets of 10⁷ FLOPs.
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
from .budget import most_samples, per_input_flops, residual_flops_bound
from .residual_cells import COMPETITORS, CellExplanation, cell_input_flops, explain_cells
from .sampling import _check_samples, soft_probs
from .systematic import check_levels, successive_difference_spread, systematic_chunks

DESIGNS = ("systematic", "plain")
CONTROLS = ("auto", "wick", "first", "constant")
EXPLANATIONS = ("cumulant", "cells")
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
    explanation: str = "cumulant",
    cells: int = 0,
    competitors: int = COMPETITORS,
    first_order: bool = False,
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
    only explains less of the variance. ``explanation="cells"``: the top-two cell explanation
    instead (``residual_cells``; its ``cells`` most probable cells, 0 = all, read over m, t2 and
    ``competitors`` outputs, plus the first-order terms of the low tokens if ``first_order``;
    ``order`` and ``max_heavy`` unused; control "first" is W). ``flops`` = F (instead of
    ``samples``, default SAMPLES = 100 000): spend at most F FLOPs in all — build the explanation,
    then draw the most inputs whose counted cost (``budget.residual_flops_bound``) fits what is
    left; MaxkError if fewer than the minimum (20 for "auto", else 2) fit. Cost: the explanation
    (as ``cumulant``, or ``budget.cell_flops``) plus, per input, one pass through the
    tables and O(h·n) for W (cells: O(k + log cells))."""
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
    if explanation not in EXPLANATIONS:
        raise MaxkError(f"explanation must be one of {', '.join(EXPLANATIONS)}, got {explanation!r}")
    if isinstance(cells, bool) or not isinstance(cells, (int, np.integer)) or cells < 0:
        raise MaxkError(f"cells must be an integer >= 0 (0: every cell), got {cells!r}")
    n, k = tables.n, tables.k
    f0 = counter.total
    built: CellExplanation | None = None
    if explanation == "cells":
        built = explain_cells(
            tables, dist, counter=counter, max_cells=cells or None, competitors=competitors, first_order=first_order
        )
        expl = _CellValues(tables, built)
        per_input = per_input_flops(tables) + cell_input_flops(tables, dist, cells or None, competitors, first_order)
        fields = {"wick": "wick", "constant": "constant"}
    else:
        expl = explain(tables, dist, counter=counter, order=order, max_heavy=max_heavy)
        per_input = None
        fields = dict(_FIELD)
    if flops is not None:
        samples = _samples_within(
            tables, dist, float(flops) - (counter.total - f0), design, levels, control, per_input, len(fields)
        )
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
        for c, fld in fields.items():
            pilot_spread[c] = spread_of(np.concatenate([v["soft"] - v[fld] for v in vals]))
        counter.add(3 * n_pilot * len(fields), "pilot")
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
        "explanation_kind": explanation,
        "pilot": n_pilot,
        "design": design,
        "control": control,
        "pilot_spread": pilot_spread,
        "explanation": float(known[control]),
        "residual_mean": float(r.mean()),
        "residual_sd": float(r.std(ddof=1)),
    }
    if built is not None:
        details.update(
            cells=len(built.keys), cells_mass=built.covered, competitors=competitors, first_order=first_order
        )
    else:
        details.update(order=order, max_heavy=max_heavy)
    if design == "systematic":
        details["levels"] = levels
    return EstimateValue(float(known[control] + r.mean()), spread=spread, details=details)


class _CellValues:
    """The cell explanation behind the interface ``wick_residual`` reads: ``values`` gives f (the
    model's probability on the max, through the tables) and W per input; "wick_first" is W too,
    "constant" is E[W] (so that control is the design's plain mean)."""

    def __init__(self, tables: CircuitTables, cells: CellExplanation):
        self.tables = tables
        self.cells = cells
        self.estimate = self.estimate_first = cells.estimate
        self.flops = cells.flops

    def values(self, x: np.ndarray, counter: FlopCounter) -> dict[str, np.ndarray]:
        w = self.cells.values(x, counter)
        return {
            "soft": soft_probs(self.tables, x, counter),
            "wick": w,
            "wick_first": w,
            "constant": np.full_like(w, self.estimate),
        }


def _samples_within(
    tables: CircuitTables,
    dist: Distribution,
    left: float,
    design: str,
    levels: int,
    control: str,
    per_input: int | None = None,
    n_controls: int = 3,
) -> int:
    """The most inputs whose counted cost after the explanation fits ``left`` FLOPs; MaxkError
    below the minimum. ``per_input``: the FLOPs of one input's f and W (default the cumulant
    explanation's). Cost O(log(left) · left / 8192 / per-input FLOPs)."""
    least = 20 if control == "auto" else 2
    fpi = per_input or wick_flops_per_input(tables.n_heads, tables.n, tables.k)
    start = int(max(left, 0.0) // fpi) + 1

    def bound(m: int) -> int:
        return residual_flops_bound(tables, dist, m, design, levels, control, per_input, n_controls)

    s = most_samples(bound, left, start)
    if s < least:
        need = bound(least)
        raise MaxkError(
            f"wick-residual: after its explanation {left:.3g} FLOPs are left, too few for {least} inputs ({need:.3g})"
        )
    return s
