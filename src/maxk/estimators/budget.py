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

``wick-residual`` climbs a ladder of explanation settings (the top-two cell explanation with more
cells, then covariance propagation with 1, 4 and the default 12 heavy tokens): the richest that
leaves enough of the budget to sample with; the run then measures what its explanation counted
and spends the rest on inputs (its option ``flops``), so it never counts more than the budget.

A budget below a method's cheapest setting is a ``MaxkError`` naming that setting's cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from ..wick_propagation import explain
from ..wick_propagation.formula import flops_per_input as wick_flops_per_input
from . import coarse
from .allocated import allocated_cost
from .bins import bins, mean
from .cumulant import cumulant
from .residual_cells import COMPETITORS, cell_input_flops, explain_cells
from .sampling import strata_weights
from .systematic import _CHUNK as SYSTEMATIC_CHUNK


@dataclass(frozen=True)
class Plan:
    """The options ``method`` runs with under ``budget`` and the FLOPs they will count at most."""

    method: str
    budget: float
    options: dict[str, Any]
    flops: int


Rung = dict[str, Any]


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


def placement_flops_bound(tables: CircuitTables, dist: Distribution, samples: int, levels: int) -> int:
    """An upper bound on the FLOPs the systematic design counts to place ``samples`` inputs
    (``systematic_chunks``): the comparisons of each level and the laws it builds (16 FLOPs an
    entry, one row per distinct (remaining count, bound) pair in a chunk: 1 pair at the first
    level, at most n below it without repeats, (k − 1)·n with). Cost O(samples / 8192)."""
    n, k = tables.n, tables.k
    total = 0
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


def systematic_flops_bound(tables: CircuitTables, dist: Distribution, samples: int, levels: int) -> int:
    """An upper bound on the FLOPs ``systematic`` counts with these settings: the inputs through
    the tables, their placement (``placement_flops_bound``) and the reductions."""
    pif = per_input_flops(tables)
    return samples * (pif + 2) + 3 * (samples // 2) + placement_flops_bound(tables, dist, samples, levels)


def most_samples(bound: Callable[[int], int], budget: float, start: int) -> int:
    """The most inputs s <= ``start`` with ``bound(s)`` <= ``budget`` (0 if none), by bisection;
    ``bound`` must be non-decreasing. Cost O(log start) calls."""
    lo, hi = 0, start
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bound(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _most_samples(tables: CircuitTables, dist: Distribution, budget: float, levels: int) -> int:
    """The most inputs whose ``systematic_flops_bound`` at ``levels`` fits ``budget`` (0 if none)."""
    start = int(budget // (per_input_flops(tables) + 2)) + 1
    return most_samples(lambda s: systematic_flops_bound(tables, dist, s, levels), budget, start)


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


# ---------------------------------------------------------------- the control variate

N_CONTROLS = 3  # the controls "auto" compares on its pilot (``wick_residual.CONTROLS`` less "auto")


def residual_flops_bound(
    tables: CircuitTables,
    dist: Distribution,
    samples: int,
    design: str,
    levels: int,
    control: str,
    per_input: int | None = None,
    n_controls: int = N_CONTROLS,
) -> int:
    """An upper bound on the FLOPs ``wick_residual`` counts after its explanation is built:
    ``samples`` inputs (a tenth of them the pilot of control "auto") placed by ``design`` and
    through f and the control (``per_input`` FLOPs each; default the cumulant explanation's Wick
    values), the pilot's comparison of ``n_controls`` controls, the reductions and the spread.
    Exact but for the systematic placement (bounded). Cost O(samples / 8192)."""
    fpi = per_input or wick_flops_per_input(tables.n_heads, tables.n, tables.k)
    syst = design == "systematic"

    def draw(s: int) -> int:  # inputs placed and through the Wick values, their spread
        return s * fpi + (placement_flops_bound(tables, dist, s, levels) + 3 * (s // 2) if syst else 0)

    pilot = samples // 10 if control == "auto" else 0
    total = draw(samples - pilot) + 3 * (samples - pilot)
    if pilot:
        total += draw(pilot) + (n_controls - 1) * (3 * (pilot // 2) if syst else 0) + 3 * n_controls * pilot
    return total


# the explanation settings of ``wick-residual``, cheapest first: the top-two cell explanation
# (``residual_cells``; the 2·10^4 and 6·10^4 most probable cells, then every cell, reading 2, 4, 4
# and 8 competitor outputs: 4.0·10^6, 1.2·10^7, 2.6·10^7 and 3.9·10^7 FLOPs at n = 64, k = 10),
# then covariance propagation with the cumulant's heavy-token caps. Mean propagation without heavy
# tokens (order 1, 2.3–2.8·10^8 FLOPs at k = 10) was the cheapest rung before the cells and is
# dropped: it explained nothing the systematic design does not (docs/estimators.md). Covariance
# propagation without heavy tokens was tried and dropped: on noised k = 10 models its second-order
# Wick terms explode (pilot spread 0.46-0.94 against 0.003 for the constant) and its first-order
# values are mean propagation's
RESIDUAL_RUNGS: tuple[Rung, ...] = (
    {"explanation": "cells", "cells": 20_000, "competitors": 2},
    {"explanation": "cells", "cells": 60_000, "competitors": 4},
    {"explanation": "cells", "competitors": 4},
    {"explanation": "cells", "competitors": 8},
    {"max_heavy": 1},
    {"max_heavy": 4},
    {},
)
RESIDUAL_SAMPLING_SHARE = 0.4  # the least share of the budget left for sampled inputs (see docs)
CELLS_SHARE = 0.45  # the most of the budget a cell explanation (exact cost) may take, but the cheapest


RESIDUAL_MARGIN = 2.5  # planned explanation cost / its probe (measured up to 1.94x, n = 64, k = 10)


def _is_cells(rung: Rung) -> bool:
    return rung.get("explanation") == "cells"


def _cell_settings(rung: Rung) -> tuple[int | None, int, bool]:
    """A cell rung's (cells kept, None: all; competitors; first-order terms)."""
    return rung.get("cells", 0) or None, rung.get("competitors", COMPETITORS), rung.get("first_order", False)


def _rung_per_input(tables: CircuitTables, dist: Distribution, rung: Rung) -> tuple[int | None, int]:
    """(FLOPs of one input's f and control, controls the pilot compares) under ``rung``."""
    if not _is_cells(rung):
        return None, N_CONTROLS
    return per_input_flops(tables) + cell_input_flops(tables, dist, *_cell_settings(rung)), 2


def explanation_flops(tables: CircuitTables, dist: Distribution, rung: Rung) -> int:
    """FLOPs ``explain`` counts with ``rung``'s settings on the all-zero tables of this shape
    (with heavy tokens, plus the run without them, as for full ``cumulant``). Not a bound: the
    direct summation of badly conditioned populations depends on the weights (measured 1.2–1.94×
    this on random and noised models), which is why ``wick_residual`` measures its explanation
    and sizes its sample from what is left. The cell explanation's cost is exact (it does not
    depend on the weights: ``cell_flops``). Cached."""
    if _is_cells(rung):
        return cell_flops(tables, dist, *_cell_settings(rung))
    key = ("explain", dist.name, tables.cfg, tuple(sorted(rung.items())))
    if key not in _PROBES:
        counter = FlopCounter()
        explain(zero_tables(tables), dist, counter=counter, **rung)
        _PROBES[key] = counter.total
    if rung.get("max_heavy", 12) > 0:
        return _PROBES[key] + explanation_flops(tables, dist, {**rung, "max_heavy": 0})
    return _PROBES[key]


def cell_flops(
    tables: CircuitTables, dist: Distribution, max_cells: int | None, competitors: int, first_order: bool = False
) -> int:
    """The FLOPs ``residual_cells.explain_cells`` counts with these settings: a function of
    (distribution, shape, settings) only, not of the weights (a test checks it), so measured once
    on the all-zero tables of this shape and cached. Cost: one run of the explanation."""
    key = ("cells", dist.name, tables.cfg, max_cells, competitors, first_order)
    if key not in _PROBES:
        counter = FlopCounter()
        explain_cells(
            zero_tables(tables),
            dist,
            counter=counter,
            max_cells=max_cells,
            competitors=competitors,
            first_order=first_order,
        )
        _PROBES[key] = counter.total
    return _PROBES[key]


def _plan_residual(tables: CircuitTables, dist: Distribution, budget: float) -> Plan:
    """The richest explanation that fits: a cell explanation whose exact cost is at most
    ``CELLS_SHARE`` of the budget (the cheapest one if it and 20 inputs fit at all), a cumulant one
    whose probed cost leaves at least ``RESIDUAL_SAMPLING_SHARE`` of the budget to sample with
    (``RESIDUAL_MARGIN`` times its probe plus 20 inputs must fit); the systematic design at the
    most levels (of 3, 2, 1) that keep nine tenths of one level's inputs. The run spends the rest
    of the budget on inputs (option ``flops``), so its counted FLOPs never exceed the budget."""
    best: Plan | None = None
    cheapest = math.inf
    for rung in RESIDUAL_RUNGS:
        f_expl = explanation_flops(tables, dist, rung)
        per_input, n_controls = _rung_per_input(tables, dist, rung)

        def bound(s: int, levels: int, per_input=per_input, n_controls=n_controls) -> int:
            return residual_flops_bound(tables, dist, s, "systematic", levels, "auto", per_input, n_controls)

        cells = _is_cells(rung)
        need = (1.0 if cells else RESIDUAL_MARGIN) * f_expl + bound(20, 1)
        cheapest = min(cheapest, need)
        share = CELLS_SHARE if cells else 1 - RESIDUAL_SAMPLING_SHARE
        if need > budget and not cells:
            break  # the cumulant rungs cost more the later they come: none after this one fits
        if need > budget or f_expl > share * budget and best is not None:
            continue
        left = budget - f_expl
        start = int(left // (per_input or wick_flops_per_input(tables.n_heads, tables.n, tables.k))) + 1

        def fits(levels: int, left: float = left, start: int = start, bound=bound) -> int:
            return most_samples(lambda s: bound(s, levels), left, start)

        one = fits(1)
        levels = next(lev for lev in (3, 2, 1) if lev == 1 or fits(lev) >= 0.9 * one)
        opts = {**rung, "design": "systematic", "levels": levels, "control": "auto", "flops": budget}
        best = Plan("wick-residual", budget, opts, int(budget))
    if best is None:
        raise _too_small("wick-residual", budget, cheapest, "its cheapest explanation and 20 inputs")
    return best


# ---------------------------------------------------------------- propagation ladders

# (strata, heavy, outputs, n_bins of ``bins``) per coarse rung, cheapest first. Measured on 10
# noised models per family (docs/estimators.md): "max" with 4 competitor outputs is cheaper and
# more accurate than "max" reading every output (so that rung was dropped, with every read-out, on
# both families); "positions" with 1 heavy token was dropped (worse
# than "max-query" with 4 on both families: k10 RMSE 0.015-0.038 against 0.0125, k4 0.069-0.11
# against 0.016); under laws with repeated tokens every "positions" rung was worse than that
# "max-query" rung (k4: 0.030-0.088), so ``ladder`` leaves them out there
_GRID = (
    ("max", 0, 4, 2),
    ("max-query", 1, 2, 2),
    ("max-query", 1, 4, 2),
    ("max-query", 2, 8, 3),
    ("max-query", 4, 12, 4),
    ("max-query", 4, 16, 4),
    ("positions", 2, 8, 3),
    ("positions", 4, 16, 4),
)


def _rung(method: str, strata: str, heavy: int, outputs: int | None, n_bins: int) -> Rung:
    r: Rung = {"strata": strata}
    if heavy:
        r["heavy"] = heavy
    if outputs is not None:
        r["outputs"] = outputs
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


# the settings of ``allocated``, cheapest first, each with the laws it is for: "G/S/H/K@mass" tiers
# (``allocated.parse_tiers``), conditioning added rung by rung (measured on 10 noised models per
# family: docs/estimators.md, "allocated"). Rungs with position groups (G or S > 1) need a law
# without repeated tokens; under laws with repeats (where they cannot run) the ladder adds heavy
# tokens and outputs to the (m, q) rows instead
_ANY, _NO_REPEATS, _REPEATS = "any", "no repeats", "repeats"
_ALLOCATED: tuple[tuple[Rung, str], ...] = (
    ({"strata": "max", "outputs": 4}, _ANY),
    ({"tiers": "1/1/1/4"}, _ANY),
    ({"tiers": "1/1/2/4@0.99,1/1/1/4"}, _ANY),
    ({"tiers": "2/2/2/4@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "1/1/4/16@0.99,1/1/1/4"}, _REPEATS),
    ({"tiers": "2/2/3/4@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "3/2/3/4@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "3/2/4/4@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "1/1/4/all@0.999,1/1/1/4"}, _REPEATS),
    ({"tiers": "4/2/4/4@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "4/2/4/8@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "1/1/8/all@0.999,1/1/2/4"}, _REPEATS),
    ({"tiers": "1/1/12/all@0.9999,1/1/4/16"}, _REPEATS),
    ({"tiers": "9/3/6/8@0.8,4/2/4/8@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "1/1/24/all@0.99999,1/1/8/all"}, _REPEATS),
    ({"tiers": "9/4/6/16@0.8,4/2/4/8@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "9/9/6/8@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "9/9/8/16@0.99,1/1/1/4"}, _NO_REPEATS),
    ({"tiers": "9/9/12/16@0.999,4/2/4/8"}, _NO_REPEATS),
)


def _allocated_rungs(dist: Distribution | None) -> tuple[Rung, ...]:
    """``allocated``'s rungs for ``dist`` (every rung for None)."""
    if dist is None:
        return tuple(r for r, _ in _ALLOCATED)
    own = _REPEATS if dist.allows_repeats else _NO_REPEATS
    return tuple(r for r, laws in _ALLOCATED if laws in (_ANY, own))


def ladder(method: str, dist: Distribution | None = None) -> list[Rung]:
    """The settings ``plan`` chooses among for a propagation method, cheapest first (under
    ``dist``: without the "positions" rungs where tokens can repeat; see ``_GRID``; for
    ``allocated`` without its position groups there)."""
    if method == "allocated":
        return [dict(r) for r in _allocated_rungs(dist)]
    coarse_rungs = _COARSE[method]
    if dist is not None and dist.allows_repeats:
        coarse_rungs = tuple(r for r in coarse_rungs if r["strata"] != "positions")
    return [dict(r) for r in coarse_rungs] + [dict(r) for r in _FULL[method]]


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
    if method == "allocated":
        return allocated_cost(dist, tables.n, tables.k, **rung)
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
    rungs = ladder(method, dist)
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

_PLANNERS = {
    "sampling": _plan_sampling,
    "stratified": _plan_stratified,
    "systematic": _plan_systematic,
    "wick-residual": _plan_residual,
}


def plannable(method: str) -> bool:
    """Whether ``method`` has a compute knob."""
    return method in _PLANNERS or method in _COARSE or method == "allocated"


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
    if method in _COARSE or method == "allocated":
        return _plan_ladder(method, tables, dist, budget)
    knobs = sorted([*_PLANNERS, *_COARSE, "allocated"])
    raise MaxkError(f"estimator {method!r} has no compute knob: --budget applies to {', '.join(knobs)}")
