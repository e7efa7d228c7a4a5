"""Brute force: every input of the distribution certified by its own margin.

For query q, with the notation of ``maxk.proofs.common`` (w_i = exp(score_i - shift_q) enclosed,
R_i(o) = EUPU[q, o] + EVOU[x_i, o] + PVOU[i, o] enclosed), the logits times the positive
softmax normaliser are sum_i w_i R_i(o). For each (token, position) we compute float bounds
L_i(o) <= w_i R_i(o) <= H_i(o) (outward rounded), so for an input x with max m

    Z·(logit[m] - logit[o]) >= S(x, o) = sum_i L_i(m) - sum_i H_i(o).

The sums over positions are done in float64 by broadcasting (shared prefixes, about one
addition per input and output), so S is computed with an error of at most
gamma_{2k} · sum_i (|L_i| + |H_i|) (any summation order). An input is certified iff the computed
min_{o != m} S(x, o) exceeds 4·gamma_{2k}·sum_i A_i(x_i) with A_i = max_o max(|L_i|, |H_i|):
a margin within rounding counts against the bound, every other input counts exactly as the
real-number model decides it. Inputs the shared pass leaves open (wrong ones, or ones whose
weights underflowed under the per-query shift) are redone one by one with their own shift.

Cost: O(n^k · n) additions and comparisons (n^k inputs, n outputs each), plus O(n²k) to build
the per-token terms. Models with several heads take a per-input path (each head's output
enclosed by interval division): O(n^k · h·k·n).
"""

from __future__ import annotations

import numpy as np

from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..exact import EXHAUSTIVE_LIMIT, all_sequences
from ..flops import FlopCounter
from .enclose import Interval, IntervalTables, add, down, enclosed_tables, exp, gamma, mul, up

COST = "O(n^(k+1))"
_CHUNK = 1 << 21  # (input, output) pairs per batch


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


def _outer_sum(parts: list[np.ndarray], c: FlopCounter) -> np.ndarray:
    """parts[j]: [n_j, ...] -> [prod n_j, ...], entry (x_0, x_1, ...) = sum_j parts[j][x_j],
    added left to right (x_0 most significant). Counts one addition per entry of each level."""
    acc = parts[0]
    for p in parts[1:]:
        acc = np.add(acc[:, None], p[None]).reshape((-1,) + p.shape[1:])
        c.add(acc.size, "outer sums")
    return acc


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


def brute_certified(model_or_tab, dist: str | Distribution = "uniform", counter: FlopCounter | None = None) -> int:
    """Number of inputs of ``dist`` certified correct one by one (exact integer); equals the
    exact number correct unless some margin is within rounding (~1e-12 relative).

    One shared pass per query (shift = the query's largest score) and a per-input recheck of the
    inputs it leaves open (their own shift, so no weight underflows).
    Cost: O(n^(k+1)) plus O(k·n) per input left open; refuses more than
    ``maxk.exact.EXHAUSTIVE_LIMIT`` inputs."""
    c = counter if counter is not None else FlopCounter()
    tab = model_or_tab if isinstance(model_or_tab, IntervalTables) else enclosed_tables(model_or_tab, c)
    n, k = tab.n, tab.k
    dist = resolve(dist, n, k)
    if n**k > EXHAUSTIVE_LIMIT:
        raise MaxkError(f"brute force needs {n**k:.3g} inputs (limit {EXHAUSTIVE_LIMIT:.0e}); use --strategy cubic")
    f = k - 1
    tau_factor = 4.0 * gamma(2 * k)
    blocks = list(_blocks(n, f, dist))
    certified = 0
    if tab.n_heads > 1:
        step = max(1, _CHUNK // (4 * k * n))
        for q in range(n):
            for _lead, toks, _free_max, support in blocks:
                occurs = dist.support_with_query(support, toks, q)
                idx = np.arange(len(toks)) if occurs is None else np.nonzero(occurs)[0]
                for s in range(0, len(idx), step):
                    certified += int(_certify_heads(tab, q, toks[idx[s : s + step]], c).sum())
        return certified
    for q in range(n):
        L, H, A = _terms(tab, q, c)  # [k, n_tok, n_out], [k, n_tok, n_out], [k, n_tok]
        for lead, toks, free_max, support in blocks:
            B = toks.shape[0]
            label = np.maximum(free_max, q)  # [B]
            rows = np.arange(B)
            # the max's lower sum, gathered position by position: O(B·k)
            lm = L[f, q][label]
            for i in range(f):
                lm = lm + L[i][toks[:, i], label]
            if f == 0:
                Hs, As = H[0, q][None].copy(), A[0, q][None]
            else:
                Hs = _outer_sum([H[0, lead] + H[f, q]] + [H[i] for i in range(1, f)], c)  # [B, n]
                As = _outer_sum([A[0, lead] + A[f, q]] + [A[i] for i in range(1, f)], c)  # [B]
                c.add(len(lead) * (n + 1), "outer sums")
            Hs[rows, label] = -np.inf
            good = lm - Hs.max(axis=1) > As * tau_factor
            c.add(B * n + B * (f + 3), "margins")
            occurs = dist.support_with_query(support, toks, q)
            if occurs is not None:
                good &= occurs
                c.add(B * f, "compare")
                open_ = ~good & occurs
            else:
                open_ = ~good
            idx = np.nonzero(open_)[0]
            step = max(1, _CHUNK // (k * n))
            for s in range(0, len(idx), step):
                part = idx[s : s + step]
                good[part] = _recheck(tab, q, toks[part], tau_factor, c)
            certified += int(good.sum())
    if certified > dist.n_sequences(n, k):  # impossible by construction; guard against misuse
        raise AssertionError("brute force certified more inputs than exist")
    return certified


def prove_brute(model, dist: Distribution, *, counter: FlopCounter) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
    return brute_certified(model, dist, counter)
