"""Systematic sampling over the order-statistic hierarchy of an input.

What decides whether the model gets an input right is, in order of weight: the max m, where it
sits, the second-largest token t2 (the competitor for attention and for the output) and where it
sits, then the next tokens down, then the query. ``ordered_inputs`` maps a number u ∈ [0, 1) to an
input by inverse-CDF steps down that hierarchy — u picks the max (and, under ``uniform``, its
number of copies and their positions), the leftover fraction of u picks the next value down, and
so on for ``levels`` values; the query's value and the remaining low tokens are then drawn at
random from their exact conditional law. Every step uses exact conditional probabilities (up to
the rounding of their CDFs, ~1e-13), so a uniform u gives an input with the distribution's law.

``systematic`` evaluates N inputs at u_i = (i + U)/N with one uniform U: every u_i is uniform,
so the mean of the probabilities on the right answer is unbiased; and the u_i are spread evenly,
so every cell of the hierarchy (max, its positions, t2, its positions, ...) gets its share of
inputs to within one — proportional stratification over as many cells as N can resolve, without
enumerating them. Measured on the noised k = 10 family this cuts the variance of plain Monte Carlo
with the same number of inputs by 10–50× (docs/estimators.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from math import comb

import numpy as np

from ..circuits import CircuitTables
from ..distributions import Distribution, get_distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from .base import EstimateValue
from .sampling import _check_samples, soft_probs

_CHUNK = 1 << 13
_MAX_SUBSETS = 4096  # position subsets enumerated for u; beyond this they are drawn at random
_ONE_MINUS = float(np.nextafter(1.0, 0.0))


def _normalised_cdf(p: np.ndarray) -> np.ndarray:
    """Row-wise CDF of the weights p [U, K], exactly 1 from each row's last positive weight on
    (so rounding can never select a cell of zero probability)."""
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    last = p.shape[1] - 1 - np.argmax(p[:, ::-1] > 0, axis=1)
    cdf[np.arange(p.shape[1])[None, :] >= last[:, None]] = 1.0
    return cdf


def _invert(cdf: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell i with cdf[i-1] <= u < cdf[i] per row, and the leftover (u - cdf[i-1])/p_i in [0, 1)."""
    idx = np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)
    rows = np.arange(len(u))
    lo = np.where(idx > 0, cdf[rows, np.maximum(idx - 1, 0)], 0.0)
    hi = cdf[rows, idx]
    return idx, np.clip((u - lo) / np.maximum(hi - lo, 1e-300), 0.0, _ONE_MINUS)


def _rows_for(a: np.ndarray, b: np.ndarray, build, counter: FlopCounter | None) -> np.ndarray:
    """build(a', b') evaluated once per distinct pair (a, b) of non-negative ints, gathered back
    per input. Building a law's row is counted as 16 FLOPs per entry (log-gammas, exp, cumsum)."""
    key = a * (int(b.max()) + 1) + b
    uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
    rows = build(a[first], b[first])
    if counter is not None:
        counter.add(16 * rows.size, "draw_laws")
    return rows[inv.reshape(-1)]


def _free_positions(free: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Positions of the free slots ``slots`` [b, c] (0 = first free position from the left) in
    the rows of ``free`` [b, k] -> [b, c]."""
    rank = np.cumsum(free, axis=1) - 1  # rank among free positions, valid where free
    hit = free[:, :, None] & (rank[:, :, None] == slots[:, None, :])
    return hit.argmax(axis=1)


def _subset_table(r: int, c: int) -> np.ndarray:
    """All c-subsets of range(r) in lexicographic order: [C(r, c), c]."""
    from itertools import combinations

    return np.array(list(combinations(range(r), c)), dtype=np.int64).reshape(-1, c)


def ordered_inputs(
    dist: str | Distribution,
    n: int,
    k: int,
    u: np.ndarray,
    levels: int,
    rng: np.random.Generator,
    counter: FlopCounter | None = None,
) -> np.ndarray:
    """Inputs [N, k] from ``dist`` with u [N] in [0, 1) deciding, in this order: the max and its
    positions (its number of copies first, where tokens can repeat), then the next ``levels`` - 1 values
    down with theirs; the query's value (if its position is still free) and the remaining tokens
    are drawn from ``rng``. Exact: for u uniform the result has the distribution's law.
    Cost O(N·(levels·(n + k) + k²)), mostly comparisons."""
    dist = get_distribution(dist)
    u = np.asarray(u, dtype=np.float64).copy()
    N = len(u)
    x = np.full((N, k), -1, dtype=np.int64)
    free = np.ones((N, k), dtype=bool)
    A = np.full(N, n, dtype=np.int64)  # every remaining token is below A
    r = np.full(N, k, dtype=np.int64)  # number of remaining tokens

    def copies_cdf(rr: np.ndarray, tt: np.ndarray) -> np.ndarray:
        law = dist.copies_law(rr, tt, k)
        assert law is not None  # only called where dist.allows_repeats
        return _normalised_cdf(law)

    for _ in range(max(levels, 1)):
        live = r > 0
        if not live.any():
            break
        L = np.nonzero(live)[0]
        cdf = _rows_for(r[L], A[L], lambda rr, aa: _normalised_cdf(dist.top_law(rr, aa, n)), counter)
        t, u[L] = _invert(cdf, u[L])
        if counter is not None:
            counter.add(len(L) * (n + 4), "draw")
        if dist.allows_repeats:
            ccdf = _rows_for(r[L], t, copies_cdf, counter)
            c0, u[L] = _invert(ccdf, u[L])
            c = c0 + 1
            if counter is not None:
                counter.add(len(L) * (k + 4), "draw")
        else:
            c = np.ones(len(L), dtype=np.int64)
        # positions: the c-subset of the r free positions (ascending), by u where enumerable
        rc = r[L] * (k + 1) + c
        for key in np.unique(rc):
            rr, cc = divmod(int(key), k + 1)
            sel = rc == key
            li = L[sel]
            size = comb(rr, cc)
            if size <= _MAX_SUBSETS:
                j = np.minimum((u[li] * size).astype(np.int64), size - 1)
                u[li] = np.clip(u[li] * size - j, 0.0, _ONE_MINUS)
                slots = _subset_table(rr, cc)[j]
            else:
                slots = np.sort(rng.random((len(li), rr)).argsort(axis=1)[:, :cc], axis=1)
            pos = _free_positions(free[li], slots)
            x[li[:, None], pos] = t[sel][:, None]
            free[li[:, None], pos] = False
        A[L] = t
        r[L] -= c
    # the query's value (uniform below A: one of r exchangeable tokens), then the rest
    qf = free[:, k - 1] & (r > 0)
    q = np.minimum((u * A).astype(np.int64), np.maximum(A - 1, 0))
    x[qf, k - 1] = q[qf]
    free[qf, k - 1] = False
    rest = r - qf
    for rr in np.unique(rest[rest > 0]):
        grp = np.nonzero(rest == rr)[0]
        vals = dist.draw_rest(A[grp], int(rr), q[grp], qf[grp], rng)
        x[grp[:, None], _free_positions(free[grp], np.broadcast_to(np.arange(rr), (len(grp), rr)))] = vals
    return x


def systematic_chunks(
    dist: Distribution, n: int, k: int, samples: int, levels: int, rng: np.random.Generator, counter: FlopCounter
) -> Iterator[np.ndarray]:
    """The systematic design's ``samples`` inputs ``ordered_inputs(u_i)`` at u_i = (i + U)/N (one
    uniform U), in order, as chunks of [<= 8192, k] inputs. Cost O(samples·levels·(n + k))."""
    start = rng.random()
    for s0 in range(0, samples, _CHUNK):
        u = (np.arange(s0, min(s0 + _CHUNK, samples)) + start) / samples
        yield ordered_inputs(dist, n, k, u, int(levels), rng, counter)


def successive_difference_spread(p: np.ndarray, counter: FlopCounter) -> float:
    """sqrt(Σ_pairs (p_2i − p_2i+1)²)/N for values p [N] in systematic order: the
    successive-difference standard error of their mean (conservative when neighbouring cells
    differ). Cost O(N)."""
    half = len(p) // 2
    d = p[0 : 2 * half : 2] - p[1 : 2 * half : 2]
    counter.add(3 * half, "reduce")
    return float(np.sqrt(np.sum(d * d)) / (2 * half))


def check_levels(levels: object) -> int:
    """``levels`` as an int >= 1, or a MaxkError."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise MaxkError(f"levels must be an integer >= 1, got {levels!r}")
    return int(levels)


def systematic(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    samples: int = 100_000,
    levels: int = 3,
) -> EstimateValue:
    """Mean probability on the right answer over ``samples`` inputs ``ordered_inputs(u_i)`` at
    u_i = (i + U)/N, one uniform U (systematic sampling over the max, the next ``levels`` - 1
    values down and all their positions). Unbiased. spread = sqrt(Σ_pairs (p_2i - p_2i+1)²)/N,
    the successive-difference variance estimate of systematic sampling (conservative when
    neighbouring cells differ). Cost: ``samples`` inputs through the tables, as plain Monte
    Carlo, plus O(samples·levels·(n + k)) comparisons to place them."""
    samples = _check_samples(samples, 2)
    levels = check_levels(levels)
    p = np.concatenate(
        [
            soft_probs(tables, x, counter)
            for x in systematic_chunks(dist, tables.n, tables.k, samples, levels, rng, counter)
        ]
    )
    spread = successive_difference_spread(p, counter)
    counter.add(2 * samples, "reduce")
    return EstimateValue(float(p.mean()), spread=spread, details={"samples": samples, "levels": levels})
