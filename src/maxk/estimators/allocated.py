"""Mass-allocated propagation: the work per (max, query) row where the probability is (issue 11).

A deterministic estimator (it samples nothing: the same model gives the same number) built from
the coarse settings of ``maxk.estimators.coarse``, with its compute spent where the input law
puts its mass and where the coarse settings' measured error comes from:

* **Where the mass is.** Under ``distinct`` (k = 10, n = 64) P[max = m] ∝ C(m, k − 1): the maxima
  m ≥ 42 carry 99% of the probability, the 37% of (max, query) rows below them 1%. ``tiers``
  ("G/S/H/K@mass,...", ``parse_tiers``) gives the largest maxima, up to the first tier's share of
  the probability (``top_maxima``), the richest setting, the next maxima the next one, and so on;
  e.g. "4/2/4/8@0.99,1/1/1/4" gives the maxima below the top 99% the cheap (m, q) setting with
  one heavy token, 4 competitor outputs and the max's positions averaged. Whatever a tier gets
  wrong moves the estimate by at most its mass, since each row's value lies in [0, 1].
* **Where the error is** (measured on 10 noised k = 10 models, docs/estimators.md): averaging
  the max's position (strata "max-query") over-estimates by up to +0.03 (the mean of exp(EQKP)
  overstates the max's typical attention); a heavy token at the low positions' mean factor
  under-estimates by up to −0.05 (the same Jensen error in the other direction); heavy tokens
  left out entirely, −0.1 to −0.3. A tier "G/S/H/K" therefore splits each (m, q) row by the
  **group of the max's position** (G runs of the query's non-query positions ranked by
  EQKP[q, ·]; ``coarse``'s ``groups``) and places each of its H heaviest population tokens in
  each of S such groups in turn (the group's free slots' mean factor and α-weighted PVOU),
  reading the max's output, K competitors and the heavy tokens' outputs through the softmax at
  the low tokens' mean attention share (mean read-out).

Presumes (beyond the exact probabilities of every row, split and heavy-token event, from the
distribution kernel): within a group of positions the max (or a heavy token) has the group's
mean positional factor; the light tokens' total weight is at its mean and their value is their
unweighted mean EVOU plus the free positions' α-weighted PVOU; of each row's H heaviest
candidates only the heaviest drawn stands out (the others enter by their mean weight); the
outputs not read carry no probability. Strata "max" (the cheapest setting, ≈ 7·10⁴ FLOPs at
n = 64, k = 10) reads the max only, the query mixed in (``coarse``). Costs depend on
(distribution, n, k, settings) only and are exact (``allocated_cost``), so the planner
(``maxk.estimators.budget``) fits them to a budget.
"""

from __future__ import annotations

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution, get_distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from .base import EstimateValue
from .coarse import coarse_cost, coarse_propagation

DEFAULT_TIERS = "4/2/4/all@0.99,1/1/1/all"  # the default under laws without repeated tokens
DEFAULT_TIERS_REPEATS = "1/1/4/all@0.999,1/1/1/all"  # ... and with them (no position groups)


def top_maxima(dist: str | Distribution, n: int, k: int, mass: float) -> int:
    """The least m0 with P[max ≥ m0] ≥ ``mass``: the maxima m0..n−1 carry that much probability.
    Cost O(n) (the kernel's exact max law)."""
    if isinstance(mass, bool) or not isinstance(mass, (int, float, np.floating)) or not 0.0 < mass <= 1.0:
        raise MaxkError(f"mass must be a probability in (0, 1], got {mass!r}")
    if mass >= 1.0:
        return 0
    w = get_distribution(dist).max_weights(n, k)
    tail = np.cumsum(w[::-1])[::-1]  # tail[m] = P[max >= m]
    return int(np.nonzero(tail >= mass)[0].max())


def parse_tiers(tiers: str) -> list[tuple[dict, float]]:
    """'G/S/H/K@mass,...' -> [(settings, cumulative mass), ...]: tier i holds the settings
    (``groups`` G, ``slot_groups`` S, ``heavy`` H, ``outputs`` K or "all") for the maxima that
    bring the probability covered so far up to its mass; the last tier (no "@") takes the rest
    (mass 1). Groups 1/1 mean the max's positions averaged (no position groups). MaxkError for
    anything else."""
    if not isinstance(tiers, str) or not tiers.strip():
        raise MaxkError(f"tiers must be a string like {DEFAULT_TIERS!r}, got {tiers!r}")
    out: list[tuple[dict, float]] = []
    parts = [t.strip() for t in tiers.split(",")]
    for i, part in enumerate(parts):
        spec, _, mass_text = part.partition("@")
        fields = spec.split("/")
        try:
            if len(fields) != 4:
                raise ValueError
            G, S, H = (int(f) for f in fields[:3])
            K = None if fields[3].strip() == "all" else int(fields[3])
            mass = float(mass_text) if mass_text else 1.0
            if G < 1 or S < 1 or H < 0 or (K is not None and K < 1):
                raise ValueError
        except ValueError:
            raise MaxkError(
                f"tier {part!r} is not G/S/H/K@mass (G, S >= 1 groups, H >= 0 heavy tokens, K >= 1 outputs or "
                f"'all'; e.g. {DEFAULT_TIERS!r})"
            ) from None
        last = i == len(parts) - 1
        if last != (not mass_text) or not 0.0 < mass <= 1.0 or (out and mass <= out[-1][1]):
            raise MaxkError(
                f"tiers {tiers!r}: every tier but the last needs '@mass' with masses increasing in (0, 1), "
                "the last none (it takes the rest)"
            )
        grouped = G > 1 or S > 1
        settings = dict(groups=G if grouped else None, slot_groups=S if grouped else None, heavy=H, outputs=K)
        out.append((settings, mass))
    return out


def _parts(dist: Distribution, n: int, k: int, strata: str, tiers: str | None, outputs: int | None) -> list[dict]:
    """The coarse runs an estimate is made of (keyword arguments of ``coarse_propagation`` past
    the read-out): strata "max" as it is; else one run per tier over its range of maxima, the
    richest tier on the largest maxima (tiers whose range is empty are skipped). ``tiers`` None:
    ``DEFAULT_TIERS``, or ``DEFAULT_TIERS_REPEATS`` under a law with repeated tokens."""
    if tiers is None:
        tiers = DEFAULT_TIERS_REPEATS if dist.allows_repeats else DEFAULT_TIERS
    if strata == "max":
        return [dict(strata="max", outputs=outputs)]
    if strata != "max-query":
        raise MaxkError(f"allocated: strata must be 'max' or 'max-query', got {strata!r}")
    hi = n
    runs = []
    for settings, mass in parse_tiers(tiers):
        lo = top_maxima(dist, n, k, mass)
        if lo < hi:
            runs.append(dict(strata="max-query", maxima=(lo, hi), **settings))
        hi = min(hi, lo)
    return runs


def allocated_cost(
    dist: str | Distribution,
    n: int,
    k: int,
    *,
    strata: str = "max-query",
    tiers: str | None = None,
    outputs: int | None = 4,
) -> int:
    """The FLOPs ``allocated`` counts with these settings (independent of the weights): its
    coarse runs' exact costs and the sum of their per-max parts. Cost O(rows)."""
    d = get_distribution(dist)
    runs = _parts(d, n, k, strata, tiers, outputs)
    return sum(coarse_cost(d, n, k, readout="mean", n_bins=1, **r) for r in runs) + len(runs) * n


def allocated(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    strata: str = "max-query",
    tiers: str | None = None,
    outputs: int | None = 4,
) -> EstimateValue:
    """Expected soft accuracy by mass-allocated propagation (module docstring). ``tiers``
    "G/S/H/K@mass,...": the (m, q) rows of the largest maxima, up to the first tier's share of
    the probability, split by the group of the max's position (G groups) and on their H heaviest
    tokens in each of S slot groups, reading the max's output and K competitors; the next maxima
    by the next tier, and so on. Strata "max": the max only, ``outputs`` competitors (the
    cheapest setting; ``tiers`` unused). Deterministic (``rng`` unused). Groups need a law without
    repeated tokens; ``tiers`` None is ``DEFAULT_TIERS`` (``DEFAULT_TIERS_REPEATS`` where tokens
    can repeat), which read every output. Cost ``allocated_cost(...)`` FLOPs (≈ 9·10⁷ with the
    defaults at n = 64, k = 10; the budget planner's ladder starts at 7·10⁴)."""
    runs = _parts(dist, tables.n, tables.k, strata, tiers, outputs)
    per_max = np.zeros(tables.n)
    tier_from = []
    for r in runs:
        per_max += coarse_propagation(tables, dist, readout="mean", n_bins=1, counter=counter, **r)[1]
        tier_from.append(int(r.get("maxima", (0, tables.n))[0]))
    counter.add(len(runs) * tables.n, "sum")
    details = {"tiers_from_max": tier_from, "per_max": per_max.tolist()}
    return EstimateValue(float(np.clip(per_max.sum(), 0.0, 1.0)), details=details)
