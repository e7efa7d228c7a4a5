"""Input distributions over sequences of k tokens in [0, n) (DESIGN §3).

``uniform``: i.i.d. uniform tokens, N = n^k. ``distinct``: k distinct tokens in uniformly random
order, N = n!/(n-k)!. Both have exact stratum weights for "the maximum is m".
"""
from __future__ import annotations

from fractions import Fraction
from math import comb, perm

import numpy as np

from .errors import MaxkError

DISTRIBUTIONS = ("uniform", "distinct")


def check_distribution(name: str, n: int, k: int) -> str:
    """Validate a distribution name for sequences of k tokens in [0, n); return it."""
    if name not in DISTRIBUTIONS:
        raise MaxkError(f"unknown distribution {name!r}: choose one of {', '.join(DISTRIBUTIONS)}")
    if name == "distinct" and k > n:
        raise MaxkError(f"distribution 'distinct' needs k <= n, got k={k}, n={n}")
    return name


def n_sequences(name: str, n: int, k: int) -> int:
    """Number of sequences with nonzero probability (exact integer)."""
    check_distribution(name, n, k)
    return n**k if name == "uniform" else perm(n, k)


def count_with_max(name: str, n: int, k: int, m: int) -> int:
    """Number of sequences whose maximum is m (exact integer)."""
    if name == "uniform":
        return (m + 1) ** k - m**k
    return k * perm(m, k - 1)


def max_weights(name: str, n: int, k: int) -> np.ndarray:
    """P[max = m] for m in [0, n): [n] float64, computed from exact fractions."""
    total = n_sequences(name, n, k)
    return np.array([float(Fraction(count_with_max(name, n, k, m), total)) for m in range(n)])


def _distinct_below(m: np.ndarray, count: int, exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row, ``count`` distinct values uniformly from [0, m) minus the row's ``exclude``
    values, in uniformly random order. m: [b]; exclude: [b, e] distinct values < m -> [b, count].

    Selection by rank: draw r uniform in [0, m - e - j), then step r past every already used value
    at or below it (used values kept sorted), O(b·(count + e)²)."""
    b = m.shape[0]
    used = np.sort(exclude, axis=1) if exclude.size else np.zeros((b, 0), dtype=np.int64)
    e = used.shape[1]
    out = np.empty((b, count), dtype=np.int64)
    for j in range(count):
        r = np.floor(rng.random(b) * (m - e - j)).astype(np.int64)
        for i in range(used.shape[1]):
            r += used[:, i] <= r
        out[:, j] = r
        used = np.sort(np.concatenate([used, r[:, None]], axis=1), axis=1)
    return out


def _shuffle_rows(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row of x [b, c] permuted uniformly at random."""
    if x.shape[1] <= 1:
        return x
    return np.take_along_axis(x, rng.random(x.shape).argsort(axis=1), axis=1)


def _copies_table(k: int, n: int) -> np.ndarray:
    """cdf[m, c-1] = P[at most c copies of m | max = m] for k i.i.d. uniform tokens: [n, k]."""
    w = np.array([[comb(k, c) * float(m) ** (k - c) for c in range(1, k + 1)] for m in range(n)])
    return np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)


def _uniform_with_max(m: np.ndarray, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """k i.i.d. uniform tokens conditioned on max = m (per row). m: [b] -> [b, k]."""
    b = m.shape[0]
    cdf = _copies_table(k, n)[m]  # [b, k]
    c = 1 + (rng.random(b)[:, None] > cdf).sum(axis=1)
    c = np.minimum(c, k)
    is_max = rng.random((b, k)).argsort(axis=1).argsort(axis=1) < c[:, None]
    low = np.floor(rng.random((b, k)) * m[:, None]).astype(np.int64)
    return np.where(is_max, m[:, None], low)


def sample_given(dist: str, n: int, k: int, m: np.ndarray, q: np.ndarray | None,
                 rng: np.random.Generator) -> np.ndarray:
    """Inputs from ``dist`` conditioned per row on max = m[i] (and query x[k-1] = q[i] if given).

    m, q: [b] int -> [b, k] int64. Every (m, q) must have positive probability."""
    m = np.asarray(m, dtype=np.int64)
    b = m.shape[0]
    if q is None:
        if dist == "uniform":
            return _uniform_with_max(m, k, n, rng)
        others = _distinct_below(m, k - 1, np.zeros((b, 0), dtype=np.int64), rng)
        return _shuffle_rows(np.concatenate([others, m[:, None]], axis=1), rng)
    q = np.asarray(q, dtype=np.int64)
    out = np.empty((b, k), dtype=np.int64)
    out[:, -1] = q
    top = q == m
    if k == 1:
        return out
    if dist == "uniform":
        # query is the max: others i.i.d. in [0, m]; else: others have max exactly m
        out[top, :-1] = np.floor(rng.random((top.sum(), k - 1)) * (m[top, None] + 1)).astype(np.int64)
        out[~top, :-1] = _uniform_with_max(m[~top], k - 1, n, rng)
        return out
    nt = ~top
    out[top, :-1] = _distinct_below(m[top], k - 1, np.zeros((top.sum(), 0), dtype=np.int64), rng)
    rest = _distinct_below(m[nt], k - 2, q[nt, None], rng)
    out[nt, :-1] = _shuffle_rows(np.concatenate([rest, m[nt, None]], axis=1), rng)
    return out


def sample_with_max(name: str, n: int, k: int, m: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` sequences drawn from the distribution conditioned on max = m: [size, k] int64."""
    if count_with_max(name, n, k, m) == 0:
        raise ValueError(f"no sequence has maximum {m}")
    return sample_given(name, n, k, np.full(size, m, dtype=np.int64), None, rng)


def sample(name: str, n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` sequences from the distribution: [size, k] int64."""
    check_distribution(name, n, k)
    if name == "uniform":
        return rng.integers(0, n, size=(size, k), dtype=np.int64)
    return rng.random((size, n)).argsort(axis=1)[:, :k].astype(np.int64)
