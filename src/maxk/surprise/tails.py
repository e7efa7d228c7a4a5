"""Binomial tails and window probabilities in bits, computed in log space (they underflow float64).

``tail_bits(N, c, p)`` is -log2 P(Binomial(N, p) >= c): the surprise of c or more successes in N
independent trials that each succeed with probability p. For a near-perfect model (c close to N,
p = 1/n) the probability is far below the smallest float (2^-10^8 for n = 64, k = 4), so the sum
of the binomial terms is taken as a log-sum-exp of log-pmf terms, walking away from the mode where
the terms shrink geometrically and stopping once the rest cannot change the sum by e^-80
relative. Accuracy: the log-pmf terms come from ``gammaln``, whose absolute error is about one
ulp of ln Γ(N+1), so the result has a relative error of ~1e-15 (absolute ~1e-7 bits at
N = 1.7e7, where the figure is ~1e8 bits); tests hold it to exact big-integer arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln
from scipy.stats import norm

LN2 = math.log(2.0)
_BLOCK = 4096  # binomial terms summed per step
_STOP = 80.0  # nats: a block whose largest term is this far below the running sum ends the walk


def _log_pmf(N: int, p: float, j: np.ndarray) -> np.ndarray:
    """ln P(Binomial(N, p) = j) for integer j [m] with 0 <= j <= N (0 < p < 1)."""
    jf = j.astype(np.float64)
    return gammaln(N + 1.0) - gammaln(jf + 1.0) - gammaln(N - jf + 1.0) + jf * math.log(p) + (N - jf) * math.log1p(-p)


def _log_walk(N: int, p: float, start: int, step: int) -> float:
    """ln of the sum of P(X = j) for j = start, start+step, ... within [0, N] (step = ±1), where the
    terms decrease along the walk (start is on the far side of the mode). Cost O(terms that
    matter), at most N + 1."""
    total = -math.inf
    j = start
    while 0 <= j <= N:
        stop = min(N, j + _BLOCK - 1) if step > 0 else max(0, j - _BLOCK + 1)
        js = np.arange(j, stop + step, step, dtype=np.int64)
        terms = _log_pmf(N, p, js)
        top = float(terms.max())
        block = top + math.log(float(np.exp(terms - top).sum()))
        if block < total - _STOP:
            break
        total = float(np.logaddexp(total, block))
        j = stop + step
    return total


def log_tail(N: int, c: int, p: float) -> float:
    """ln P(Binomial(N, p) >= c), exact for the degenerate cases (c <= 0: 0; c > N or p = 0 < c:
    -inf). Cost O(sqrt(N·p·(1-p)) + 1) terms in practice (those within e^-80 of the largest)."""
    if not (0.0 <= p <= 1.0) or N < 0:
        raise ValueError(f"need N >= 0 and 0 <= p <= 1, got N={N}, p={p}")
    if c <= 0:
        return 0.0
    if c > N:
        return -math.inf
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return 0.0
    if c > N * p:  # upper tail: terms fall from j = c upward
        return _log_walk(N, p, c, +1)
    # lower side of the mode: 1 - P(X <= c-1), the terms falling from c-1 downward
    lower = _log_walk(N, p, c - 1, -1)
    return math.log1p(-math.exp(lower)) if lower < -1e-300 else -math.inf


def tail_bits(N: int, c: int, p: float) -> float:
    """-log2 P(Binomial(N, p) >= c) in bits (0 when c <= 0, inf when impossible). See module."""
    lt = log_tail(N, c, p)
    return math.inf if lt == -math.inf else max(0.0, -lt / LN2)


def normal_window_bits(y: float, mean: float, sd: float, width: float) -> float:
    """-log2 P(|Y - y| <= width/2) for Y ~ Normal(mean, sd²): the surprise of observing y at
    resolution ``width`` under a Gaussian predictive distribution. In log space (far tails fine).
    Cost O(1)."""
    if not sd > 0 or not width > 0:
        raise ValueError(f"need sd > 0 and width > 0, got sd={sd}, width={width}")
    if width < 1e-6 * sd:  # the density times the width, to a relative error below (width/sd)^2
        lp = float(norm.logpdf((y - mean) / sd)) - math.log(sd) + math.log(width)
        return max(0.0, -lp / LN2)
    a, b = (y - width / 2 - mean) / sd, (y + width / 2 - mean) / sd
    if b < 0:  # both in the lower tail: use the upper tail by symmetry for accuracy
        a, b = -b, -a
    # P = Phi(b) - Phi(a) = sf(a) - sf(b), with a <= b and b >= 0
    la, lb = float(norm.logsf(a)), float(norm.logsf(b))
    if la == -math.inf:
        return math.inf
    lp = la + math.log1p(-math.exp(lb - la)) if lb < la else -math.inf
    if lp == -math.inf or not math.isfinite(lp):  # window too narrow for the difference: density
        lp = float(norm.logpdf((y - mean) / sd)) - math.log(sd) + math.log(width)
    return max(0.0, -lp / LN2)
