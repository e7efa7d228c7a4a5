"""The estimator registry: one name -> one function, and ``estimate`` to run any of them.

Every estimator has the signature

    fn(tables: CircuitTables, dist: str, *, counter: FlopCounter, rng: np.random.Generator,
       **options) -> float | Estimate

It reads the model only through the circuit tables, adds the floating-point work it performs to
``counter`` where it performs it, draws any randomness from ``rng``, and returns either the
estimated expected soft accuracy or a full ``Estimate`` (e.g. with a ``spread``). ``estimate``
fills in the method name, the FLOPs counted and the wall time.
"""
from __future__ import annotations

import inspect
import time
from typing import Callable

import numpy as np

from ..circuits import CircuitTables, circuit_tables
from ..distributions import check_distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from .base import Estimate
from .bins import bins, mean
from .sampling import sampling, stratified
from .systematic import systematic

EstimatorFn = Callable[..., "float | Estimate"]

ESTIMATORS: dict[str, EstimatorFn] = {
    "sampling": sampling,
    "stratified": stratified,
    "systematic": systematic,
    "mean": mean,
    "bins": bins,
}

# --- cumulant helper: ``cumulant`` (covariance propagation) registered here
from .cumulant import cumulant  # noqa: E402

ESTIMATORS["cumulant"] = cumulant
# --- end cumulant


def options_of(method: str) -> set[str]:
    """Keyword options estimator ``method`` accepts beyond (tables, dist, counter, rng)."""
    return _options_of(ESTIMATORS[method])


def _options_of(fn: EstimatorFn) -> set[str]:
    params = inspect.signature(fn).parameters
    return {p.name for p in params.values() if p.kind is p.KEYWORD_ONLY} - {"counter", "rng"}


def estimate(
    model_or_tables,
    method: str,
    dist: str = "uniform",
    *,
    seed: int | None = 0,
    counter: FlopCounter | None = None,
    **options,
) -> Estimate:
    """Run estimator ``method`` on a model (or its circuit tables) under distribution ``dist``.

    ``seed`` seeds the estimator's random generator (only sampling methods use it); ``options``
    are passed on (e.g. ``samples=`` for sampling methods, ``n_bins=`` for ``bins``); an option the
    method does not take is a ``MaxkError``. Options set to None are dropped. The FLOPs reported
    are those the estimator counted (computing the tables is not included: every method shares it).
    """
    if method not in ESTIMATORS:
        raise MaxkError(f"unknown estimator {method!r}: choose one of {', '.join(sorted(ESTIMATORS))}")
    fn = ESTIMATORS[method]
    options = {k: v for k, v in options.items() if v is not None}
    bad = set(options) - _options_of(fn)
    if bad:
        raise MaxkError(f"method {method!r} does not take option(s) {', '.join(sorted(bad))}")
    tables = model_or_tables if isinstance(model_or_tables, CircuitTables) else circuit_tables(model_or_tables)
    check_distribution(dist, tables.n, tables.k)
    counter = FlopCounter() if counter is None else counter
    start_flops = counter.total
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    out = fn(tables, dist, counter=counter, rng=rng, **options)
    seconds = time.perf_counter() - t0
    flops = counter.total - start_flops
    if isinstance(out, Estimate):
        out.method, out.dist, out.flops, out.seconds = method, dist, flops, seconds
        return out
    return Estimate(method=method, estimate=float(out), flops=flops, seconds=seconds, dist=dist)
