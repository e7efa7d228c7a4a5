"""The estimators by name, and ``estimate`` to run any of them.

An estimator is registered with ``ESTIMATORS.register(name, fn, cost=..., summary=...)`` below.
Every estimator has the signature

    fn(tables: CircuitTables, dist: Distribution, *, counter: FlopCounter,
       rng: np.random.Generator, **options) -> float | EstimateValue

It reads the model only through the circuit tables, adds the floating-point work it performs to
``counter`` where it performs it, draws any randomness from ``rng``, and returns the estimated
expected soft accuracy (or an ``EstimateValue`` with a spread and details). Its options are its
keyword-only parameters. ``estimate`` builds the one ``Estimate`` record with the FLOPs counted and
the wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..circuits import CircuitTables, circuit_tables
from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from ..registry import Refusal, Registry, multi_head
from ..results import Estimate
from .allocated import allocated
from .base import EstimateValue
from .bins import bins, mean
from .budget import plan
from .cumulant import cumulant
from .sampling import sampling, stratified
from .systematic import systematic
from .wick_residual import wick_residual

EstimatorFn = Callable[..., "float | EstimateValue"]

ESTIMATORS: Registry[EstimatorFn] = Registry("estimator")

_EXCHANGEABLE = Refusal("needs exchangeable tokens (the systematic design)", lambda cfg, dist: not dist.exchangeable)
_SINGLE_HEAD = multi_head(
    "supports single-head models only (n_heads = 1); cumulant, sampling, stratified and systematic handle several heads"
)

ESTIMATORS.register(
    "sampling", sampling, cost="O(samples·h·k·n)", summary="plain Monte Carlo over inputs drawn from the distribution"
)
ESTIMATORS.register(
    "stratified",
    stratified,
    cost="O(samples·h·k·n)",
    summary="stratified by max (or max and query), exact weights, Neyman allocation",
)
ESTIMATORS.register(
    "systematic",
    systematic,
    cost="O(samples·(h·k·n + levels·(n + k)))",
    summary="systematic sampling down the order-statistic hierarchy (max, positions, ...)",
    refuses=(_EXCHANGEABLE,),
)
ESTIMATORS.register(
    "mean", mean, cost="O(n^4 + cases·n)", summary="mean propagation (bins with one bin)", refuses=(_SINGLE_HEAD,)
)
ESTIMATORS.register(
    "bins",
    bins,
    cost="O(n^4 + n^2 k b^2 log b + cases·b·n)",
    summary="Wu's bin propagation, generalised: exact cases, binned low-token sums",
    refuses=(_SINGLE_HEAD,),
)
ESTIMATORS.register(
    "cumulant",
    cumulant,
    cost="O(h^2 n^3 + strata·h^2·n·(n + k))",
    summary="covariance propagation over exact strata, heavy tokens conditioned on",
)
ESTIMATORS.register(
    "allocated",
    allocated,
    cost="O(n^2 log n + n^2·k·(1 + k^2)·(n + k))",
    summary="deterministic propagation, work allocated by mass: max's position groups, heavy tokens per group",
    refuses=(_SINGLE_HEAD,),
)
ESTIMATORS.register(
    "wick-residual",
    wick_residual,
    cost="O(cumulant + samples·h·k·n)",
    summary="cumulant estimate + sampled mean of f - W (Wick values as a control variate); unbiased",
    refuses=(_EXCHANGEABLE,),
)


def options_of(method: str) -> set[str]:
    """Keyword options estimator ``method`` accepts beyond (tables, dist, counter, rng)."""
    return set(ESTIMATORS.get(method).options)


def estimate(
    model_or_tables,
    method: str,
    dist: str | Distribution = "uniform",
    *,
    seed: int | None = 0,
    counter: FlopCounter | None = None,
    budget: float | None = None,
    **options,
) -> Estimate:
    """Run estimator ``method`` on a model (or its circuit tables) under distribution ``dist``.

    ``seed`` seeds the estimator's random generator (only sampling methods use it); ``options``
    are the method's declared options (e.g. ``samples=``, ``n_bins=``; None values dropped). The
    FLOPs reported are those the estimator counted (added to ``counter`` too, if given; computing
    the tables is not included: every method shares it). MaxkError for an unknown method or
    option, a bad distribution, or a model the method declares it refuses.

    ``budget`` = F FLOPs lets ``maxk.estimators.budget.plan`` choose the method's settings so that
    its counted FLOPs stay within F (the options are then the plan's, and may not be given too);
    MaxkError when F is below the method's cheapest setting, or — never silently — when a run
    counted more than F (possible only for full ``cumulant``, whose cost depends on the model)."""
    est = ESTIMATORS.get(method)
    options = est.check_options(options)
    tables = model_or_tables if isinstance(model_or_tables, CircuitTables) else circuit_tables(model_or_tables)
    d = resolve(dist, tables.n, tables.k)
    reason = est.refusal(tables.cfg, d)
    if reason is not None:
        raise MaxkError(f"estimator {method!r} {reason}")
    if budget is not None:
        if options:
            raise MaxkError(
                f"budget chooses {method!r}'s settings: give either a budget or {', '.join(sorted(options))}"
            )
        options = dict(plan(method, tables, d, budget).options)
    counter = FlopCounter() if counter is None else counter
    start_flops = counter.total
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    out = est.run(tables, d, counter=counter, rng=rng, **options)
    seconds = time.perf_counter() - t0
    value = out if isinstance(out, EstimateValue) else EstimateValue(float(out))
    spent = counter.total - start_flops
    if budget is not None and spent > budget:
        raise MaxkError(
            f"estimator {method!r} counted {spent:.4g} FLOPs, over its budget of {float(budget):.4g} "
            f"(settings {options}): refused"
        )
    return Estimate(
        method=method,
        dist=d.name,
        n_sequences=d.n_sequences(tables.n, tables.k),
        seconds=seconds,
        flops=spent,
        options={**options, "seed": seed} if budget is None else {**options, "seed": seed, "budget": float(budget)},
        estimate=float(value.estimate),
        spread=value.spread,
        details=value.details,
    )
