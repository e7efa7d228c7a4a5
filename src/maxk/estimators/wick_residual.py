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

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from ..wick_propagation import explain
from .base import EstimateValue
from .sampling import _check_samples
from .systematic import check_levels, successive_difference_spread, systematic_chunks

DESIGNS = ("systematic", "plain")
_CHUNK = 1 << 13


def wick_residual(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    samples: int = 100_000,
    design: str = "systematic",
    levels: int = 3,
) -> EstimateValue:
    """The cumulant estimate plus the mean of f − W over ``samples`` inputs drawn by ``design``
    ("systematic" or "plain"). Unbiased; spread = the residual mean's standard error. Cost: the
    explanation (as ``cumulant``) plus, per input, one pass through the tables and O(h·n) for W."""
    samples = _check_samples(samples, 2)
    levels = check_levels(levels)
    if design not in DESIGNS:
        raise MaxkError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    n, k = tables.n, tables.k
    expl = explain(tables, dist, counter=counter)
    if design == "systematic":
        chunks = systematic_chunks(dist, n, k, samples, levels, rng, counter)
    else:
        chunks = (dist.sample(n, k, min(_CHUNK, samples - s0), rng) for s0 in range(0, samples, _CHUNK))
    parts = []
    for x in chunks:
        v = expl.values(x, counter)
        parts.append(np.asarray(v["soft"], dtype=np.float64) - np.asarray(v["wick"], dtype=np.float64))
    r = np.concatenate(parts)
    counter.add(3 * samples, "reduce")
    if design == "systematic":
        spread = successive_difference_spread(r, counter)
    else:
        spread = float(r.std(ddof=1) / np.sqrt(samples))
    details = {
        "samples": samples,
        "design": design,
        "explanation": float(expl.estimate),
        "residual_mean": float(r.mean()),
        "residual_sd": float(r.std(ddof=1)),
    }
    if design == "systematic":
        details["levels"] = levels
    return EstimateValue(float(expl.estimate + r.mean()), spread=spread, details=details)
