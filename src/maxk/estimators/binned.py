"""Binned distributions (Wu's bin propagation), batched.

A binned distribution of a scalar is an array ``vals[..., b]`` together with a mass profile
``masses[b]`` shared by the whole batch (summing to 1): bin j holds mass masses[j] and the
conditional mean of its quantile slice, so bins ascend. The default profile is b equal masses
(Wu's); ``tail_profile`` gives bins whose masses halve toward the upper tail, so that rare but
large values (a heavy-weight token that is present in few inputs) keep their own bins. One bin
(b = 1) is the mean, so one-bin propagation is mean propagation.

Binning keeps the mean exactly; a function of two independent binned variables takes all b² pairs
(mass m_i·m_j each) and re-bins, so sums and products of independent variables keep their exact
means, while nonlinear functions (max, ratios) are approximated at the resolution of the bins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from ..flops import FlopCounter


def equal_profile(b: int) -> np.ndarray:
    """b equal masses: [b]."""
    return np.full(b, 1.0 / b)


def tail_profile(b: int) -> np.ndarray:
    """Masses 1/2, 1/4, ..., 2^-(b-1), 2^-(b-1): finer toward the upper tail. [b]; b = 1 gives [1]."""
    if b == 1:
        return np.ones(1)
    m = 0.5 ** np.arange(1, b + 1)
    m[-1] = m[-2]
    return m


def _log2(n: int) -> int:
    return int(np.ceil(np.log2(max(n, 2))))


def from_atoms(
    values: np.ndarray,
    probs: np.ndarray,
    masses: np.ndarray | int,
    counter: FlopCounter | None = None,
    presorted: bool = False,
) -> np.ndarray:
    """Bin a discrete law into bins of the given masses (an int b means b equal masses).

    values, probs: [..., N] (probs >= 0, normalised along the last axis here; zero-mass atoms
    allowed) -> [..., b]. An atom straddling a bin edge is split between bins. Bin j holds
    (F(u_j) − F(u_{j-1})) / mass_j with u the cumulative masses and F(u) = ∫_0^u Q(s) ds, Q the
    quantile function. ``presorted``: values already ascend along the last axis (no sort).
    Cost: a sort of N per distribution (unless presorted) plus O(N + b log N).
    """
    # np.isscalar does not narrow for pyright: a scalar ``masses`` is the int b
    masses = equal_profile(cast(int, masses)) if np.isscalar(masses) else np.asarray(masses, dtype=np.float64)
    b = len(masses)
    values = np.asarray(values, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    shape = np.broadcast_shapes(values.shape, probs.shape)
    values, probs = np.broadcast_to(values, shape), np.broadcast_to(probs, shape)
    if presorted:
        v, p = values, probs
    else:
        order = np.argsort(values, axis=-1, kind="stable")
        v = np.take_along_axis(values, order, axis=-1)
        p = np.take_along_axis(probs, order, axis=-1)
    p = p / p.sum(axis=-1, keepdims=True)
    cum = np.cumsum(p, axis=-1)
    F = np.cumsum(p * v, axis=-1)  # F at cum
    lead = v.shape[:-1]
    N = v.shape[-1]
    flat_cum = cum.reshape(-1, N)
    flat_v, flat_F = v.reshape(-1, N), F.reshape(-1, N)
    u = np.cumsum(masses)[:-1]  # interior edges
    R = flat_cum.shape[0]
    rows = np.arange(R)[:, None]
    # one search over all rows at once: row r's cumulative masses shifted into [2r, 2r + 1]
    hay = (np.minimum(flat_cum, 1.0) + 2.0 * rows).ravel()
    idx = np.searchsorted(hay, (u[None, :] + 2.0 * rows).ravel(), side="left").reshape(R, b - 1) - rows * N
    idx = np.clip(idx, 0, N - 1)
    prev_cum = np.where(idx > 0, flat_cum[rows, np.maximum(idx - 1, 0)], 0.0)
    prev_F = np.where(idx > 0, flat_F[rows, np.maximum(idx - 1, 0)], 0.0)
    F_edge = prev_F + flat_v[rows, idx] * (u[None, :] - prev_cum)
    F_all = np.concatenate([np.zeros((R, 1)), F_edge, flat_F[:, -1:]], axis=1)
    out = np.diff(F_all, axis=1) / masses[None, :]
    if counter is not None:
        size = int(np.prod(lead)) if lead else 1
        sort = 0 if presorted else N * _log2(N)
        counter.add(size * (sort + 4 * N + 6 * b + (b - 1) * _log2(N)), "bin_atoms")
    return out.reshape(*lead, b)


def combine(
    f: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    masses: np.ndarray | None = None,
    counter: FlopCounter | None = None,
    ops: int = 1,
) -> np.ndarray:
    """Law of f(X, Y) for independent binned X [..., b] and Y [..., b] (profile ``masses``,
    default equal): all b² pairs re-binned to the same profile. ``ops`` = FLOPs of one f.
    Cost: b²·ops plus a sort of b² per distribution."""
    b = x.shape[-1]
    masses = equal_profile(b) if masses is None else np.asarray(masses, dtype=np.float64)
    pairs = f(x[..., :, None], y[..., None, :])
    pairs = pairs.reshape(*pairs.shape[:-2], b * b)
    lead = pairs.shape[:-1]
    if counter is not None:
        counter.add(int(np.prod(pairs.shape)) * ops, "combine")
    srt = np.sort(pairs, axis=-1)
    if counter is not None:
        counter.add(int(np.prod(lead)) * b * b * _log2(b * b), "rebin_sort")
    if np.allclose(masses, 1.0 / b):  # equal masses: b² equal atoms, b consecutive per bin
        if counter is not None:
            counter.add(int(np.prod(pairs.shape)), "rebin")
        return srt.reshape(*lead, b, b).mean(axis=-1)
    pm = np.outer(masses, masses).ravel()
    order = np.argsort(pairs, axis=-1, kind="stable")
    return from_atoms(srt, pm[order], masses, counter, presorted=True)


def iid_sum(y: np.ndarray, r: int, masses: np.ndarray | None = None, counter: FlopCounter | None = None) -> np.ndarray:
    """Law of Y_1 + ... + Y_r for i.i.d. copies of binned Y [..., b], by repeated doubling:
    O(log r) pairwise combinations. r = 0 gives the point mass at 0."""
    if r < 0:
        raise ValueError("r must be >= 0")
    return iid_sums(y, r, masses, counter)[r]


def iid_sums(
    y: np.ndarray, r_max: int, masses: np.ndarray | None = None, counter: FlopCounter | None = None
) -> list[np.ndarray]:
    """[law of Y_1 + ... + Y_r for r = 0..r_max]: doubling powers Y, 2Y, 4Y, ... (log r_max
    combinations), then S_r = S_(r − low bit) + power(low bit): r_max combinations in all."""
    add = lambda a, c: combine(np.add, a, c, masses, counter)  # noqa: E731
    powers = [y]
    while (1 << len(powers)) <= r_max:
        powers.append(add(powers[-1], powers[-1]))
    out = [np.zeros_like(y)]
    for r in range(1, r_max + 1):
        low = r & -r
        j = low.bit_length() - 1
        out.append(powers[j] if r == low else add(out[r - low], powers[j]))
    return out
