"""Pieces shared by the proof strategies: input checks and the value-difference bounds.

Notation (single head; all quantities are for the exact real-number tables, enclosed):
    for an input with max m and query q, and output o != m, the logit margin is
        logit[m] - logit[o] = sum_i a_i * u(x_i, i, o)
        u(t, i, o) = D[q, o] + V[t, o] + W[i, o]
        D[q, o] = EUPU[q, m] - EUPU[q, o]      (direct path)
        V[t, o] = EVOU[t, m] - EVOU[t, o]      (what key token t writes)
        W[i, o] = PVOU[i, m] - PVOU[i, o]      (what position i writes)
    (the a_i sum to 1, so the direct path can be spread over the positions). With
    w_i = exp(score_i - shift) > 0 for any constant shift, the input is correct iff
        F(o) = sum_i w_i * u(x_i, i, o) > 0 for every o != m.
"""

from __future__ import annotations

import numpy as np

from ..errors import MaxkError
from ..flops import FlopCounter
from .enclose import IntervalTables, down


def require_single_head(tab_or_model, strategy: str) -> None:
    """Raise a MaxkError naming what ``strategy`` supports unless the model has one head."""
    h = tab_or_model.cfg.n_heads
    if h != 1:
        raise MaxkError(
            f"strategy {strategy!r} supports single-head models only (n_heads = 1); this model has "
            f"n_heads = {h}. Use --strategy brute for multi-head models."
        )


def diff_lower(
    tab: IntervalTables, m: int, counter: FlopCounter, head: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bounds, for max token m, of D [n_q, n_out], V [n_key, n_out], W [k, n_out] (V and W
    of head ``head``).

    Column o = m is meaningless (the margin against itself) and is left as computed.
    Cost: 2·(n² + n² + k·n) operations."""
    lo, hi = tab.lo, tab.hi
    D = lo.eupu[:, m : m + 1] - hi.eupu
    V = lo.evou[head][:, m : m + 1] - hi.evou[head]
    W = lo.pvou[head][:, m : m + 1] - hi.pvou[head]
    counter.add(D.size + V.size + W.size, "value diffs")
    return down(D, counter), down(V, counter), down(W, counter)


def exclude_column(x: np.ndarray, m: int) -> np.ndarray:
    """Copy of x with the output column m (last axis) set to +inf, so that a min over outputs
    ranges over o != m."""
    x = x.copy()
    x[..., m] = np.inf
    return x
