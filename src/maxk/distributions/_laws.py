"""Small exact-arithmetic helpers the distributions share."""

from __future__ import annotations

from typing import cast

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import comb as scipy_comb


def comb_float(a: np.ndarray, r: int) -> np.ndarray:
    """C(a, r) elementwise for integer arrays a (0 where a < r), as float64."""
    return np.asarray(scipy_comb(a, r, exact=False), dtype=np.float64) * (np.asarray(a) >= r)


def comb_any(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Binomial coefficients C(a, b) as floats, elementwise (0 where b > a or b < 0)."""
    # scipy's stub allows a scalar result; for the array arguments given here it is an array
    return cast(np.ndarray, scipy_comb(a, b, exact=False))


def pack_cases(parts) -> dict[str, np.ndarray]:
    """Concatenate case tuples (m, q, c, t2, c2, r2, prob) into named arrays."""
    names = ("m", "q", "c", "t2", "c2", "r2")
    out: dict[str, np.ndarray] = {
        name: np.concatenate([np.asarray(p[i], dtype=np.int64) for p in parts]) for i, name in enumerate(names)
    }
    out["prob"] = np.concatenate([np.asarray(p[6], dtype=np.float64) for p in parts])
    return out


def token_bitsets(tokens: np.ndarray, n: int) -> np.ndarray:
    """Bit sets of each row's tokens: int64 [b, ceil(n / 63)] (bit t of the set for token t)."""
    words = (n + 62) // 63
    masks = np.zeros((tokens.shape[0], words), dtype=np.int64)
    for p in range(tokens.shape[1]):
        word, bit = np.divmod(tokens[:, p], 63)
        for w in range(words):
            masks[:, w] |= np.where(word == w, np.left_shift(np.int64(1), bit), 0)
    return masks


def int_dtype(m: int, f: int):
    """int64 while counts (at most m^f tuples) fit, else exact Python ints."""
    return np.int64 if m**f < 2**62 else object


def shuffle_rows(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row of x [b, c] permuted uniformly at random."""
    if x.shape[1] <= 1:
        return x
    return np.take_along_axis(x, rng.random(x.shape).argsort(axis=1), axis=1)


def bucket_histograms(bucket: np.ndarray, K: int) -> np.ndarray:
    """Histogram of each row of ``bucket`` [..., m] (ints in [0, K]): [..., K+1] int64, entry a
    the number of the row's entries equal to a. One bincount over every entry: O(size)."""
    lead = bucket.shape[:-1]
    rows = int(np.prod(lead))
    idx = bucket.reshape(rows, bucket.shape[-1]) + (K + 1) * np.arange(rows)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * (K + 1)).reshape(lead + (K + 1,))
