"""The subcubic proof family (DESIGN §5): low-rank EQKE with a rigorous error term, per-(max, query)
gaps, and the variants whose direct path and attention come from O(n·d) pieces.

Single head. For an input with max m and query q (q <= m), and any output o != m,

    logit[o] − logit[m] = Σ_i a_i · (Dd[q, o] + Vd[x_i, o] + Pd[i, o]),
    Dd[q, o] = EUPU[q, o] − EUPU[q, m],  Vd[t, o] = EVOU[t, o] − EVOU[t, m],
    Pd[i, o] = PVOU[i, o] − PVOU[i, m]

(the a_i sum to 1, so the direct path spreads over the positions). Taking the worst output for each
term separately (decoupling o) gives n×n tables, each an O(n²) pass over a row's top two entries:

    D[q, m] >= max_{o≠m} Dd[q, o],   W[t, m] >= max_{o≠m} Vd[t, o],   Pv[i, m] >= max_{o≠m} Pd[i, o].

The input is correct if Σ_i w_i (D[q, m] + W[x_i, m] + Pv[i, m]) < 0 with w_i = exp(score_i − ref)
for any constant ref (the positive factor does not change the sign; we take one per query row,
its largest possible score, so that no exponential overflows).

Gaps. For a threshold T (−1 <= T <= m−1), consider every input with max m, query q, and all
non-max tokens at the free positions 0..k−2 at most T (the query itself may be any q <= m). With
NS[q, T] = max_{t<=T} EQKE_hi[q, t] and NW[T, m] = max_{t<=T} W[t, m] (prefix maxima, O(n²)
in all), position i contributes at most
    neg_i = exp(EQKE[q, m] + EQKP[q, i] − ref) · (W[m, m] + Pv[i, m] + D[q, m])   if it holds m,
    pos_i = max(0, exp(NS[q, T] + EQKP_hi[q, i] − ref) · (NW[T, m] + Pv[i, m] + D[q, m]))  else,
the query contributes exp(EQKE[q, q] + EQKP[q, k−1] − ref)·(W[q, m] + Pv[k−1, m] + D[q, m]), and
the worst arrangement with at least one free copy of m (needed when q < m) is
    max_j [ neg_j + Σ_{i≠j} max(neg_i, pos_i) ]      (q < m),      Σ_i max(neg_i, pos_i)  (q = m).
If that is negative (with every step rounded up), all those inputs are correct. Certification is
monotone in T, so a galloping search per (q, m), closed by a binary search, finds the largest
certified T — the gap m − T is chosen per (max, query) from the bounds — in O(k log n) per pair
(every T reported was itself checked). The thresholds are the proof's certificate: the FLOPs
reported are its verification's, one check per pair at its T (``search_pairs``; the search is
the prover's work and is not counted, as DESIGN §5 asks). Inputs with a non-max token above T are dropped (not
certified). Counting is exact: with a = T + 1 allowed non-max tokens,
    uniform:  (a+1)^(k−1) − a^(k−1)  (q < m),   (a+1)^(k−1)  (q = m);
    distinct: (k−1)·P(a − [q <= T], k−2)  (q < m),   P(a, k−1)  (q = m).

EQKE enters only through comparisons within one query's row, so an enclosure of EQKE minus a
per-row constant (the mean+diff form of ``maxk.proofs.lowrank``) is as good as EQKE.

Strategies (``STRATEGIES`` below; each returns the certified count and counts its FLOPs):
    subcubic             EQKE = mean query row + per-row difference, with the difference's
                         part along the key direction (keys grow with the token) kept exactly;
                         full EVOU and EUPU tables
    subcubic-svd         EQKE main term of rank 2 from the SVD of the QK product
    subcubic-meandiff    EQKE = mean query row + per-row difference (norm-bounded)
    direct-quadratic     as subcubic, but the direct path bound from O(n·d) pieces
    attention-quadratic  mean+diff EQKE and the direct path from O(n·d) pieces
    subcubic-split       as subcubic, with outputs below and above the max bounded separately
                         (max over o split in two before decoupling: tighter, ~1.2x the FLOPs)
Costs are in each function's docstring and in ``SUBCUBIC_VARIANTS``. Every floating-point step that a
decision depends on is enclosed (``maxk.proofs.enclose``); a comparison too close to call fails,
which only drops inputs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import cast

import numpy as np

from ..distributions import Distribution, get_distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from ..registry import Refusal, Refused
from .common import require_single_head
from .enclose import ETA, EXP_REL, Interval, add, exp, matmul_abs_up, mul_scalar, mul_upper, point, sub, up
from .head_split import split_thresholds
from .lowrank import abs_up, eqke_meandiff, eqke_svd, matmul_cs, qk_pieces, row_norms_up

__all__ = [
    "SubcubicPieces",
    "OVTables",
    "ov_tables",
    "ov_pieces",
    "largest_certified",
    "search_pairs",
    "margin_up",
    "side_margins_up",
    "direct_quadratic_up",
    "certify_gaps",
    "count_certified",
    "subcubic_certified",
    "subcubic_thresholds",
    "SUBCUBIC_VARIANTS",
]


GUESS_GAP = 3  # first threshold tried is m − GUESS_GAP (only the search order depends on it)


class SubcubicPieces:
    """What the gap certification reads (head 0). The value tables come in S "sides", output
    sets O_s with O_1 ∪ … ∪ O_S ⊇ {o ≠ m} (S = 1: all o ≠ m; S = 2: o < m and o > m); an input
    is certified when the check passes for every side. All upper bounds unless an Interval:

    eqke:  Interval [n_q, n_key]  EQKE enclosure (possibly minus a per-query-row constant)
    eqkp:  Interval [n_q, k]      EQKP enclosure
    W:     [S, n_key, n_max]      W[s, t, m] >= max_{o∈O_s(m)} EVOU[t, o] − EVOU[t, m]
    D:     [S, n_q, n_max]        D[s, q, m] >= max_{o∈O_s(m)} EUPU[q, o] − EUPU[q, m]
    Pv:    [S, k, n_max]          Pv[s, i, m] >= max_{o∈O_s(m)} PVOU[i, o] − PVOU[i, m]
    empty: [S, n_max] bool        O_s(m) is empty (nothing to check on that side)
    2-d W, D, Pv are taken as S = 1 (all o ≠ m).
    """

    def __init__(
        self,
        eqke: Interval,
        eqkp: Interval,
        W: np.ndarray,
        D: np.ndarray,
        Pv: np.ndarray,
        empty: np.ndarray | None = None,
    ):
        if W.ndim == 2:
            W, D, Pv = W[None], D[None], Pv[None]
        if empty is None:
            empty = np.zeros((W.shape[0], W.shape[2]), dtype=bool)
            if W.shape[2] == 1:
                empty[:] = True  # n = 1: no output other than m
        self.eqke, self.eqkp, self.W, self.D, self.Pv, self.empty = eqke, eqkp, W, D, Pv, empty


def margin_up(x: Interval, counter: FlopCounter) -> np.ndarray:
    """For rows x [r, n] (enclosed): M[j, m] >= max_{o≠m} x[j, o] − x[j, m], as [r, n].

    Exact up to one rounding: the row's top two upper bounds give max_{o≠m} for every m at once.
    Cost: O(r·n) (two passes for the top two, one subtraction and rounding per entry)."""
    hi = x.hi
    r, n = hi.shape
    idx = hi.argmax(axis=1)
    v1 = hi[np.arange(r), idx]
    masked = hi.copy()
    masked[np.arange(r), idx] = -np.inf
    v2 = masked.max(axis=1)
    counter.add(2 * hi.size, "compare")
    best = np.where(np.arange(n)[None, :] == idx[:, None], v2[:, None], v1[:, None])
    out = up(best - x.lo, counter)
    counter.add(hi.size, "margin")
    return out


def side_margins_up(x: Interval, counter: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """For rows x [r, n]: M [2, r, n] with M[0, j, m] >= max_{o<m} x[j, o] − x[j, m] and
    M[1, j, m] >= max_{o>m} x[j, o] − x[j, m], and empty [2, n] (no o on that side; the entry
    is then −inf). Prefix and suffix maxima along each row: O(r·n)."""
    hi = x.hi
    r, n = hi.shape
    pre = np.full_like(hi, -np.inf)
    pre[:, 1:] = np.maximum.accumulate(hi, axis=1)[:, :-1]
    suf = np.full_like(hi, -np.inf)
    suf[:, :-1] = np.maximum.accumulate(hi[:, ::-1], axis=1)[:, ::-1][:, 1:]
    counter.add(2 * hi.size, "compare")
    with np.errstate(invalid="ignore"):
        out = up(np.stack([pre, suf]) - x.lo[None], counter)
    counter.add(2 * hi.size, "margin")
    empty = np.zeros((2, n), dtype=bool)
    empty[0, 0] = empty[1, n - 1] = True
    return out, empty


def _weights(model) -> dict[str, Interval]:
    return {name: point(p) for name, p in model.named_parameters()}


class OVTables:
    """The enclosed value tables of head 0 that the subcubic family reads (``ov_tables``):
    evou [n, n], pvou [k, n], eupu [n, n] (None when the direct path comes from O(n·d) pieces),
    eqkp [n, k], and the direct-path pieces resq [n, d], WU [d, n], cvec [1, n]."""

    def __init__(self, evou, pvou, eupu, eqkp, resq, WU, cvec):
        self.evou, self.pvou, self.eupu, self.eqkp = evou, pvou, eupu, eqkp
        self.resq, self.WU, self.cvec = resq, WU, cvec


def ov_tables(model, qt: Interval, s: Interval, counter: FlopCounter, *, full_direct: bool = True) -> OVTables:
    """Enclosures of EVOU, PVOU, EQKP and (with ``full_direct``) EUPU, given the enclosed query
    side qt [n, dh] and scale s (``maxk.proofs.lowrank.qk_pieces``). EVOU costs
    O(n·d·dh + n²·dh), PVOU O(k·d·dh + d·dh·n), EQKP O(n·d·dh + n·k·dh), EUPU O(n²·d)."""
    w = _weights(model)
    E, P = w["embed.W_E"], w["pos_embed.W_pos"]
    WK, WV, WO = (w[f"blocks.0.attn.W_{x}"][0] for x in "KVO")
    bK, bV = (w[f"blocks.0.attn.b_{x}"][0] for x in "KV")
    bO, WU, bU = w["blocks.0.attn.b_O"], w["unembed.W_U"], w["unembed.b_U"]
    k = model.cfg.n_ctx
    ou = matmul_cs(WO, WU, counter)  # [dh, n]
    evou = matmul_cs(add(matmul_cs(E, WV, counter), bV, counter), ou, counter)  # [n, n]
    pvou = matmul_cs(matmul_cs(P, WV, counter), ou, counter)  # [k, n]
    cvec = add(matmul_cs(Interval(bO.lo[None], bO.hi[None]), WU, counter), bU, counter)  # [1, n]
    eupu = None
    if full_direct:
        # (E + P[last]) W_U + cvec as E W_U plus one row: the big product has point operands
        row = add(matmul_cs(P[k - 1 : k], WU, counter), cvec, counter)  # [1, n]
        eupu = add(matmul_cs(E, WU, counter), row, counter)
        resq = None
    else:
        resq = add(E, P[k - 1], counter)
    kp = add(matmul_cs(P, WK, counter), bK, counter)  # [k, dh]
    eqkp = mul_scalar(matmul_cs(qt, Interval(kp.lo.T, kp.hi.T), counter), s, counter)
    return OVTables(evou, pvou, eupu, eqkp, resq, WU, cvec)


def ov_pieces(
    model,
    qt: Interval,
    s: Interval,
    counter: FlopCounter,
    *,
    full_direct: bool = True,
    split: bool = False,
    max_offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Interval]:
    """W [S, n, n], D [S, n, n], Pv [S, k, n], empty [S, n] (see ``SubcubicPieces``; S = 1, or
    S = 2 with ``split``: outputs below and above m) and the EQKP enclosure [n, k], from
    ``ov_tables`` (same arguments and cost, plus O(n²) for the margins).

    With ``full_direct`` the direct path bound comes from the enclosed n×n EUPU table
    (O(n²·d)); otherwise from O(n·d) pieces (``direct_quadratic_up``, the same bound for both
    sides). ``max_offset`` b [n_max, n_out] (``maxk.proofs.head_split``; diagonal ignored) is
    added to every output's margin: exactly to a max copy's value W[m, m] (the diagonal, read
    for max copies and a query equal to the max only) and as its side maximum to D."""
    n = model.cfg.n
    tabs = ov_tables(model, qt, s, counter, full_direct=full_direct)

    def margins(x: Interval) -> tuple[np.ndarray, np.ndarray]:
        if split:
            return side_margins_up(x, counter)
        empty = np.full((1, n), n == 1)
        return margin_up(x, counter)[None], empty

    W, empty = margins(tabs.evou)
    Pv, _ = margins(tabs.pvou)
    if tabs.eupu is not None:
        D, _ = margins(tabs.eupu)
    else:
        assert tabs.resq is not None
        Dq = direct_quadratic_up(tabs.resq, tabs.WU, tabs.cvec, counter)
        D = np.broadcast_to(Dq, (W.shape[0],) + Dq.shape)
    if max_offset is not None:
        b = np.array(max_offset, dtype=np.float64)
        np.fill_diagonal(b, 0.0)
        bm = np.diagonal(margins(point(b))[0], axis1=1, axis2=2)  # [S, m]: b's maximum over the side
        Wb = np.diagonal(margins(Interval(tabs.evou.lo, up(tabs.evou.hi + b, counter)))[0], axis1=1, axis2=2)
        W = W.copy()
        idx = np.arange(n)
        with np.errstate(all="ignore"):  # an empty side: NaN, never read (vacuous); overflow: +inf fails
            W[:, idx, idx] = up(Wb - bm, counter)
            D = up(D + bm[:, None, :], counter)
        counter.add(2 * W.shape[0] * n + D.size, "offsets")
    return W, D, Pv, empty, tabs.eqkp


def direct_quadratic_up(resq: Interval, WU: Interval, cvec: Interval, counter: FlopCounter) -> np.ndarray:
    """D [n_q, n_max] >= max_{o≠m} EUPU[q, o] − EUPU[q, m] without the n×n product.

    With μ the mean query residual and Ū the mean unembedding column (any floats are sound),
    δ_q = resq[q] − μ, u_o = μ·U_o + cvec_o, and x[q, o] >= |δ_q·(U_o − Ū)|:
        EUPU[q, o] − EUPU[q, m] = u_o − u_m + δ_q·(U_o − Ū) − δ_q·(U_m − Ū)
                                <= (u_o + x[q, o]) − u_m + x[q, m].
    x is the smaller of two bounds, each from O(n·d) pieces: Cauchy–Schwarz ν_q ρ_o with
    ρ_o >= ||U_o − Ū||, ν_q >= ||δ_q||, and the coordinatewise Σ_j Δ_j |U_oj − Ū_j| with
    Δ_j >= max_q |δ_qj| (exact zero where the residuals and the unembedding's variation live in
    different coordinates). Cost: O(n·d) for the pieces (u, ρ, ν, Δ), O(n²) to combine them."""
    n, d = resq.shape
    mu = (0.5 * (resq.lo + resq.hi)).mean(axis=0)
    ubar = (0.5 * (WU.lo + WU.hi)).mean(axis=1)
    counter.add(2 * resq.lo.size + 2 * WU.lo.size, "means")
    u = add(matmul_cs(point(mu[None, :]), WU, counter), cvec, counter)[0]  # [n]
    dU = sub(Interval(WU.lo.T, WU.hi.T), point(ubar[None, :]), counter)  # [n_out, d]
    dq = sub(resq, point(mu[None, :]), counter)  # [n_q, d]
    rho = row_norms_up(dU, counter)  # [n]
    nu = row_norms_up(dq, counter)  # [n]
    Delta = abs_up(dq).max(axis=0)  # [d]
    coord = matmul_abs_up(abs_up(dU), Delta[:, None], counter)[:, 0]  # [n_out]
    counter.add(4 * dq.lo.size + 2 * dU.lo.size, "abs")
    cross = np.minimum(up(nu[:, None] * rho[None, :], counter), coord[None, :])  # [q, o] >= |δ_q·(U_o − Ū)|
    counter.add(2 * cross.size, "cross terms")
    z = up(u.hi[None, :] + cross, counter)  # [q, o]
    counter.add(z.size, "combine")
    best = margin_up(Interval(np.zeros_like(z), z), counter)  # max_{o≠m} z[q, o] − 0
    out = up(up(best - u.lo[None, :], counter) + cross, counter)
    counter.add(2 * out.size, "combine")
    return out


def _exp_up(x: np.ndarray, counter: FlopCounter) -> np.ndarray:
    """An upper bound on exp(x) (elementwise), with the allowance of ``enclose.exp`` for numpy's
    exp (relative EXP_REL plus 16 subnormal ulps), rounded up. Cost: 1 exp and 3 ops each."""
    e = np.exp(x)
    counter.add(e.size, "exp")
    out = up(e * (1.0 + EXP_REL) + 16 * ETA, counter)
    counter.add(2 * e.size, "exp enclosure")
    return out


def largest_certified(ok, sel: np.ndarray, ms: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Largest T in [−1, m − 1] with ok(T) for each pair of ``sel`` (monotone ok), −2 if none.
    Galloping from ``guess``: up one step at a time while it passes, down in doubling steps
    while it fails, then a binary search closes the interval; T = −1 is checked only for pairs
    that no T >= 0 passed. Every returned T >= −1 was itself checked. ~2 checks per pair when
    the guess is right, O(log n) at worst."""
    npairs = sel.size
    lo = np.full(npairs, -1)  # largest threshold known certified (−1: not checked yet)
    bad = ms.copy()  # smallest threshold known to fail (T = m stands for none)
    first = np.nonzero(guess >= 0)[0]
    if first.size:
        good = ok(guess[first], sel[first])
        lo[first[good]] = guess[first][good]
        bad[first[~good]] = guess[first][~good]
    while True:  # upward
        act = np.nonzero((lo >= 0) & (lo + 1 < bad))[0]
        if act.size == 0:
            break
        good = ok(lo[act] + 1, sel[act])
        lo[act[good]] += 1
        bad[act[~good]] = lo[act[~good]] + 1
    searching = (lo < 0) & (bad < ms)  # the guess failed
    d = 1
    while True:  # downward
        act = np.nonzero(searching & (bad - d > lo))[0]
        if act.size == 0:
            break
        t = bad[act] - d
        good = ok(t, sel[act])
        lo[act] = np.where(good, t, lo[act])
        bad[act] = np.where(good, bad[act], t)
        searching[act] = ~good
        d *= 2
    rest = np.nonzero(lo < 0)[0]
    base = np.ones(npairs, dtype=bool)
    if rest.size:
        base[rest] = ok(np.full(rest.size, -1), sel[rest])
    lo[~base] = -2
    while True:  # binary search between the largest success and the smallest failure
        act = np.nonzero(base & (bad - lo > 1))[0]
        if act.size == 0:
            break
        mid = (lo[act] + bad[act]) // 2
        good = ok(mid, sel[act])
        lo[act] = np.where(good, mid, lo[act])
        bad[act] = np.where(good, bad[act], mid)
    return lo


def certify_gaps(pc: SubcubicPieces, counter: FlopCounter) -> np.ndarray:
    """T [n_q, n_max] int: the largest threshold certified for each (q, m) with q <= m (module
    docstring), −1 if only the inputs whose free positions all hold m are certified, −2 if none
    (and for q > m). Every returned T >= −1 was itself checked (soundness does not rest on the
    search). Cost: O(n²·k) for the per-pair setup and the exponential tables, O(k) per pair and
    step of a galloping search from T = m − GUESS_GAP closed by a binary search (O(log n) steps,
    ~3 per pair on a trained model); O(n²) for the prefix maxima. O(n²·k·log n) in all."""
    with np.errstate(all="ignore"):  # inf/NaN can only make a check fail (see _certify_gaps)
        return _certify_gaps(pc, counter)


def _certify_gaps(pc: SubcubicPieces, counter: FlopCounter) -> np.ndarray:
    eqke, eqkp = pc.eqke, pc.eqkp
    W, D, Pv, empty = pc.W, pc.D, pc.Pv, pc.empty  # [S, n, n], [S, n, n], [S, k, n], [S, n]
    n, k = eqkp.shape
    f = k - 1
    qs, ms = np.nonzero(np.triu(np.ones((n, n), dtype=bool)))  # pairs q <= m
    npairs = qs.size
    NS = np.maximum.accumulate(eqke.hi, axis=1)  # [q, T]
    NW = np.maximum.accumulate(W, axis=1)  # [S, T, m]
    counter.add(NS.size + NW.size, "prefix max")
    Dq = D[:, qs, ms]  # [S, p]
    # one reference per query row, the row's largest possible score: exp(score − ref) <= ~1, so
    # nothing overflows (any float is sound: the factor exp(−ref) cancels in the sign)
    ref_q = up(eqke.hi.max(axis=1) + eqkp.hi.max(axis=1), counter)  # [n]
    counter.add(eqke.hi.size + eqkp.hi.size + n, "compare")
    ref = ref_q[qs]

    def score(t_lo, t_hi, i) -> Interval:
        """EQKE[q, t] + EQKP[q, i] − ref, enclosed: [p] or [p, f]."""
        e = add(Interval(t_lo, t_hi), Interval(eqkp.lo[qs][:, i], eqkp.hi[qs][:, i]), counter)
        r = ref if e.lo.ndim == 1 else ref[:, None]
        return sub(e, point(r), counter)

    def xsum(a, b, c) -> np.ndarray:
        s = up(up(a + b, counter) + c, counter)
        counter.add(2 * s.size, "sum")
        return s

    free = np.arange(f)
    pvf = np.swapaxes(Pv[:, :f, :], 1, 2)[:, ms, :]  # [S, p, f]: Pv[s, i, m]
    # max copies at the free positions: neg [S, p, f]
    if f > 0:
        wm = exp(score(eqke.lo[qs, ms][:, None], eqke.hi[qs, ms][:, None], free), counter)  # [p, f]
        xm = xsum(W[:, ms, ms][:, :, None], pvf, Dq[:, :, None])
        neg = mul_upper(wm.lo[None], wm.hi[None], xm, counter)
        # non-max tokens at position i: weight <= exp(NS[q, T] − ref_q) · exp(EQKP_hi[q, i]),
        # tabulated once (O(n² + n·k) exponentials) and looked up per check
        ens = _exp_up(up(NS - ref_q[:, None], counter), counter)  # [q, T]
        epi = _exp_up(eqkp.hi[:, :f], counter)  # [q, i]
        counter.add(NS.size, "scores")
        ypd = up(pvf + Dq[:, :, None], counter)  # [S, p, f]: Pv[i, m] + D[q, m]
        counter.add(ypd.size, "sum")
    else:
        neg = np.zeros((W.shape[0], npairs, 0))
    # the query's own term [S, p]
    wq = exp(score(eqke.lo[qs, qs], eqke.hi[qs, qs], f), counter)
    xq = xsum(W[:, qs, ms], Pv[:, f, ms], Dq)
    qterm = mul_upper(wq.lo[None], wq.hi[None], xq, counter)
    is_q_max = qs == ms
    vacuous = empty[:, ms]  # [S, p]: no output on this side of m, nothing to check

    def ok(T: np.ndarray, sel: np.ndarray) -> np.ndarray:
        """Certified at threshold T [s] for the pairs sel [s] (indices into the pair list): the
        check must pass for every side."""
        if f == 0:
            good = np.isfinite(qterm[:, sel]) & (qterm[:, sel] < 0)
            return cast(np.ndarray, (good | vacuous[:, sel]).all(axis=0))
        q, m = qs[sel], ms[sel]
        Tc = np.maximum(T, 0)
        ehi = up(ens[q, Tc][:, None] * epi[q], counter)  # [s, f]
        xn = up(NW[:, Tc, m][:, :, None] + ypd[:, sel], counter)  # [S, s, f]
        counter.add(ehi.size + xn.size, "check")
        pos = mul_upper(np.zeros_like(ehi)[None], ehi[None], xn, counter)
        pos = np.where((T < 0)[None, :, None], -np.inf, pos)
        ng = neg[:, sel]
        best = np.maximum(ng, pos)  # [S, s, f]
        counter.add(best.size, "compare")
        acc = qterm[:, sel]
        for i in range(f):
            acc = up(acc + best[:, :, i], counter)  # query + Σ_i max(neg_i, pos_i)
        counter.add(acc.size * f, "sum")
        # q < m needs a free copy of m, at some j: acc − best_j + neg_j (>= the exact sum)
        need = up(up(acc[:, :, None] - best, counter) + ng, counter).max(axis=2)
        counter.add(3 * best.size, "sum")
        total = np.where(is_q_max[sel][None], acc, need)
        good = np.isfinite(total) & (total < 0)  # anything non-finite fails
        return cast(np.ndarray, (good | vacuous[:, sel]).all(axis=0))

    return search_pairs(ok, qs, ms, n, counter)


def search_pairs(ok, qs: np.ndarray, ms: np.ndarray, n: int, counter: FlopCounter | None = None) -> np.ndarray:
    """T [n_q, n_max]: ``largest_certified`` for every pair (qs[p], ms[p]) (all q <= m, in the
    order of ``np.triu``), −2 elsewhere. Pairs are searched one max token m at a time, each from
    the guess T(q, m − 1) + 1 (the gap m − T changes slowly with m), or m − GUESS_GAP when there
    is none; ``ok(T, sel)`` checks thresholds T for the pairs ``sel`` (indices into qs, ms).

    With ``counter`` (the one ``ok`` adds to), the proof's FLOPs are its verification's: the
    thresholds are the certificate, the search that finds them is the prover's work (DESIGN §5:
    verification only, search excluded), so the search's operations are taken off ``counter``
    and every pair is then checked once more at its threshold, counted (a failure there would
    be a bug: AssertionError). Without it everything ``ok`` does is counted."""
    T = np.full(qs.size, -2, dtype=np.int64)
    prev = np.full(n, -2, dtype=np.int64)  # T(q, m − 1) by q
    with nullcontext() if counter is None else counter.uncounted():
        for m_ in range(n):
            sel = np.nonzero(ms == m_)[0]  # pairs (q, m_) for q = 0..m_, in order of q
            guess = np.where(prev[: m_ + 1] >= 0, prev[: m_ + 1] + 1, m_ - GUESS_GAP)
            guess = np.minimum(guess, m_ - 1)
            T[sel] = largest_certified(ok, sel, np.full(sel.size, m_), guess)
            prev[: m_ + 1] = T[sel]
    if counter is not None:  # count the verification, not the search
        claimed = np.nonzero(T >= -1)[0]
        if claimed.size and not np.all(ok(T[claimed], claimed)):
            raise AssertionError("a threshold found by the search failed its verification")
    out = np.full((n, n), -2, dtype=np.int64)
    out[qs, ms] = T
    return out


def count_certified(T: np.ndarray, k: int, dist: str | Distribution) -> int:
    """Exact number of inputs of ``dist`` covered by the thresholds T [n_q, n_max] (see
    ``certify_gaps``): for each (q, m) with T >= -1, the inputs whose non-max tokens are all <= T.
    Cost: O(n²) integer operations (not floating point)."""
    n = T.shape[0]
    dist = get_distribution(dist)
    total = 0
    for q in range(n):
        for m in range(q, n):
            t = int(T[q, m])
            if t >= -1:
                total += dist.count_below(k, m, q, t)
    return total


def subcubic_thresholds(
    model,
    counter: FlopCounter | None = None,
    *,
    attention: str = "keydir",
    rank: int = 2,
    direct: str = "full",
    split: bool = False,
    strategy: str = "subcubic",
    direct_offset: np.ndarray | None = None,
    max_offset: np.ndarray | None = None,
) -> np.ndarray:
    """The thresholds T [n_q, n_max] of ``certify_gaps`` (any distribution) with the chosen EQKE
    bound (``attention`` = "keydir": mean + difference with the key direction kept exactly;
    "meandiff": mean + difference; "svd": SVD main term of rank ``rank``; see
    ``maxk.proofs.lowrank``) and direct path (``direct`` = "full": the n×n EUPU table, or
    "quadratic": from O(n·d) pieces). With ``split`` the outputs below and above the max are
    bounded separately (two sides, each decoupled), which keeps a non-max token's own output
    apart from the max token's nearest rival above it. ``direct_offset`` c [n_q, n_max] and
    ``max_offset`` b [n_max, n_out] (``maxk.proofs.head_split``) make the check certify margin
    > c[q, m] + b[m, o] against every output o (b as ``ov_pieces``).

    Cost: O(n·d·dh) for the query/key pieces (plus O(n·dh² + dh³) for "svd"), O(n²·dh) for
    EVOU (and O(n²·d) for EUPU if ``direct`` is "full"), O(n²) (O(n²·rank) for "svd") for the
    EQKE enclosure, O(n²·k·log n) for the gap search (twice the work per check with ``split``)."""
    c = counter if counter is not None else FlopCounter()
    require_single_head(model, strategy)
    pieces = qk_pieces(model, c)
    if attention == "svd":
        eqke = eqke_svd(pieces, rank, c)
    elif attention in ("keydir", "meandiff"):
        eqke = eqke_meandiff(pieces, c, key_direction=(attention == "keydir"))
    else:
        raise MaxkError(f"unknown EQKE bound {attention!r}: choose svd, keydir or meandiff")
    W, D, Pv, empty, eqkp = ov_pieces(
        model, pieces.qt, pieces.s, c, full_direct=(direct == "full"), split=split, max_offset=max_offset
    )
    if direct_offset is not None:
        with np.errstate(all="ignore"):  # overflow gives +inf, which fails
            D = up(D + np.asarray(direct_offset, dtype=np.float64)[None], c)
        c.add(D.size, "offsets")
    for name, arr in (("EQKE", eqke.lo), ("EQKE", eqke.hi), ("EQKP", eqkp.lo), ("EQKP", eqkp.hi)):
        if not np.all(np.isfinite(arr)):
            raise Refused(FINITE, f"{name} enclosure is not finite")
    return certify_gaps(SubcubicPieces(eqke, eqkp, W, D, Pv, empty), c)


def subcubic_certified(
    model, dist: str | Distribution = "uniform", counter: FlopCounter | None = None, **settings
) -> int:
    """Certified count for ``dist``: ``count_certified`` of ``subcubic_thresholds(model, counter,
    **settings)`` (same settings and cost), on several heads with the margin split between them
    (``head_split``)."""
    d = resolve(dist, model.cfg.n, model.cfg.k)
    c = counter if counter is not None else FlopCounter()
    T = split_thresholds(model, lambda m, o, b: subcubic_thresholds(m, c, direct_offset=o, max_offset=b, **settings), c)
    return count_certified(T, model.cfg.k, d)


FINITE = Refusal("needs finite enclosures of EQKE and EQKP (the weights are too large)")


@dataclass(frozen=True)
class SubcubicVariant:
    """One registered member of the family: its name, settings, cost and summary."""

    name: str
    settings: dict
    cost: str
    summary: str

    def run(self, model, dist: Distribution, *, counter: FlopCounter) -> int:
        """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
        return subcubic_certified(model, dist, counter, strategy=self.name, **self.settings)


SUBCUBIC_VARIANTS = (
    SubcubicVariant(
        "subcubic",
        dict(attention="keydir", direct="full"),
        "O(n^2 d + n^2 k log n)",
        "EQKE as mean + per-row difference with the key direction exact; per-(max, query) gaps",
    ),
    SubcubicVariant(
        "subcubic-svd",
        dict(attention="svd", rank=2, direct="full"),
        "O(n^2 d + n d^2 + d^3 + n^2 k log n)",
        "EQKE as a rank-2 SVD main term + Cauchy-Schwarz tail; per-(max, query) gaps",
    ),
    SubcubicVariant(
        "subcubic-meandiff",
        dict(attention="meandiff", direct="full"),
        "O(n^2 d + n^2 k log n)",
        "EQKE as mean query row + norm-bounded per-row difference; gaps",
    ),
    SubcubicVariant(
        "direct-quadratic",
        dict(attention="keydir", direct="quadratic"),
        "O(n^2 d_head + n d d_head + n^2 k log n)",
        "as subcubic, direct path bounded from O(n d) pieces (no n x n EUPU)",
    ),
    SubcubicVariant(
        "attention-quadratic",
        dict(attention="meandiff", direct="quadratic"),
        "O(n^2 d_head + n d d_head + n^2 k log n)",
        "mean+diff EQKE and direct path from O(n d) pieces; gaps",
    ),
    SubcubicVariant(
        "subcubic-split",
        dict(attention="keydir", direct="full", split=True),
        "O(n^2 d + n^2 k log n)",
        "as subcubic, outputs below / above the max bounded separately",
    ),
)
