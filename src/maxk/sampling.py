"""Stratified sampling of accuracy, soft accuracy and loss where exhaustive work is out of reach.

Strata are the value of the maximum, whose probabilities are exact (``Distribution.max_weights``);
samples are allotted in proportion to them (at least two per non-empty stratum), and each
figure is reported with a 95% interval from the stratified standard error.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from .circuits import CircuitTables, circuit_tables
from .distributions import Distribution, resolve
from .errors import MaxkError
from .results import EvalResult
from .torch_threads import single_threaded

_BATCH = 1 << 15


def proportional_allocation(dist: Distribution, n: int, k: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact P[max = m] [n] and sample counts [n] proportional to it, at least two for every max
    that occurs (zero for one that cannot)."""
    w = dist.max_weights(n, k)
    live = np.array([dist.count_with_max(n, k, m) > 0 for m in range(n)])
    return w, np.where(live, np.maximum(2, np.floor(w * samples)), 0).astype(np.int64)


def per_input_metrics(tab: CircuitTables, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(correct, probability of the max, loss) per input for tokens [b, k]; cost O(b·h·k·n).
    Single-threaded: callers pass chunks of ~10^4 inputs, too small to split."""
    toks = torch.as_tensor(tokens, dtype=torch.int64)
    with single_threaded():
        logits = tab.logits_torch(toks)
        label = toks.max(dim=1).values
        lm = logits.gather(1, label[:, None]).squeeze(1)
        other = logits.scatter(1, label[:, None], float("-inf")).amax(1)
        loss = torch.logsumexp(logits, 1) - lm
    return (other < lm).numpy(), torch.exp(-loss).numpy(), loss.numpy()


def evaluate_sampled(
    model_or_tables,
    dist: str | Distribution = "uniform",
    samples: int = 1_000_000,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Stratified estimate of accuracy, soft accuracy and loss from ``samples`` inputs, with each
    figure's standard error in ``spread`` (95% intervals: ``ci95``). Cost O(samples·h·k·n)."""
    t0 = time.perf_counter()
    tab = model_or_tables if isinstance(model_or_tables, CircuitTables) else circuit_tables(model_or_tables)
    n, k = tab.n, tab.k
    d = resolve(dist, n, k)
    if samples < 2 * n:
        raise MaxkError(f"--samples must be at least 2n = {2 * n} (two per stratum)")
    rng = np.random.default_rng(seed)
    w, alloc = proportional_allocation(d, n, k, samples)
    live = alloc > 0
    means = np.zeros((3, n))
    variances = np.zeros((3, n))
    done = 0
    for m in np.nonzero(live)[0]:
        parts = []
        for start in range(0, alloc[m], _BATCH):
            size = min(_BATCH, alloc[m] - start)
            toks = d.sample_with_max(n, k, int(m), size, rng)
            parts.append(np.stack(per_input_metrics(tab, toks)).astype(np.float64))
            done += size
            if progress is not None:
                progress(done, int(alloc.sum()))
        vals = np.concatenate(parts, axis=1)
        means[:, m] = vals.mean(axis=1)
        variances[:, m] = vals.var(axis=1, ddof=1) / vals.shape[1]
    est = means @ w
    se = np.sqrt(variances @ (w**2))
    names = ("accuracy", "soft_accuracy", "loss")
    return EvalResult(
        method="stratified",
        dist=d.name,
        n_sequences=d.n_sequences(n, k),
        seconds=time.perf_counter() - t0,
        options={"samples": samples, "seed": seed},
        correct=None,
        accuracy=float(est[0]),
        soft_accuracy=float(est[1]),
        loss=float(est[2]),
        samples=int(alloc.sum()),
        spread={nm: float(v) for nm, v in zip(names, se, strict=True)},
    )
