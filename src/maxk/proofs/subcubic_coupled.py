"""``subcubic-coupled``: the subcubic gap argument with its losing terms tightened, the ones
``maxk.proofs.subcubic_losses`` measures the subcubic proofs lose on.

The subcubic check (``maxk.proofs.subcubic``) bounds, for max m, query q and threshold T, every
output o != m at once by giving each term its own worst output (decoupled), a non-max position
the largest weight over t <= T times the largest value over t <= T (NS·NW), and the scores from
a low-rank EQKE with an error term. Measured (docs/proofs.md), the decoupled worst output costs
most (the query's worst output is o = q, a max copy's is m's nearest rival, a non-max token's
is itself, and no single output is all three), then the NS·NW product and the EQKE error term.
This strategy keeps the same sets of inputs (every non-max token <= T, per (q, m)) and the same
counting, and tightens the check:

* **EQKE** (option ``attention``, default "full"): the enclosed n×n product Qt·Ktᵀ, O(n²·dh)
  like the EVOU table every variant forms, so no error term ("keydir", "svd": the low-rank
  bounds of ``maxk.proofs.lowrank``).
* **outputs**: the check runs per column, each a set of outputs with its own D, V and P terms:
  a candidate set C of single outputs — with ``exact_outputs`` = r >= 1, the query's largest
  EVOU output and the r largest of EVOU[m] (rows sorted once, not per pair) — and two columns
  for the outputs outside C below m and above m, whose terms are each row's maximum there (the
  first of the row's stored r + 3 largest entries on that side outside C ∪ {m}, else the
  smaller of the last stored value and the row's maximum over the side); PVOU's term on those
  two is its side maximum. r = 0 leaves the two side columns (as ``subcubic-split``).
* **far tokens by blocks**: a non-max token t <= T−b at position i adds
  w_t (v_t + y) <= epi_i (A + w_top·y⁺), with y = Pd[i, o] + Dd[o], w_top the largest weight
  over t <= T−b and A the largest (block max weight · block max value)⁺ over geometric blocks
  of tokens T−b, T−b−1..T−b−2, T−b−3..T−b−6, ... (range maxima from sparse tables over t); a
  block's value on a candidate output o is max_t EVOU_hi[t, o] − min_t EVOU_lo[t, m] (or the
  worst output's, if smaller). The smaller of this and the subcubic NS·NW bound is used.
* **near tokens** (option ``near_tokens`` = b, default 0): the b tokens T−b+1..T are bounded
  one by one, their own weight times their own value (exact on the candidates).

Sound: for an input in the set and an output o != m, o lies in one column, and every term of
F(o) is at most that column's entry (each is an upper bound of the exact term for every output
the column stands for); a non-max token adds at most its near, block or prefix bound. Every step
is rounded up and the decision is a strict ``< 0`` over every column (anything non-finite
fails), as in ``maxk.proofs.subcubic``; every reported T was itself checked.

Cost: the tables (O(n²·d); EQKE O(n²·dh) with "full"), O(n²·log n) for the sorted rows and the
sparse tables, O(n²·k·b) exponentials for the near tokens, and O((r + 3)·k·(b + log n)) per
check, ~3–4 checks per (q, m) pair: O(n²·d + n²·k·(r + 3)·(b + log n)·log n) — subcubic for
fixed r, b.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from ..registry import Refused
from .common import require_single_head
from .enclose import Interval, add, exp, mul_scalar, mul_upper, point, sub, up
from .lowrank import eqke_meandiff, eqke_svd, matmul_cs, qk_pieces
from .per_head import per_head_thresholds
from .subcubic import FINITE, _exp_up, count_certified, margin_up, ov_tables, search_pairs, side_margins_up

__all__ = ["COST", "EXACT_OUTPUTS", "NEAR_TOKENS", "coupled_thresholds", "prove_coupled"]

COST = "O(n^2 d + n^2 k (exact_outputs + 3) (near_tokens + log n) log n)"  # r, b: the two options
EXACT_OUTPUTS = 0  # r: the max token's r largest rivals (and the query's own output) kept exactly
NEAR_TOKENS = 0  # b: tokens just below the threshold bounded one by one (little gain once blocks are used)


def _row_tops(x: Interval, R: int, counter: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """Indices [r, R] and upper bounds [r, R] of the R largest entries (by hi) of each row of x,
    largest first. Cost: a sort of each row, O(r·n·log n) comparisons."""
    hi = x.hi
    idx = np.argsort(-hi, axis=1, kind="stable")[:, :R]
    counter.add(hi.size * max(1, int(np.ceil(np.log2(max(hi.shape[1], 2))))), "sort")
    return idx, np.take_along_axis(hi, idx, axis=1)


def _outside_max(
    idx: np.ndarray,
    val: np.ndarray,
    excl: np.ndarray,
    m: np.ndarray,
    below: bool,
    side_max: np.ndarray,
    counter: FlopCounter,
) -> np.ndarray:
    """For rows given by their stored tops idx, val [p, R], excluded outputs excl [p, c] and the
    max token m [p]: an upper bound [p] on the row's largest entry among the outputs o < m
    (``below``) or o > m outside excl — the first stored entry on that side not excluded, else
    the smaller of the last stored value (every entry not stored is at most it) and side_max
    [p], the row's maximum over the whole side."""
    if idx.shape[1] == 0:  # nothing stored: the side's maximum
        return side_max
    side = idx < m[:, None] if below else idx > m[:, None]
    free = side & ~(idx[:, :, None] == excl[:, None, :]).any(axis=2)  # [p, R]
    counter.add(free.size * (excl.shape[1] + 1), "compare")
    first = np.argmax(free, axis=1)
    rows = np.arange(idx.shape[0])
    return np.where(free.any(axis=1), val[rows, first], np.minimum(val[:, -1], side_max))


def _side_maxima(hi: np.ndarray, counter: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """pre[r, m] = max_{o<m} hi[r, o] and suf[r, m] = max_{o>m} hi[r, o] (−inf if none)."""
    pre = np.full_like(hi, -np.inf)
    pre[:, 1:] = np.maximum.accumulate(hi, axis=1)[:, :-1]
    suf = np.full_like(hi, -np.inf)
    suf[:, :-1] = np.maximum.accumulate(hi[:, ::-1], axis=1)[:, ::-1][:, 1:]
    counter.add(2 * hi.size, "compare")
    return pre, suf


def _sparse_table(x: np.ndarray, counter: FlopCounter) -> list[np.ndarray]:
    """Levels [L][r, c]: level j holds max(x[:, t : t + 2^j]) at column t (t + 2^j <= c).
    Cost O(r·c·log c) comparisons."""
    levels = [x]
    while (1 << len(levels)) <= x.shape[1]:
        prev, h = levels[-1], 1 << (len(levels) - 1)
        nxt = np.maximum(prev[:, :-h], prev[:, h:])
        counter.add(nxt.size, "compare")
        levels.append(nxt)
    return levels


def _range_max(levels: list[np.ndarray], rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(x[rows, lo..hi]) (inclusive, lo <= hi) from a sparse table: rows [s] or [s, c] with
    lo, hi [s]; result shaped as rows."""
    lev = np.floor(np.log2(hi - lo + 1)).astype(np.int64)
    out = np.empty(rows.shape)
    for L in np.unique(lev):
        j = lev == L
        tab = levels[L]
        shape = (-1,) + (1,) * (rows.ndim - 1)
        a, z = lo[j].reshape(shape), (hi[j] - (1 << L) + 1).reshape(shape)
        out[j] = np.maximum(tab[rows[j], a], tab[rows[j], z])
    return out


class _Blocks:
    """Sparse tables over the key token t for the geometric blocks of far tokens: the weight
    exp(EQKE_hi[q, t] − ref_q) [q, t], the value W[t, m] (worst output) [m, t], and EVOU's
    columns, hi [o, t] and −lo [m, t], for the value on one output o:
    EVOU[t, o] − EVOU[t, m] <= max_{t∈B} EVOU_hi[t, o] − min_{t∈B} EVOU_lo[t, m]."""

    def __init__(self, ew: np.ndarray, W: np.ndarray, evou: Interval, counter: FlopCounter):
        self.ew = _sparse_table(ew, counter)
        self.w = _sparse_table(np.ascontiguousarray(W.T), counter)
        self.col_hi = _sparse_table(np.ascontiguousarray(evou.hi.T), counter)
        self.neg_lo = _sparse_table(np.ascontiguousarray(-evou.lo.T), counter)

    def products(self, q: np.ndarray, m: np.ndarray, top: np.ndarray, cand: np.ndarray, counter: FlopCounter):
        """A [s, C + 1] >= max over tokens t <= top of (exp(EQKE[q, t] − ref_q)·value)⁺, the
        value EVOU[t, o] − EVOU[t, m] on candidate output o = cand[:, c] (column c) or on any
        output (last column), by blocks of tokens top, top−1..top−2, top−3..top−6, ... (sizes 1,
        2, 4, ...), each bounded by its max weight times its max value. O(log n·(C + 1)) per pair."""
        A = np.zeros((q.size, cand.shape[1] + 1))
        j = 0
        while True:
            hi = top - ((1 << j) - 1)
            act = np.nonzero(hi >= 0)[0]
            if act.size == 0:
                return A
            lo, hi = np.maximum(top[act] - ((1 << (j + 1)) - 2), 0), hi[act]
            wb = _range_max(self.ew, q[act], lo, hi)  # [a]
            vb = _range_max(self.w, m[act], lo, hi)  # [a]: worst output
            if cand.shape[1]:
                vo = _range_max(self.col_hi, cand[act], lo, hi) + _range_max(self.neg_lo, m[act], lo, hi)[:, None]
                vo = up(vo, counter)
                vb = np.concatenate([np.minimum(vo, vb[:, None]), vb[:, None]], axis=1)  # [a, C + 1]
                counter.add(2 * vo.size, "blocks")
            else:
                vb = vb[:, None]
            prod = mul_upper(np.zeros_like(vb), np.broadcast_to(wb[:, None], vb.shape), vb, counter)
            A[act] = np.maximum(A[act], np.maximum(prod, 0.0))
            counter.add(2 * prod.size, "blocks")
            j += 1


def _decide(tot: np.ndarray, valid: np.ndarray, counter: FlopCounter) -> np.ndarray:
    """Certified [s]: every valid column's bound [s, U] finite and < 0 (no valid column: there
    is no output other than m)."""
    worst = np.where(valid, tot, -np.inf).max(axis=1)
    counter.add(tot.size, "compare")
    return cast(np.ndarray, (np.isfinite(worst) & (worst < 0)) | ~valid.any(axis=1))


def coupled_thresholds(
    model,
    counter: FlopCounter | None = None,
    *,
    exact_outputs: int = EXACT_OUTPUTS,
    near_tokens: int = NEAR_TOKENS,
    attention: str = "full",
    strategy: str = "subcubic-coupled",
) -> np.ndarray:
    """T [n_q, n_max]: per (q, m) with q <= m the largest certified threshold (−1: only the
    inputs whose free positions all hold m, −2: none), with ``exact_outputs`` = r (the max's r
    largest rivals and the query's own output checked one by one), ``near_tokens`` = b tokens
    bounded one by one and the EQKE bound ``attention`` ("full", "keydir" or "svd"). Cost in the
    module docstring."""
    c = counter if counter is not None else FlopCounter()
    require_single_head(model, strategy)
    if exact_outputs < 0 or near_tokens < 0:
        raise MaxkError(f"exact_outputs and near_tokens must be >= 0, not {exact_outputs}, {near_tokens}")
    pieces = qk_pieces(model, c)
    if attention == "svd":
        eqke = eqke_svd(pieces, 2, c)
    elif attention == "keydir":
        eqke = eqke_meandiff(pieces, c, key_direction=True)
    elif attention == "full":  # the n×n product, O(n²·dh) like EVOU: no error term
        eqke = mul_scalar(matmul_cs(pieces.qt, Interval(pieces.kt.lo.T, pieces.kt.hi.T), c), pieces.s, c)
    else:
        raise MaxkError(f"unknown EQKE bound {attention!r}: choose keydir, svd or full")
    tabs = ov_tables(model, pieces.qt, pieces.s, c)
    eqkp, evou, pvou, eupu = tabs.eqkp, tabs.evou, tabs.pvou, tabs.eupu
    assert eupu is not None
    for name, arr in (("EQKE", eqke.lo), ("EQKE", eqke.hi), ("EQKP", eqkp.lo), ("EQKP", eqkp.hi)):
        if not np.all(np.isfinite(arr)):
            raise Refused(FINITE, f"{name} enclosure is not finite")
    with np.errstate(all="ignore"):  # inf/NaN can only make a check fail
        return _thresholds(eqke, eqkp, evou, pvou, eupu, exact_outputs, near_tokens, c)


def _thresholds(eqke, eqkp, evou, pvou, eupu, r: int, b: int, counter: FlopCounter) -> np.ndarray:
    n, k = eqkp.shape
    f = k - 1
    W = margin_up(evou, counter)  # [t, m] >= max_{o≠m} EVOU[t, o] − EVOU[t, m]
    Pv, _ = side_margins_up(pvou, counter)  # [2, i, m]: max over o < m, o > m
    qs, ms = np.nonzero(np.triu(np.ones((n, n), dtype=bool)))
    R = min(r + 3, n)  # stored tops per row: enough for r + 1 candidates, m and one more
    empty = np.zeros((n, 0), dtype=np.int64)
    ev_i, ev_v = _row_tops(evou, R, counter) if r else (empty, empty.astype(float))
    eu_i, eu_v = _row_tops(eupu, R, counter) if r else (empty, empty.astype(float))
    # candidate outputs per pair: the query's largest EVOU output and the r largest of EVOU[m]
    # (duplicates change nothing; one equal to m is skipped)
    cand = np.concatenate([ev_i[qs, : min(r, 1)], ev_i[ms, :r]], axis=1)  # [p, C]
    excl = np.concatenate([cand, ms[:, None]], axis=1)
    # columns: the candidates, then the outputs outside them below m and above m
    valid = np.concatenate([cand != ms[:, None], (ms > 0)[:, None], (ms < n - 1)[:, None]], axis=1)  # [p, U]

    def up_sum(*terms) -> np.ndarray:
        acc = terms[0]
        for t in terms[1:]:
            acc = up(acc + t, counter)
            counter.add(acc.size, "sum")
        return acc

    def minus(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        out = up(hi - lo, counter)
        counter.add(out.size, "value diffs")
        return out

    def column(tab: Interval, rows: np.ndarray, tops, sides) -> np.ndarray:
        """[p, U]: tab.hi[rows, o] − tab.lo[rows, m] on the candidates, then the row's maxima
        outside them below m and above m (tops: the rows' stored largest entries; sides: the
        rows' maxima over o < m and o > m)."""
        on = np.take_along_axis(tab.hi[rows], cand, axis=1)
        out = [
            _outside_max(tops[0][rows], tops[1][rows], excl, ms, below, side[rows, ms], counter)[:, None]
            for below, side in zip((True, False), sides, strict=True)
        ]
        return minus(np.concatenate([on, *out], axis=1), tab.lo[rows, ms][:, None])

    ev_sides, eu_sides = _side_maxima(evou.hi, counter), _side_maxima(eupu.hi, counter)
    Dd = column(eupu, qs, (eu_i, eu_v), eu_sides)  # direct path
    Vq = column(evou, qs, (ev_i, ev_v), ev_sides)  # the query's value
    Vm = column(evou, ms, (ev_i, ev_v), ev_sides)  # a max copy's value
    # PVOU: exact on the candidates, its side maximum on the outside columns
    pc = minus(pvou.hi[:, cand].transpose(1, 0, 2), pvou.lo[:, ms].T[:, :, None])  # [p, k, C]
    Pd = np.concatenate([pc, Pv[0][:, ms].T[:, :, None], Pv[1][:, ms].T[:, :, None]], axis=2)  # [p, k, U]

    ref_q = up(eqke.hi.max(axis=1) + eqkp.hi.max(axis=1), counter)  # [n] one reference per query row
    counter.add(eqke.hi.size + eqkp.hi.size + n, "compare")

    def weights(q: np.ndarray, t: np.ndarray, i: np.ndarray | int) -> Interval:
        """exp(EQKE[q, t] + EQKP[q, i] − ref_q), enclosed (broadcast shapes)."""
        e = add(Interval(eqke.lo[q, t], eqke.hi[q, t]), Interval(eqkp.lo[q, i], eqkp.hi[q, i]), counter)
        return exp(sub(e, point(ref_q[q]), counter), counter)

    free = np.arange(f)
    wq = weights(qs, qs, f)  # [p]
    qterm = mul_upper(wq.lo[:, None], wq.hi[:, None], up_sum(Dd, Vq, Pd[:, f]), counter)  # [p, U]
    is_q_max = qs == ms
    if f == 0:

        def ok0(T: np.ndarray, sel: np.ndarray) -> np.ndarray:
            return _decide(qterm[sel], valid[sel], counter)

        return search_pairs(ok0, qs, ms, n)
    wm = weights(qs[:, None], ms[:, None], free[None])  # [p, f]
    neg = mul_upper(wm.lo[..., None], wm.hi[..., None], up_sum(Dd[:, None], Vm[:, None], Pd[:, :f]), counter)
    ypd = up_sum(Pd[:, :f], Dd[:, None])  # [p, f, U]: Pd[i, o] + Dd[o]
    NS = np.maximum.accumulate(eqke.hi, axis=1)  # [q, T]
    NW = np.maximum.accumulate(W, axis=0)  # [T, m]
    counter.add(NS.size + NW.size, "prefix max")
    ens = _exp_up(up(NS - ref_q[:, None], counter), counter)  # [q, T]
    epi = _exp_up(eqkp.hi[:, :f], counter)  # [q, i]
    counter.add(NS.size, "scores")
    blocks = _Blocks(_exp_up(up(eqke.hi - ref_q[:, None], counter), counter), W, evou, counter)
    counter.add(eqke.hi.size, "scores")
    if b:  # the near tokens' weights for every (q, t, i), enclosed once
        wt = weights(np.arange(n)[:, None, None], np.arange(n)[None, :, None], free[None, None, :])  # [q, t, i]

    def ok(T: np.ndarray, sel: np.ndarray) -> np.ndarray:
        """Certified at threshold T [s] for the pairs sel [s]."""
        q, m = qs[sel], ms[sel]
        yp = ypd[sel]  # [s, f, U]
        far = T - b  # tokens <= far by the prefix maxima of weight and value
        fc = np.maximum(far, 0)
        ehi = up(ens[q, fc][:, None] * epi[q], counter)  # [s, f]
        xn = up(NW[fc, m][:, None, None] + yp, counter)  # [s, f, U]
        counter.add(ehi.size + xn.size, "check")
        pf = mul_upper(np.zeros_like(ehi)[..., None], ehi[..., None], xn, counter)
        # the same tokens by geometric blocks: w_t (v_t + y) <= epi_i (A + w_top y⁺) with
        # A = max over blocks of (block max weight · block max value)⁺, w_top = ens[q, far]
        A = blocks.products(q, m, fc, cand[sel], counter)  # [s, C + 1]: any output in the last column
        A = np.concatenate([A, A[:, -1:]], axis=1)  # [s, U]
        yplus = np.maximum(yp, 0.0)
        pb = up(
            epi[q][..., None] * up(A[:, None, :] + up(ens[q, fc][:, None, None] * yplus, counter), counter), counter
        )
        counter.add(4 * yp.size, "check")
        pos = np.where((far >= 0)[:, None, None], np.minimum(pf, pb), -np.inf)
        for j in range(b):  # one near token t = T − j
            t = np.maximum(T - j, 0)
            # its value: exact on the candidates, its worst output over all o != m elsewhere
            vc = minus(np.take_along_axis(evou.hi[t], cand[sel], axis=1), evou.lo[t, m][:, None])
            vt = np.concatenate([vc, W[t, m][:, None], W[t, m][:, None]], axis=1)  # [s, U]
            x = up(vt[:, None, :] + yp, counter)  # [s, f, U]
            counter.add(x.size, "check")
            wj = wt[q, t]  # [s, f]
            pn = mul_upper(wj.lo[..., None], wj.hi[..., None], x, counter)
            pos = np.maximum(pos, np.where((T - j >= 0)[:, None, None], pn, -np.inf))
            counter.add(pos.size, "compare")
        ng = neg[sel]
        best = np.maximum(ng, pos)  # [s, f, U]
        counter.add(best.size, "compare")
        acc = qterm[sel]
        for i in range(f):
            acc = up(acc + best[:, i], counter)
        counter.add(acc.size * f, "sum")
        need = up(up(acc[:, None] - best, counter) + ng, counter).max(axis=1)  # a free copy of m
        counter.add(3 * best.size, "sum")
        tot = np.where(is_q_max[sel][:, None], acc, need)
        return _decide(tot, valid[sel], counter)

    return search_pairs(ok, qs, ms, n)


def prove_coupled(
    model,
    dist: Distribution,
    *,
    counter: FlopCounter,
    exact_outputs: int = EXACT_OUTPUTS,
    near_tokens: int = NEAR_TOKENS,
    attention: str = "full",
) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
    d = resolve(dist, model.cfg.n, model.cfg.k)
    T = per_head_thresholds(
        model,
        lambda m: coupled_thresholds(
            m, counter, exact_outputs=exact_outputs, near_tokens=near_tokens, attention=attention
        ),
    )
    return count_certified(T, model.cfg.k, d)
