"""Threshold proofs for several heads, with the margin split between the heads.

The views of ``maxk.proofs.per_head`` (view h: head h alone, W_O·H) have logit differences
Δ_h(o) = D(o) + H·A_h(o), and the model's is their mean. Asking every view for Δ_h > 0 asks
every head to solve the task alone. Instead give head h a required margin

    c_h[q, m] + b_h[m, o]     (any floats with Σ_h c_h[q, m] = 0 and Σ_h b_h[m, o] = 0, exactly):

if for an input with query q and max m every view has Δ_h(o) > c_h[q, m] + b_h[m, o] for every
output o != m, then H·Δ(o) = Σ_h Δ_h(o) > 0 and the model gets the input right. A one-head
threshold check certifies that when its direct term EUPU[q, o] − EUPU[q, m] is shifted by the
required margin (the weights sum to one): ``coupled_thresholds(direct_offset=c, max_offset=b)``,
which adds b exactly to a max copy's value EVOU[m, o] − EVOU[m, m] (both indexed by (m, o)) and
as its column maximum to the other terms. So the proof is H one-head proofs, each with its
offsets, and T[q, m] = min_h T_h[q, m]; the offsets are 2·n² numbers per head.

Choosing them is search, not counted (DESIGN §5). b_h = g_h − mean_h' g_h' with g_h[m, o] =
EVOU_h[m, m] − EVOU_h[m, o] (view h's): each view sees the heads' mean value on a max copy, so
the heads' different rivals no longer count against each one alone. c is searched per pair: for
a head, O_h(τ) = the largest c at which its check still passes at threshold τ (nonincreasing in
τ); τ is feasible when Σ_h O_h(τ) >= 0. Every head's thresholds at a grid of offsets
(B·{0, ±1/32, ..., ±1/2, ±1}, B >= every |Δ_h|) bracket O_h(τ) for every τ at once and give a
first feasible τ per pair; a binary search over τ per pair then refines it, each step bisecting
every head's bracket at once (at most BISECTION_STEPS rounds, a pair leaving as soon as it is
decided; every call is a whole threshold search over all pairs). At the chosen τ,
c_h = O_h − Σ_h' O_h'/H. Both offsets go onto a dyadic grid with the first head's entry minus
the sum of the others' (``exact_split``), so the sums are exactly 0 as real numbers; then every
head's proof runs once more with them, counted, and decides. Any offsets are sound: the checks
decide, and the verifier checks the two sums.

Cost (verification): H one-head threshold proofs plus O(H·n²) for the sums. The search makes
about H·(13 + BISECTION_STEPS·log2 n) more threshold searches, uncounted (seconds, not FLOPs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..circuits import CircuitTables, circuit_tables
from ..flops import FlopCounter
from ..model import MaxKTransformer
from .per_head import head_views

__all__ = ["BISECTION_STEPS", "exact_split", "split_thresholds"]

BISECTION_STEPS = 4  # per head and threshold at most, inside the grid's bracket (width <= B/32)

# thresholds(view, c, b) -> T [n_q, n_max]: a one-head threshold proof with the required-margin
# offsets c [n_q, n_max] and b [n_max, n_out] (None: none; ``coupled_thresholds``'s direct_offset
# and max_offset), adding its verification to the proof's counter
Offset = np.ndarray | None
OffsetThresholds = Callable[[MaxKTransformer, Offset, Offset], np.ndarray]


def exact_split(offsets: np.ndarray) -> np.ndarray:
    """Offsets [H, ...] rounded down onto a dyadic grid, the first row replaced by minus the sum
    of the others, so that the columns sum to exactly 0 as real numbers (the grid keeps every
    partial sum exact in float64). Rows h >= 1 only decrease; non-finite entries become 0.
    Cost O(H·size) (search-side bookkeeping)."""
    off = np.where(np.isfinite(offsets), offsets, 0.0)
    top = float(np.abs(off).max(initial=0.0))
    if top < 1e-200:
        return np.zeros_like(off)
    grid = 2.0 ** (np.floor(np.log2(top)) - 40)  # |off| / grid < 2^41: H·2^41 < 2^53 for H <= 2^11
    ints = np.floor(off[1:] / grid).astype(np.int64)
    out = np.empty_like(off)
    out[1:] = ints * grid
    out[0] = -ints.sum(axis=0) * grid
    return out


def _offset_bound(tab: CircuitTables) -> float:
    """B >= |Δ_h(o)| for every input and output of a one-head view (float estimate, search only):
    2·(max|EUPU| + max|EVOU| + max|PVOU|) over its circuit tables."""
    return 2.0 * float(sum(np.abs(np.asarray(x)).max() for x in (tab.eupu, tab.evou, tab.pvou)))


def split_thresholds(
    model: MaxKTransformer, thresholds: OffsetThresholds, counter: FlopCounter, *, steps: int = BISECTION_STEPS
) -> np.ndarray:
    """T [n_q, n_max] of an H-head model from a one-head threshold proof with offsets (module
    docstring): ``thresholds(model, None, None)`` for one head, else min_h of
    ``thresholds(view_h, c_h, b_h)`` with the chosen offsets (the search uncounted on ``counter``,
    the one ``thresholds`` adds to). Sound for any offsets summing to 0; H a power of two
    (MaxkError otherwise, as ``head_views``). Cost in the module docstring."""
    if model.cfg.n_heads == 1:
        return thresholds(model, None, None)
    with torch.no_grad():
        views = head_views(model)
    n, H = model.cfg.n, len(views)
    with counter.uncounted():
        tabs = [circuit_tables(v) for v in views]
        b = exact_split(_max_offsets(tabs))  # [H, n_max, n_out]
        B = max(_offset_bound(t) for t in tabs)
        c = exact_split(_search(views, lambda v, o, h: thresholds(v, o, b[h]), n, steps, B))  # [H, n_q, n_max]
    counter.add(2 * 2 * H * n * n, "offset sums")  # the verifier's check that both sum to 0 per entry
    return np.minimum.reduce([thresholds(v, c[h], b[h]) for h, v in enumerate(views)])


def _max_offsets(tabs: list[CircuitTables]) -> np.ndarray:
    """b [H, n_max, n_out] from the views' EVOU_h (their circuit tables; float, search side; any
    values are sound): b_h[m, o] = g_h[m, o] − mean_h' g_h'[m, o] with g_h[m, o] = EVOU_h[m, m] −
    EVOU_h[m, o], so that a max copy's value term is the heads' mean in every view. Cost O(H·n²)."""
    ev = np.stack([np.asarray(t.evou[0]) for t in tabs])  # [H, n, n]
    g = np.diagonal(ev, axis1=1, axis2=2)[:, :, None] - ev
    return g - g.mean(axis=0, keepdims=True)


def _search(views: list[MaxKTransformer], thresholds, n: int, steps: int, B: float) -> np.ndarray:
    """Offsets c [H, n, n] (module docstring): per pair the largest τ found with Σ_h O_h(τ) >= 0
    (the grid, then a binary search), and c_h = O_h(τ) − Σ O(τ)/H there; B >= every |Δ_h|."""
    H = len(views)
    qs, ms = np.triu_indices(n)
    if not np.isfinite(B) or B <= 0:  # nothing to share out: the equal split
        return np.zeros((H, n, n))

    def T_at(h: int, off_pairs: np.ndarray) -> np.ndarray:  # T_h [p] with offsets [p]
        off = np.zeros((n, n))
        off[qs, ms] = off_pairs
        return thresholds(views[h], off, h)[qs, ms]

    p = qs.size
    # every head's threshold at a grid of offsets (−B and B included): for each τ, the largest
    # grid offset that passes and the smallest that fails bracket O_h(τ)
    grid = B * np.array([-1.0, -1 / 2, -1 / 4, -1 / 8, -1 / 16, -1 / 32, 0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])
    Tg = np.stack([np.stack([T_at(h, np.full(p, g)) for g in grid]) for h in range(H)])  # [H, G, p]
    taus = np.arange(-2, n)[:, None, None, None]  # [τ, 1, 1, 1]
    passes = Tg[None] >= taus  # [τ, H, G, p]
    dn_all = np.where(passes, grid[None, None, :, None], -np.inf).max(axis=2)  # [τ, H, p]
    up_all = np.where(passes, np.inf, grid[None, None, :, None]).min(axis=2)
    feasible = np.isfinite(dn_all).all(axis=1) & (dn_all.sum(axis=1) >= 0)  # [τ, p], τ = −2 always
    feasible[0] = True
    lo = np.arange(-2, n)[np.cumprod(feasible, axis=0).sum(axis=0) - 1]  # largest τ feasible on the grid
    best = dn_all[lo + 2, :, np.arange(p)].T.copy()  # [H, p]
    best = np.where(np.isfinite(best), best - best.sum(axis=0) / H, 0.0)
    possible = (np.isfinite(dn_all).all(axis=1) & (np.minimum(up_all, B).sum(axis=1) >= 0)).astype(np.int64)
    # infeasible for sure: some head fails at −B, or every head's failing offset sums below 0
    above = np.arange(-2, n)[:, None] > lo[None, :]
    hi = np.where((above & (possible == 0)).any(axis=0), np.argmax(above & (possible == 0), axis=0) - 2, ms)
    while True:
        act = lo + 1 < hi
        if not act.any():
            return _spread(best, qs, ms, n)
        tau = np.where(act, (lo + hi) // 2, lo)
        dn, up = dn_all[tau + 2, :, np.arange(p)].T, up_all[tau + 2, :, np.arange(p)].T  # [H, p]
        reach = np.isfinite(dn).all(axis=0)
        dn, up = np.where(np.isfinite(dn), dn, -B), np.minimum(up, B)
        O_lo, O_hi = _bisect(T_at, tau, dn, up, act & reach, steps)
        ok = act & reach & (O_lo.sum(axis=0) >= 0)
        best[:, ok] = O_lo[:, ok] - O_lo[:, ok].sum(axis=0) / H
        lo = np.where(ok, tau, lo)
        hi = np.where(act & ~ok, tau, hi)


def _bisect(T_at, tau: np.ndarray, lo: np.ndarray, hi: np.ndarray, live: np.ndarray, steps: int):
    """Brackets [H, p] of every head's O_h(τ) (lo passes: T_h(lo) >= τ; hi fails, or is the cap
    B), halved by up to ``steps`` rounds of one call per head; a pair leaves as soon as Σ lo >= 0
    (feasible) or Σ hi < 0 (infeasible) decides it. ``live`` [p]: the pairs to decide."""
    lo, hi = lo.copy(), hi.copy()
    for _ in range(steps):
        live = live & (lo.sum(axis=0) < 0) & (hi.sum(axis=0) >= 0)
        if not live.any():
            break
        for h in range(lo.shape[0]):
            open_ = live & (lo[h] < hi[h])
            mid = np.where(open_, 0.5 * (lo[h] + hi[h]), lo[h])
            good = T_at(h, mid) >= tau
            lo[h] = np.where(open_ & good, mid, lo[h])
            hi[h] = np.where(open_ & ~good, mid, hi[h])
    return lo, hi


def _spread(best: np.ndarray, qs: np.ndarray, ms: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((best.shape[0], n, n))
    out[:, qs, ms] = best
    return out
