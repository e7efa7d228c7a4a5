"""Brute force: every input of the distribution certified by its own margin.

For query q, with the notation of ``maxk.proofs.common`` (w_i = exp(score_i - shift_q) enclosed,
R_i(o) = EUPU[q, o] + EVOU[x_i, o] + PVOU[i, o] enclosed), the logits times the positive
softmax normaliser are sum_i w_i R_i(o). For each (token, position) we compute float64 bounds
L_i(o) <= w_i R_i(o) <= H_i(o) (outward rounded) and A_i = max_o max(|L_i(o)|, |H_i(o)|), so
for an input x with max m

    Z·(logit[m] - logit[o]) >= S(x, o) = sum_i L_i(m) - sum_i H_i(o).

*The float32 pass* (single head) decides every input from these numbers rounded to float32, in
the layout of exact evaluation: the free positions split into group A (lead..k-3) and group B
(position k-2 and the query, plus the first ``lead`` positions when group A would not fit in
memory). Group A's rows are sorted by their max v, so that for a run of rows with max v and a B
row b the label is max(v, max of b) and is excluded by one -inf written into B's row. A tile of
inputs then costs one broadcast addition and one row max per output (no exponential), n^(k+1)
of each in all. With u = 2^-24 and alpha = sum_i A_i, the input is certified iff

    X = fl32 sum_i (L_i(m) - tau·A_i) - delta  >  max_{o != m} fl32 sum_i H_i(o),
    tau = 8·k·u,  delta = 2^-100,

the sums taken in any order, every term cast from float64 to float32 (round to nearest).
Why it is sound: each of the at most 4k casts and additions on either side adds an error of at
most u·|result| + 2^-125 (a subnormal flushed to zero included), and every partial sum is at
most (1 + tau)·alpha + delta in size, so each side is off by at most 4.01·k·u·alpha + 2^-117
(left) and 2.01·k·u·alpha + 2^-118 (right). A pass therefore gives
sum_i L_i(m) - sum_i H_i(o) > tau·alpha + delta - 6.02·k·u·alpha - 2^-116 > 0 for every o != m.
A query whose terms exceed 2^100 in size skips the pass (no float32 overflow is possible).

Inputs the pass leaves open (wrong ones, near-ties within ~1e-6 relative, or ones whose
weights underflowed under the per-query shift) are redone one by one in float64 with their own
shift (their largest score): certified iff the float64 min_{o != m} S(x, o) exceeds
4·gamma_{2k}·alpha (the float error of those sums in any order is at most
gamma_{2k}·sum_i(|L_i| + |H_i|)). So a margin within rounding counts against the bound and every
other input counts exactly as the real-number model decides it.

Cost: n^(k+1) float32 additions and comparisons (n^k inputs, n outputs each) plus O(n^(k-1))
for group A's tables per query and O(k·n) per input left open; memory O(n^(k-1)) float32 for
group A (at most _A_FLOATS per worker). Query tokens are shared between worker threads, torch
single-threaded in each (as ``maxk.exact.evaluate``). Models with several heads take a
per-input path (each head's output enclosed by interval division): O(n^k · h·k·n).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..exact import EXHAUSTIVE_LIMIT, all_sequences
from ..flops import FlopCounter
from ..torch_threads import single_threaded
from .enclose import Interval, IntervalTables, add, down, enclosed_tables, exp, gamma, mul, up

COST = "O(n^(k+1))"
_CHUNK = 1 << 21  # (input, output) pairs per batch of the float64 paths
_U32 = 2.0**-24  # unit roundoff of float32
_DELTA = 2.0**-100  # absolute slack of the float32 pass (covers underflow and flushed subnormals)
_RANGE32 = 2.0**100  # larger terms skip the float32 pass
_TILE_FLOATS = 1 << 18  # float32 sums per tile (1 MB: stays in a core's L2 cache)
_A_FLOATS = 1 << 25  # float32 entries of one of group A's tables (128 MB) per worker


def _terms(tab: IntervalTables, q: int, c: FlopCounter):
    """Float bounds L, H: [k, n_tok, n_out] with L <= w(t, i)·R(t, i, o) <= H for query q, and
    A: [k, n_tok] = max_o max(|L|, |H|). Cost O(k·n²)."""
    k = tab.k
    sq_hi = tab.hi.eqke[0, q].max() + tab.hi.eqkp[0, q].max()
    shift = up(np.array(sq_hi), c)
    c.add(tab.n + k + 1, "shift")
    s = add(
        Interval(tab.lo.eqke[0, q][None, :], tab.hi.eqke[0, q][None, :]),
        Interval(tab.lo.eqkp[0, q][:, None], tab.hi.eqkp[0, q][:, None]),
        c,
    )  # [k, n_tok]
    s = Interval(down(s.lo - shift, c), up(s.hi - shift, c))
    c.add(2 * s.lo.size, "scores")
    w = exp(s, c)
    eupu = Interval(tab.lo.eupu[q][None, None, :], tab.hi.eupu[q][None, None, :])
    evou = Interval(tab.lo.evou[0][None], tab.hi.evou[0][None])  # [1, n_tok, n_out]
    pvou = Interval(tab.lo.pvou[0][:, None, :], tab.hi.pvou[0][:, None, :])  # [k, 1, n_out]
    R = add(add(eupu, evou, c), pvou, c)  # [k, n_tok, n_out]
    T = mul(Interval(w.lo[..., None], w.hi[..., None]), R, c)
    A = np.maximum(np.abs(T.lo), np.abs(T.hi)).max(axis=-1)
    c.add(3 * T.lo.size, "abs max")
    return T.lo, T.hi, A


def _recheck(tab: IntervalTables, q: int, toks: np.ndarray, tau_factor: float, c: FlopCounter) -> np.ndarray:
    """Certify inputs (free tokens toks [B, k-1], query q) one by one with their own shift
    max_i score_i, so that no weight underflows; same bounds as the shared pass. [B] bool.
    Cost O(B·k·n)."""
    k = tab.k
    x = np.c_[toks, np.full(len(toks), q)]  # [B, k]
    pos = np.arange(k)[None, :]
    s = add(
        Interval(tab.lo.eqke[0, q][x], tab.hi.eqke[0, q][x]),
        Interval(tab.lo.eqkp[0, q][pos], tab.hi.eqkp[0, q][pos]),
        c,
    )  # [B, k]
    shift = s.hi.max(axis=1, keepdims=True)
    s = Interval(down(s.lo - shift, c), up(s.hi - shift, c))
    c.add(2 * s.lo.size + x.size, "scores")
    w = exp(s, c)
    R = add(
        add(
            Interval(tab.lo.eupu[q][None, None, :], tab.hi.eupu[q][None, None, :]),
            Interval(tab.lo.evou[0][x], tab.hi.evou[0][x]),
            c,
        ),
        Interval(tab.lo.pvou[0][None], tab.hi.pvou[0][None]),
        c,
    )  # [B, k, n]
    T = mul(Interval(w.lo[..., None], w.hi[..., None]), R, c)
    A = np.maximum(np.abs(T.lo), np.abs(T.hi)).max(axis=-1).sum(axis=1)  # [B]
    label = x.max(axis=1)
    rows = np.arange(len(x))
    lm = T.lo.sum(axis=1)[rows, label]
    H = T.hi.sum(axis=1)
    H[rows, label] = -np.inf
    c.add(4 * T.lo.size + 3 * len(x), "margins")
    return lm - H.max(axis=1) > A * tau_factor


def _certify_heads(tab: IntervalTables, q: int, toks: np.ndarray, c: FlopCounter) -> np.ndarray:
    """Any number of heads: certify inputs (free tokens toks [B, k-1], query q) one by one.

    Per head, with its own per-input shift, N(o) = sum_i w_i R_i(o) and Z = sum_i w_i are enclosed
    (float sums widened by 2·gamma_k times the sum of magnitudes), the head's output N/Z is bounded
    by interval division, and the margin's lower bound EUPU[q, m] - EUPU[q, o] + sum_h (N_h(m)/Z_h
    - N_h(o)/Z_h) is accumulated rounding down. [B] bool. Cost O(B·h·k·n)."""
    k = tab.k
    g2 = 2.0 * gamma(k)
    x = np.c_[toks, np.full(len(toks), q)]  # [B, k]
    rows = np.arange(len(x))
    label = x.max(axis=1)
    pos = np.arange(k)[None, :]
    marg = down(tab.lo.eupu[q][label][:, None] - tab.hi.eupu[q][None, :], c)  # [B, n]
    c.add(marg.size, "margins")
    for h in range(tab.n_heads):
        s = add(
            Interval(tab.lo.eqke[h, q][x], tab.hi.eqke[h, q][x]),
            Interval(tab.lo.eqkp[h, q][pos], tab.hi.eqkp[h, q][pos]),
            c,
        )  # [B, k]
        shift = s.hi.max(axis=1, keepdims=True)
        w = exp(Interval(down(s.lo - shift, c), up(s.hi - shift, c)), c)
        R = add(
            Interval(tab.lo.evou[h][x], tab.hi.evou[h][x]), Interval(tab.lo.pvou[h][None], tab.hi.pvou[h][None]), c
        )  # [B, k, n]
        T = mul(Interval(w.lo[..., None], w.hi[..., None]), R, c)  # [B, k, n]
        err = up(np.maximum(np.abs(T.lo), np.abs(T.hi)).sum(axis=1) * g2, c)  # [B, n]
        n_lo, n_hi = down(T.lo.sum(axis=1) - err, c), up(T.hi.sum(axis=1) + err, c)
        z_lo = down(w.lo.sum(axis=1) * (1.0 - g2), c)[:, None]  # > 0: the top weight is ~1
        z_hi = up(w.hi.sum(axis=1) * (1.0 + g2), c)[:, None]
        q_lo = down(np.where(n_lo >= 0, n_lo / z_hi, n_lo / z_lo), c)  # N/Z enclosed, [B, n]
        q_hi = up(np.where(n_hi >= 0, n_hi / z_lo, n_hi / z_hi), c)
        marg = down(down(marg + q_lo[rows, label][:, None], c) - q_hi, c)
        c.add(10 * T.lo.size + 12 * marg.size, "heads")
    marg[rows, label] = np.inf
    c.add(marg.size, "compare")
    return marg.min(axis=1) > 0


def _blocks(n: int, f: int, dist: Distribution):
    """Batches of free-token tuples in lexicographic order: (lead tokens, toks [B, f], max of
    toks [B] (or -1), which tuples can occur in one input [B] or None for all)."""
    if f == 0:  # k = 1: the input is the query alone
        toks = np.zeros((1, 0), dtype=np.int64)
        yield np.zeros(0, dtype=np.int64), toks, np.full(1, -1), dist.support_rows(toks, query_last=False)
        return
    inner = all_sequences(n, f - 1)  # [n^(f-1), f-1]
    lead_block = max(1, _CHUNK // (inner.shape[0] * n))
    for a in range(0, n, lead_block):
        lead = np.arange(a, min(a + lead_block, n))
        toks = np.c_[np.repeat(lead, inner.shape[0]), np.tile(inner, (len(lead), 1))]  # [B, f]
        yield lead, toks, toks.max(axis=1), dist.support_rows(toks, query_last=False)


class _Layout:
    """What the float32 pass needs that does not depend on the query: group A's positions
    (lead..k-3) and its rows in the distribution's support, sorted by their max, with the runs
    of equal max; the lead tuples (positions 0..lead-1, enumerated with group B)."""

    def __init__(self, n: int, k: int, dist: Distribution):
        a = k - 2
        while a > 0 and n**a * n > _A_FLOATS:
            a -= 1
        self.n, self.k, self.dist, self.lead, self.a = n, k, dist, k - 2 - a, a
        tok = all_sequences(n, a)  # [n^a, a], lexicographic
        keep = dist.support_rows(tok, query_last=False)
        rows = np.arange(len(tok)) if keep is None else np.flatnonzero(keep)
        top = tok[rows].max(axis=1) if a else np.full(len(rows), -1)
        order = np.argsort(top, kind="stable")
        self.perm = torch.as_tensor(rows[order])  # sorted row -> row of the lexicographic table
        self.tok = tok[rows[order]]  # [nA, a] group A's tuples, sorted by max
        top = top[order]
        values = np.unique(top)
        bounds = np.searchsorted(top, np.r_[values, n], side="left")
        self.runs = [(int(v), int(bounds[i]), int(bounds[i + 1])) for i, v in enumerate(values)]
        keys = dist.part_keys(self.tok, n, query_last=False)
        self.keys = None if keys is None else torch.as_tensor(keys)
        self.lead_tuples = all_sequences(n, self.lead)  # [n^lead, lead]


def _outer32(parts: list[torch.Tensor], width: tuple[int, ...], c: FlopCounter) -> torch.Tensor:
    """parts[j]: [n, *width] -> [n^len(parts), *width], entry (x_0, x_1, ...) = sum_j parts[j][x_j]
    in float32 (x_0 most significant); no parts: zeros [1, *width]. One addition per entry of
    each level."""
    if not parts:
        return torch.zeros((1, *width), dtype=torch.float32)
    acc = parts[0]
    for p in parts[1:]:
        acc = (acc[:, None] + p[None]).reshape(-1, *width)
        c.add(acc.numel(), "group tables")
    return acc


def _float32_pass(lay: _Layout, q: int, L: np.ndarray, H: np.ndarray, A: np.ndarray, c: FlopCounter):
    """The float32 pass for query q (module docstring): number of inputs certified, and the free
    tokens [B, k-1] of the inputs of the distribution it leaves open. L, H: [k, n_tok, n_out],
    A: [k, n_tok] float64 from ``_terms``. Cost: n^(k-1)·n additions and comparisons, plus
    O(n^(k-1)) to build group A's tables."""
    n, k, lead = lay.n, lay.k, lay.lead
    tau = 8.0 * k * _U32
    At = up(A * tau, c)  # >= tau·A_i exactly
    At[k - 1, q] = up(At[k - 1, q] + _DELTA, c)  # delta enters every input once, with its query
    L32, H32, At32 = (torch.from_numpy(x).to(torch.float32) for x in (L, H, At))
    # group A in lexicographic order, then sorted by max: H sums [nA, n], L sums minus alpha
    pa = range(lead, k - 2)
    HA = _outer32([H32[p] for p in pa], (n,), c)
    LA = _outer32([L32[p] for p in pa], (n,), c) - _outer32([At32[p] for p in pa], (), c)[:, None]
    c.add(LA.numel(), "group tables")
    HA, LA = HA.index_select(0, lay.perm), LA.index_select(0, lay.perm)
    certified = 0
    opened: list[np.ndarray] = []
    every = np.arange(n)
    for g in lay.lead_tuples:  # [lead] tokens at positions 0..lead-1
        gi = torch.as_tensor(g)
        pos = torch.arange(lead)
        hb = H32[k - 1, q] + H32[pos, gi].sum(0) if lead else H32[k - 1, q]
        lb = L32[k - 1, q] + L32[pos, gi].sum(0) if lead else L32[k - 1, q]
        ab = At32[k - 1, q] + At32[pos, gi].sum(0) if lead else At32[k - 1, q]
        btok = np.c_[np.tile(g, (n, 1)), every, np.full(n, q)]  # [n, lead + 2]: group B's tuples
        keep = lay.dist.support_rows(btok, query_last=True)
        rows_b = every if keep is None else np.flatnonzero(keep)
        if len(rows_b) == 0:
            continue
        rb = torch.as_tensor(rows_b)
        HB = (H32[k - 2] + hb)[rb]  # [nb, n]
        LB = (L32[k - 2] + lb).sub_((At32[k - 2] + ab)[:, None])[rb]
        top_b = torch.as_tensor(btok[rows_b].max(axis=1))  # [nb]
        keys = lay.dist.part_keys(btok[rows_b], n, query_last=True)
        keys_b = None if keys is None or lay.keys is None else torch.as_tensor(keys)
        nb = len(rows_b)
        c.add(6 * n * n + 4 * n * (lead + 1), "group tables")
        ta = max(1, _TILE_FLOATS // (nb * n))
        buf = torch.empty(ta, nb, n)
        hmax = torch.empty(ta, nb)
        ar = torch.arange(nb)
        for v, lo, hi in lay.runs:  # group A's rows with max v
            label = torch.clamp(top_b, min=v)  # [nb] the max of each input
            HBv = HB.clone()
            HBv[ar, label] = -torch.inf  # the label is no rival
            LBv = LB[ar, label]
            for r0 in range(lo, hi, ta):
                r1 = min(hi, r0 + ta)
                r = r1 - r0
                torch.add(HA[r0:r1, None, :], HBv[None], out=buf[:r])
                torch.amax(buf[:r], -1, out=hmax[:r])
                ok = LA[r0:r1].index_select(1, label).add_(LBv) > hmax[:r]
                if keys_b is None or lay.keys is None:
                    valid, total = None, r * nb
                else:
                    valid = lay.dist.parts_compatible(lay.keys[r0:r1], keys_b).view(r, nb)
                    ok &= valid
                    total = int(valid.sum())
                got = int(ok.sum())
                certified += got
                if got < total:
                    open_ = ~ok if valid is None else valid & ~ok
                    ia, ib = (x.numpy() for x in open_.nonzero(as_tuple=True))
                    toks = np.c_[np.tile(g, (len(ia), 1)), lay.tok[r0 + ia], rows_b[ib]]
                    opened.append(toks.astype(np.int64))
            c.add((hi - lo) * nb * (2 * n + 3) + 3 * nb * n, "float32 pass")
    return certified, opened


def _certify_query(tab: IntervalTables, lay: _Layout | None, q: int, dist: Distribution) -> tuple[int, FlopCounter]:
    """Certified inputs with query q (one head): the float32 pass, then a float64 recheck of the
    inputs it leaves open (all of them when ``lay`` is None or the terms are out of float32
    range). Returns the count and the operations performed."""
    c = FlopCounter()
    n, k = tab.n, tab.k
    tau64 = 4.0 * gamma(2 * k)
    L, H, A = _terms(tab, q, c)
    if lay is not None and float(A.max()) < _RANGE32:
        certified, opened = _float32_pass(lay, q, L, H, A, c)
    else:
        free = all_sequences(n, k - 1)
        occurs = dist.support_with_query(dist.support_rows(free, query_last=False), free, q)
        certified, opened = 0, [free if occurs is None else free[occurs]]
    step = max(1, _CHUNK // (k * n))
    for toks in opened:
        for s in range(0, len(toks), step):
            certified += int(_recheck(tab, q, toks[s : s + step], tau64, c).sum())
    return certified, c


def brute_certified(model_or_tab, dist: str | Distribution = "uniform", counter: FlopCounter | None = None) -> int:
    """Number of inputs of ``dist`` certified correct one by one (exact integer); equals the
    exact number correct unless some margin is within rounding (~1e-12 relative).

    Single head: per query the float32 pass, then a float64 recheck of the inputs it leaves
    open; queries are shared among ``torch.get_num_threads()`` worker threads.
    Cost: O(n^(k+1)) plus O(k·n) per input left open; refuses more than
    ``maxk.exact.EXHAUSTIVE_LIMIT`` inputs."""
    c = counter if counter is not None else FlopCounter()
    tab = model_or_tab if isinstance(model_or_tab, IntervalTables) else enclosed_tables(model_or_tab, c)
    n, k = tab.n, tab.k
    dist = resolve(dist, n, k)
    if n**k > EXHAUSTIVE_LIMIT:
        raise MaxkError(f"brute force needs {n**k:.3g} inputs (limit {EXHAUSTIVE_LIMIT:.0e}); use --strategy cubic")
    if tab.n_heads > 1:
        return _multi_head_certified(tab, dist, c)
    lay = _Layout(n, k, dist) if k >= 2 else None
    with single_threaded() as workers, ThreadPoolExecutor(max(1, min(workers, n))) as pool:
        try:
            results = list(pool.map(lambda q: _certify_query(tab, lay, q, dist), range(n)))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    certified = 0
    for got, cq in results:  # in query order: deterministic
        certified += got
        c.merge(cq)
    if certified > dist.n_sequences(n, k):  # impossible by construction; guard against misuse
        raise AssertionError("brute force certified more inputs than exist")
    return certified


def _multi_head_certified(tab: IntervalTables, dist: Distribution, c: FlopCounter) -> int:
    """Any number of heads: every input of ``dist`` through ``_certify_heads``."""
    n, k = tab.n, tab.k
    f = k - 1
    step = max(1, _CHUNK // (4 * k * n))
    certified = 0
    for q in range(n):
        for _lead, toks, _free_max, support in _blocks(n, f, dist):
            occurs = dist.support_with_query(support, toks, q)
            idx = np.arange(len(toks)) if occurs is None else np.nonzero(occurs)[0]
            for s in range(0, len(idx), step):
                certified += int(_certify_heads(tab, q, toks[idx[s : s + step]], c).sum())
    return certified


def prove_brute(model, dist: Distribution, *, counter: FlopCounter) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
    return brute_certified(model, dist, counter)
