"""Sampling baselines: plain Monte Carlo and stratified sampling with exact stratum weights.

Both push sampled inputs through the circuit tables (never the model) in chunks, so memory stays
bounded: a sample costs about 2·h·k·n + 5·n + 6·h·k FLOPs (gathered value rows, attention-weighted
sum, output softmax). ``stratified`` is also the truth source for k >= 6 in the benchmark.
"""

from __future__ import annotations

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution, get_distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from ..sampling import per_input_metrics
from .base import EstimateValue

_CHUNK = 1 << 13  # samples per chunk: [chunk, k, n] float64 gathers stay ~50 MB for k=10, n=64


def soft_probs(tables: CircuitTables, tokens: np.ndarray, counter: FlopCounter | None = None) -> np.ndarray:
    """Probability the model puts on the right answer (the max) for each input.

    tokens: [b, k] int -> [b] float64. Cost per input: h·(k gathers + 4k softmax + 2k·n value sum)
    + n (direct path) + 4n (output softmax) FLOPs; processed in chunks of 8192 inputs.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    b, k = tokens.shape
    n, H = tables.n, tables.n_heads
    out = np.empty(b, dtype=np.float64)
    for s in range(0, b, _CHUNK):
        out[s : s + _CHUNK] = per_input_metrics(tables, tokens[s : s + _CHUNK])[1]
    if counter is not None:
        counter.add(b * H * (k + 4 * k + k * n + 2 * k * n), "sample_attention")
        counter.add(b * (n + 4 * n), "sample_softmax")
    return out


# ---------------------------------------------------------------- plain Monte Carlo


def sampling(
    tables: CircuitTables, dist: Distribution, *, counter: FlopCounter, rng: np.random.Generator, samples: int = 10_000
) -> EstimateValue:
    """Plain Monte Carlo: mean soft accuracy of ``samples`` inputs drawn from ``dist``.

    spread = standard error of the mean. Cost: ``samples`` × (one input through the tables).
    """
    samples = _check_samples(samples, 2)
    p = soft_probs(tables, dist.sample(tables.n, tables.k, samples, rng), counter)
    counter.add(2 * samples, "reduce")
    se = float(p.std(ddof=1) / np.sqrt(samples))
    return EstimateValue(float(p.mean()), spread=se, details={"samples": samples})


def _check_samples(samples, minimum: int) -> int:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < minimum:
        raise MaxkError(f"samples must be an integer >= {minimum}, got {samples!r}")
    return int(samples)


def strata_weights(dist: str | Distribution, n: int, k: int, by_query: bool) -> np.ndarray:
    """Exact stratum probabilities: [n] P[max = m], or [n, n] P[max = m, query = q] (zero for
    q > m), from the distribution's exact counts."""
    d = get_distribution(dist)
    return d.max_query_weights(n, k) if by_query else d.max_weights(n, k)


# ---------------------------------------------------------------- stratified sampling


def _allocate(weights: np.ndarray, sd: np.ndarray, budget: int, minimum: int) -> np.ndarray:
    """Integer sample counts per stratum ∝ weight·sd (Neyman), at least ``minimum`` each."""
    score = weights * sd
    if score.sum() <= 0:
        score = weights.copy()
    alloc = np.full(weights.shape, minimum, dtype=np.int64)
    extra = max(budget - alloc.sum(), 0)
    alloc += np.floor(extra * score / score.sum()).astype(np.int64)
    return alloc


def _run_strata(tables, dist, ms, qs, alloc, rng, counter):
    """Sample alloc[i] inputs in stratum (ms[i], qs[i]); return per-stratum (sum, sum of squares)."""
    sid = np.repeat(np.arange(len(ms)), alloc)
    s1 = np.zeros(len(ms))
    s2 = np.zeros(len(ms))
    step = 1 << 16
    for s in range(0, len(sid), step):
        idx = sid[s : s + step]
        x = dist.sample_given(tables.n, tables.k, ms[idx], None if qs is None else qs[idx], rng)
        p = soft_probs(tables, x, counter)
        s1 += np.bincount(idx, weights=p, minlength=len(ms))
        s2 += np.bincount(idx, weights=p * p, minlength=len(ms))
    counter.add(4 * len(sid), "reduce")
    return s1, s2


def stratified(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    samples: int = 10_000,
    by_query: bool = False,
    pilot: float = 0.2,
) -> EstimateValue:
    """Stratified sampling over max value m (and query q if ``by_query``), exact stratum weights.

    A pilot of ``pilot``·samples inputs (spread evenly, >= 2 per stratum) measures each stratum's
    spread; the rest is allocated ∝ weight × pilot standard deviation (Neyman, >= 2 each) and
    drawn afresh. Estimate = Σ_s w_s · mean_s over the fresh samples only (unbiased given the
    allocation); spread = sqrt(Σ_s w_s² var_s / n_s), the stratified standard error.
    Cost: ``samples`` inputs through the tables plus O(strata).
    """
    n, k = tables.n, tables.k
    w = strata_weights(dist, n, k, by_query)
    if by_query:
        ms, qs = np.nonzero(w)
        weights = w[ms, qs]
    else:
        ms = np.nonzero(w)[0]
        qs = None
        weights = w[ms]
    n_strata = len(ms)
    samples = _check_samples(samples, 4 * n_strata)
    n_pilot = max(2 * n_strata, int(pilot * samples))
    a1 = _allocate(weights, np.ones(n_strata), n_pilot, 2)
    s1, s2 = _run_strata(tables, dist, ms, qs, a1, rng, counter)
    mean1 = s1 / a1
    sd = np.sqrt(np.maximum(s2 / a1 - mean1**2, 0.0) * a1 / (a1 - 1))
    # The pilot only sets the allocation: reusing its samples in the means would bias them (a
    # stratum whose pilot missed the rare failures would get few more samples to find them).
    a2 = _allocate(weights, sd + 1e-12, samples - a1.sum(), 2)
    t1, t2 = _run_strata(tables, dist, ms, qs, a2, rng, counter)
    cnt = a2
    mu = t1 / cnt
    var = np.maximum(t2 / cnt - mu**2, 0.0) * cnt / (cnt - 1)
    est = float(weights @ mu)
    se = float(np.sqrt(np.sum(weights**2 * var / cnt)))
    counter.add(6 * n_strata, "combine")
    return EstimateValue(
        est, spread=se, details={"samples": int(a1.sum() + a2.sum()), "strata": n_strata, "by_query": by_query}
    )
