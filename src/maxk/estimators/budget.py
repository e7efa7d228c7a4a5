"""A compute knob for every estimator: the settings that keep its counted FLOPs within a budget.

``plan(method, tables, dist, budget)`` returns the options ``estimate(..., budget=F)`` runs the
method with, and the FLOPs those options will count (an upper bound). Sampling methods get the
most inputs the budget pays for, from their exact per-input FLOPs (and, for ``systematic``, a
bound on its placement work; its ``levels`` drop from 3 to 1 when the placement would not leave
enough for the inputs). Propagation methods climb a **ladder** of settings, cheapest first, and
take the last one that fits:

- the coarse settings of ``maxk.estimators.coarse`` (strata "max" → "max-query" → "positions",
  more heavy tokens, more competitor outputs), whose costs are a function of (distribution, n, k,
  settings) alone, computed exactly without running them;
- the full estimator with its default settings last (and, for ``cumulant``, a cap of 4 heavy
  tokens before it). The FLOPs of full ``mean`` and ``bins`` do not depend on the weights
  (a test checks it), so one run on the all-zero tables of the same shape measures them. Full
  ``cumulant``'s do, through its heavy tokens: its cost is bounded by the run on the all-zero
  tables (every token ties, so every stratum splits on the most heavy tokens) plus the run there
  without heavy tokens (every stratum's own second-order pass) — a bound on every model tested,
  1.3–2× the counted FLOPs, but not proven (the direct-summation fallback of the population moments
  is model-dependent): ``estimate`` refuses a run that overspends rather than report it. These
  calibration runs are cached per (method, distribution, shape, settings) and are planning, not
  part of any estimate's FLOPs.

A budget below a method's cheapest setting is a ``MaxkError`` naming that setting's cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from . import coarse
from .bins import bins, mean
from .cumulant import cumulant
from .sampling import strata_weights
from .systematic import _CHUNK as SYSTEMATIC_CHUNK


@dataclass(frozen=True)
class Plan:
    """The options ``method`` runs with under ``budget`` and the FLOPs they will count at most."""

    method: str
    budget: float
    options: dict[str, Any]
    flops: int


# ---------------------------------------------------------------- sampling methods


def per_input_flops(tables: CircuitTables) -> int:
    """FLOPs ``soft_probs`` counts per input: h·(5k + 3k·n) + 5n (``estimators.sampling``)."""
    n, k, H = tables.n, tables.k, tables.n_heads
    return H * (5 * k + 3 * k * n) + 5 * n


def _too_small(method: str, budget: float, need: float, what: str) -> MaxkError:
    return MaxkError(f"budget {budget:.3g} FLOPs is too small for {method!r}: {what} needs {need:.3g}")


def _plan_sampling(tables: CircuitTables, dist: Distribution, budget: float) -> Plan:
    per = per_input_flops(tables) + 2  # + the mean's reduction
    samples = int(budget // per)
    if samples < 2:
        raise _too_small("sampling", budget, 2 * per, "two inputs")
    return Plan("sampling", budget, {"samples": samples}, samples * per)


def _plan_stratified(tables: CircuitTables, dist: Distribution, budget: float) -> Plan:
    S = int(np.count_nonzero(strata_weights(dist, tables.n, tables.k, False)))
    per = per_input_flops(tables) + 4
    samples = int((budget - 6 * S) // per)
    if samples < 4 * S:
        raise _too_small("stratified", budget, 4 * S * per + 6 * S, f"four inputs in each of its {S} strata")
    return Plan("stratified", budget, {"samples": samples}, samples * per + 6 * S)


def systematic_flops_bound(tables: CircuitTables, dist: Distribution, samples: int, levels: int) -> int:
    """An upper bound on the FLOPs ``systematic`` counts with these settings: the inputs through
    the tables, the placement comparisons, the laws it builds (16 FLOPs an entry, one row per
    distinct (remaining count, bound) pair in a chunk: 1 pair at the first level, at most n
    below it without repeats, (k − 1)·n with) and the reductions. Cost O(samples / 8192)."""
    n, k = tables.n, tables.k
    total = samples * (per_input_flops(tables) + 2) + 3 * (samples // 2)
    reps = dist.allows_repeats
    for s0 in range(0, samples, SYSTEMATIC_CHUNK):
        c = min(SYSTEMATIC_CHUNK, samples - s0)
        for lev in range(levels):
            pairs = 1 if lev == 0 else (n if not reps else (k - 1) * n)
            total += c * (n + 4) + 16 * min(c, pairs) * n
            if reps:
                cpairs = n if lev == 0 else (k - 1) * n
                total += c * (k + 4) + 16 * min(c, cpairs) * k
    return total


def _most_samples(tables: CircuitTables, dist: Distribution, budget: float, levels: int) -> int:
    """The most inputs whose ``systematic_flops_bound`` at ``levels`` fits ``budget`` (0 if none)."""
    lo, hi = 0, int(budget // (per_input_flops(tables) + 2)) + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if systematic_flops_bound(tables, dist, mid, levels) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _plan_systematic(tables: CircuitTables, dist: Distribution, budget: float) -> Plan:
    """The default 3 levels, or fewer when placing inputs that deep would cost more than a tenth
    of the inputs one level allows (the laws of the deeper levels cost ~16·n² FLOPs a chunk)."""
    one = _most_samples(tables, dist, budget, 1)
    if one < 2:
        raise _too_small("systematic", budget, systematic_flops_bound(tables, dist, 2, 1), "two inputs at one level")
    for levels in (3, 2, 1):
        s = one if levels == 1 else _most_samples(tables, dist, budget, levels)
        if s >= 0.9 * one:
            opts = {"samples": s, "levels": levels}
            return Plan("systematic", budget, opts, systematic_flops_bound(tables, dist, s, levels))
    raise AssertionError("unreachable: one level always qualifies")


# ---------------------------------------------------------------- propagation ladders

Rung = dict[str, Any]

# (strata, heavy, outputs, n_bins of ``bins``) per coarse rung, cheapest first
_GRID = (
    ("max", 0, None, 2),
    ("max-query", 1, 2, 2),
    ("max-query", 1, 4, 2),
    ("max-query", 2, 8, 3),
    ("max-query", 4, 12, 4),
    ("max-query", 4, 16, 4),
    ("positions", 1, 4, 2),
    ("positions", 2, 8, 3),
    ("positions", 4, 16, 4),
)


def _rung(method: str, strata: str, heavy: int, outputs: int | None, n_bins: int) -> Rung:
    r: Rung = {"strata": strata}
    if heavy:
        r.update(heavy=heavy, outputs=outputs)
    if method == "bins":
        r["n_bins"] = n_bins
    return r


_COARSE = {method: tuple(_rung(method, *g) for g in _GRID) for method in ("mean", "bins", "cumulant")}
_FULL: dict[str, tuple[Rung, ...]] = {
    "mean": ({},),
    "bins": ({},),
    # caps of 1 or 2 heavy tokens were tried and dropped: on the noised k = 10 family the cap of 1
    # (RMSE 0.033, errors to -0.12) did worse than the coarse "positions" rung below it (0.013)
    "cumulant": ({"max_heavy": 4}, {}),
}
_READOUT = {"mean": "mean", "bins": "bins", "cumulant": "gauss"}
_FULL_RUN = {"mean": mean, "bins": bins, "cumulant": cumulant}  # the registered functions
_PROBES: dict[tuple, int] = {}


def ladder(method: str) -> list[Rung]:
    """The settings ``plan`` chooses among for a propagation method, cheapest first."""
    return [dict(r) for r in _COARSE[method]] + [dict(r) for r in _FULL[method]]


def zero_tables(tables: CircuitTables) -> CircuitTables:
    """Tables of the same shape with every entry zero (every token ties for attention)."""
    return CircuitTables(
        tables.cfg,
        np.zeros_like(tables.eqke),
        np.zeros_like(tables.eqkp),
        np.zeros_like(tables.evou),
        np.zeros_like(tables.pvou),
        np.zeros_like(tables.eupu),
    )


def rung_flops(method: str, tables: CircuitTables, dist: Distribution, rung: Rung) -> int:
    """FLOPs ``method`` counts with the options ``rung`` (an upper bound for full ``cumulant``;
    see the module docstring). Coarse rungs: exact, O(rows); full rungs: one calibration run on
    the all-zero tables, cached."""
    if rung.get("strata", "full") != "full":
        return coarse.coarse_cost(
            dist,
            tables.n,
            tables.k,
            rung["strata"],
            _READOUT[method],
            rung.get("n_bins", 1),
            rung.get("heavy", 0),
            rung.get("outputs"),
        )
    if method == "cumulant" and rung.get("max_heavy", 12) > 0:
        # heavy sub-strata at their most (every token ties) + every stratum's own second-order pass
        return _probe(method, tables, dist, rung) + _probe(method, tables, dist, {**rung, "max_heavy": 0})
    return _probe(method, tables, dist, rung)


def _probe(method: str, tables: CircuitTables, dist: Distribution, rung: Rung) -> int:
    """FLOPs ``method`` counts with ``rung`` on the all-zero tables of this shape (cached)."""
    key = (method, dist.name, tables.cfg, tuple(sorted(rung.items())))
    if key not in _PROBES:
        counter = FlopCounter()
        _FULL_RUN[method](zero_tables(tables), dist, counter=counter, rng=np.random.default_rng(0), **rung)
        _PROBES[key] = counter.total
    return _PROBES[key]


def _plan_ladder(method: str, tables: CircuitTables, dist: Distribution, budget: float) -> Plan:
    rungs = ladder(method)
    if tables.n_heads != 1:  # the coarse settings are single-head
        rungs = [r for r in rungs if r.get("strata", "full") == "full"]
        if not rungs:
            raise MaxkError(f"{method!r} supports single-head models only")
    best: Plan | None = None
    cheapest = math.inf
    for rung in rungs:  # the last rung that fits (the ladder runs from least to most conditioned)
        f = rung_flops(method, tables, dist, rung)
        cheapest = min(cheapest, f)
        if f <= budget:
            best = Plan(method, budget, rung, f)
    if best is None:
        raise _too_small(method, budget, cheapest, "its cheapest setting")
    return best


# ---------------------------------------------------------------- entry point

_PLANNERS = {"sampling": _plan_sampling, "stratified": _plan_stratified, "systematic": _plan_systematic}


def plannable(method: str) -> bool:
    """Whether ``method`` has a compute knob."""
    return method in _PLANNERS or method in _COARSE


def plan(method: str, tables: CircuitTables, dist: Distribution, budget: float) -> Plan:
    """The settings of ``method`` whose counted FLOPs stay within ``budget``, and those FLOPs (an
    upper bound). MaxkError for a budget that is not a positive finite number, a method without a
    compute knob, or a budget below the method's cheapest setting."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise MaxkError(f"budget must be a number of FLOPs, got {budget!r}")
    budget = float(budget)
    if not (math.isfinite(budget) and budget > 0):
        raise MaxkError(f"budget must be a positive finite number of FLOPs, got {budget!r}")
    if method in _PLANNERS:
        return _PLANNERS[method](tables, dist, budget)
    if method in _COARSE:
        return _plan_ladder(method, tables, dist, budget)
    raise MaxkError(
        f"estimator {method!r} has no compute knob: --budget applies to {', '.join(sorted([*_PLANNERS, *_COARSE]))}"
    )
