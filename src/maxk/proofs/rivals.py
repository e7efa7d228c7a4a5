"""The rivals a threshold check keeps exactly: the prover's choice of outputs per pair (q, m).

``subcubic-coupled`` (``maxk.proofs.subcubic_coupled``) checks a candidate output one by one and
every other output o != m through one column per side of m (o < m, o > m), whose terms are each
maximised over the outputs outside the candidates on their own: the direct path's row EUPU[q],
the query's value row EVOU[q] and a max copy's row EVOU[m], each minus its entry at m. So an
output taken out of a column lowers it only where it is one of those terms' largest entry, by
the gap to that term's next one.

``greedy_rivals`` picks, for each pair, R outputs one at a time: on the side whose column is
larger, the term maximum whose removal lowers that column most, every term weighted by the
share of attention it carries on the pair's pure input (every free position holding m, the
query last): EUPU by all of it, EVOU[q] by the query's, EVOU[m] by the max copies'. (The
previous order, "evou": the query's largest EVOU output and the r largest of EVOU[m], targets
the third term only; it stays as an option.) The choice is search in plain floats from the
tables' midpoints: any choice is sound, since the check verifies whatever candidates it is
given, and it is not counted. Prefixes agree: the first r of an R-rival order are the r-rival
order, so one order serves every rival count.
"""

from __future__ import annotations

import numpy as np

from .enclose import Interval

__all__ = ["RIVAL_ORDERS", "greedy_rivals", "RivalCache"]

RIVAL_ORDERS = ("greedy", "evou")  # the default first
_PAIR_CHUNK = 2048  # pairs ordered at once: arrays [chunk, n]


def greedy_rivals(
    eqke: Interval,
    eqkp: Interval,
    evou: Interval,
    eupu: Interval,
    qs: np.ndarray,
    ms: np.ndarray,
    R: int,
    max_offset: np.ndarray | None = None,
) -> np.ndarray:
    """[p, R] outputs for the pairs (qs, ms) [p] (q <= m), in the order the greedy takes them
    (module docstring); an entry equal to m means the pair ran out of outputs. ``max_offset``
    [n, n] (``maxk.proofs.head_split``'s b[m, o]) is added to the max copy's row. Float search,
    uncounted. Cost O(p·n·R) float operations, memory O(n·min(p, 2048))."""
    n, k = eqkp.shape
    out = np.zeros((qs.size, max(R, 0)), dtype=np.int64)
    if R <= 0 or qs.size == 0:
        return out
    E, P, V, D = ((t.lo + t.hi) / 2 for t in (eqke, eqkp, evou, eupu))
    for s in range(0, qs.size, _PAIR_CHUNK):
        part = slice(s, s + _PAIR_CHUNK)
        out[part] = _greedy_chunk(E, P, V, D, qs[part], ms[part], R, k, max_offset)
    return out


def _greedy_chunk(E, P, V, D, qs, ms, R: int, k: int, B: np.ndarray | None = None) -> np.ndarray:
    """``greedy_rivals`` for one chunk of pairs, from the tables' midpoints E, P, V, D (EQKE,
    EQKP, EVOU, EUPU) and the max offset B."""
    p, n, f = qs.size, E.shape[0], k - 1
    rows = np.arange(p)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = E[qs, qs] + P[qs, f]
        sm = E[qs, ms][:, None] + P[qs, :f]  # [p, f]
        top = np.maximum(sq, sm.max(axis=1, initial=-np.inf))
        wq, wm = np.exp(sq - top), np.exp(sm - top[:, None]).sum(axis=1)
        vm = V[ms] + (B[ms] if B is not None else 0.0)
        terms = [D[qs] - D[qs, ms][:, None], V[qs] - V[qs, ms][:, None], vm - vm[rows, ms][:, None]]
    weights = [wq + wm, wq, wm]
    taken = np.arange(n)[None, :] == ms[:, None]
    below = np.arange(n)[None, :] < ms[:, None]
    out = np.empty((p, R), dtype=np.int64)
    for step in range(R):
        sides = [_side_move(terms, weights, below & ~taken, rows), _side_move(terms, weights, ~below & ~taken, rows)]
        (col_b, o_b, has_b), (col_a, o_a, has_a) = sides
        o = np.where((has_b & (col_b >= col_a)) | ~has_a, o_b, o_a)
        o = np.where(has_b | has_a, o, ms)
        out[:, step] = o
        taken[rows, o] = True
    return out


def _side_move(terms, weights, avail: np.ndarray, rows: np.ndarray):
    """On one side (available outputs ``avail`` [p, n]): the column's value Σ w·max term, the
    output whose removal lowers it most (a term's argmax), and whether any output is left."""
    has = avail.any(axis=1)
    best, arg, gap = [], [], []
    with np.errstate(invalid="ignore", over="ignore"):  # an empty side: −inf − (−inf), masked below
        for x in terms:
            xm = np.where(avail, x, -np.inf)
            a = xm.argmax(axis=1)
            b = xm[rows, a]
            xm[rows, a] = -np.inf
            second = xm.max(axis=1)
            best.append(b)
            arg.append(a)
            # no second entry: taking the last output away closes the side (a large drop)
            gap.append(np.where(np.isfinite(second), b - second, np.inf))
        col = np.where(has, sum(w * b for w, b in zip(weights, best, strict=True)), -np.inf)
        terms_at = list(zip(weights, gap, arg, strict=True))
        drops = np.stack([sum(np.where(a2 == a, w * g, 0.0) for w, g, a2 in terms_at) for a in arg], axis=1)
    pick = np.nan_to_num(drops, nan=0.0, posinf=np.finfo(float).max).argmax(axis=1)
    return col, np.stack(arg, axis=1)[rows, pick], has


class RivalCache:
    """The greedy orders of the pairs a proof has asked for, extended on demand: ``get(qs, ms, r)``
    [p, r] computes only the pairs not yet ordered that far (orders are prefix-consistent)."""

    def __init__(self, tabs: tuple[Interval, Interval, Interval, Interval], n: int, max_offset=None):
        self.tabs, self.max_offset = tabs, max_offset
        self.order = np.zeros((n, n, 0), dtype=np.int32)
        self.have = np.zeros((n, n), dtype=np.int64)

    def get(self, qs: np.ndarray, ms: np.ndarray, r: int) -> np.ndarray:
        """[p, r] the first r rivals of the pairs (qs, ms) [p]. Cost: ``greedy_rivals``'s on the
        pairs not yet ordered r deep, uncounted."""
        if r > self.order.shape[2]:
            grown = np.zeros(self.order.shape[:2] + (r,), dtype=np.int32)
            grown[:, :, : self.order.shape[2]] = self.order
            self.order = grown
        need = np.nonzero(self.have[qs, ms] < r)[0]
        if need.size:
            q, m = qs[need], ms[need]
            self.order[q, m, :r] = greedy_rivals(*self.tabs, q, m, r, self.max_offset)
            self.have[q, m] = r
        return self.order[qs, ms, :r].astype(np.int64)
