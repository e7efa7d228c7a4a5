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


def sample_with_max(name: str, n: int, k: int, m: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` sequences drawn from the distribution conditioned on max = m: [size, k] int64."""
    if count_with_max(name, n, k, m) == 0:
        raise ValueError(f"no sequence has maximum {m}")
    if name == "uniform":
        # number of copies c of m has weight C(k, c) m^(k-c); the rest uniform below m
        cs = np.arange(1, k + 1)
        w = np.array([comb(k, int(c)) * float(m) ** (k - c) for c in cs], dtype=np.float64)
        c = rng.choice(cs, size=size, p=w / w.sum())
        is_max = rng.random((size, k)).argsort(axis=1) < c[:, None]
        low = rng.integers(0, max(m, 1), size=(size, k))
        return np.where(is_max, m, low).astype(np.int64)
    # distinct: k-1 distinct tokens below m plus m, in random order
    keys = rng.random((size, m))
    others = keys.argsort(axis=1)[:, : k - 1] if m > 0 else np.zeros((size, 0), dtype=np.int64)
    seq = np.concatenate([others, np.full((size, 1), m)], axis=1)
    order = rng.random((size, k)).argsort(axis=1)
    return np.take_along_axis(seq, order, axis=1).astype(np.int64)


def sample(name: str, n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` sequences from the distribution: [size, k] int64."""
    check_distribution(name, n, k)
    if name == "uniform":
        return rng.integers(0, n, size=(size, k), dtype=np.int64)
    return rng.random((size, n)).argsort(axis=1)[:, :k].astype(np.int64)
