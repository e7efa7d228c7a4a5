"""The cubic proof (DESIGN §5), O(n³k²) in the common case, sound in floating point.

Inputs are grouped by max token m, query token q <= m and the number c of free positions
(0..k-2) holding a non-max token; the other free positions hold m. With the notation of
``maxk.proofs.common`` (unnormalised weights w_i = exp(score_i - shift), value terms u), an
input is correct iff for every o != m

    F(o) = T_q(o) + sum_{i in M} T_m(i, o) + sum_{j in J} T(t_j, j, o) > 0,

where J (|J| = c) are the free positions of the non-max tokens t_j, M the other free positions,
T_q the query's term, T_m(i, o) = w(m, i) u(m, i, o), T(t, j, o) = w(t, j) u(t, j, o).

Convexity: F(o) = (1/c) sum_{j in J} [B_J(o) + c·T(t_j, j, o)] with B_J the query and max terms,
so the input is correct if every bracket is positive. A bracket depends on one non-max token,
one position j and the arrangement J, so we certify a token t for (m, q, c) when

    min_{o != m} [ G(c, j, o) + c·T(t, j, o) ] > 0 for every free position j,
    G(c, j, o) = T_q(o) + (sum of the k-1-c smallest T_m(i, o) over free i != j)

(G is the worst arrangement of the max copies for that j and o). Then every input of the group
whose non-max tokens all lie in the certified set S(m, q, c) is correct, and there are
C(k-1, c)·|S|^c of them (uniform); under ``distinct`` the count is (k-1)·P(|S \\ {q}|, k-2) for
q < m and P(|S|, k-1) for q = m. Groups with c = 0 are checked directly.

Mixtures. The per-token certificate drops a whole mixture when one of its tokens fails with c
copies. A second certificate handles mixtures: with G0(c, o) = T_q(o) + the k-1-c smallest
T_m(i, o) over all free i (the worst arrangement for any J), if G0(c, o) > 0 for all o != m,

    F(o) >= G0(c, o) - sum_j (-T(t_j, j, o))^+ >= G0(c, o) · (1 - sum_j rho(t_j)),
    rho(t) >= max_{j, o != m} (-T(t, j, o))^+ / G0(c, o),

so an input is correct if the rho of its non-max tokens sum to less than 1. rho is rounded up
to a multiple of 1/K (K = MIX_BUCKETS) and the tuples with bucket sum < K are counted exactly by
a truncated polynomial power (uniform) or a subset DP (distinct). Per group (m, q, c) the
certificate covering more inputs is used, so both counts stay exact and sound.

Cost. G costs O(n³k²·log k) (n² pairs (m, q), n outputs, k² (c, j)). Token checks are first
done with the output decoupled, min_o G + c·w·(min_o D + min_o V + min_o W) (and likewise rho
from min_o G0), which costs O(n³k²) for all (m, q, c, t, j); only the (m, q, c, t) these cheap
checks leave open are redone exactly over o, at O(n·k) each. Counting costs O(n²k²·K²).
Every step is a lower bound computed with outward rounding (``maxk.proofs.enclose``) from the
enclosed tables, so a too-close call is simply not certified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, log2
from typing import cast

import numpy as np

from ..distributions import Distribution, get_distribution, resolve
from ..flops import FlopCounter
from .common import diff_lower, exclude_column, require_single_head
from .enclose import Interval, IntervalTables, down, enclosed_tables, exp, mul_lower, sum_lower, up

COST = "O(n^3 k^2)"
_REFINE_CHUNK = 4096  # (m, q, c, t) cases redone exactly at a time
MIX_BUCKETS = 32  # K: resolution of the mixture certificate's rho (sum of buckets < K)


def _tables(model_or_tab, counter: FlopCounter) -> IntervalTables:
    return model_or_tab if isinstance(model_or_tab, IntervalTables) else enclosed_tables(model_or_tab, counter)


def _worst_arrangements(Qt: np.ndarray, Mt: np.ndarray, k: int, c: FlopCounter) -> np.ndarray:
    """G[q, c-1, j, o] for c = 1..k-1 and free position j: Qt[q, o] plus the sum of the k-1-c
    smallest Mt[q, i, o] over free i != j, rounded down. Qt: [nq, n], Mt: [nq, k-1, n]."""
    nq, f, n = Mt.shape
    G = np.empty((nq, f, f, n))
    sort_ops = nq * n * f * max(1, ceil(log2(max(f, 2))))
    for j in range(f):
        X = Mt.copy()
        X[:, j, :] = np.inf
        X.sort(axis=1)
        c.add(sort_ops, "sort")
        acc = Qt
        G[:, f - 1, j, :] = Qt  # c = k-1: no max copies among the free positions
        for r in range(1, f):  # r = k-1-c max copies, c = f - r
            acc = down(acc + X[:, r - 1, :], c)
            c.add(acc.size, "lower sum")
            G[:, f - r - 1, j, :] = acc
    return G


def cubic_certified(model_or_tab, dist: str | Distribution = "uniform", counter: FlopCounter | None = None) -> int:
    """Number of inputs of ``dist`` that the cubic proof certifies correct (an exact integer).

    ``model_or_tab``: a model (its tables are enclosed first, counted) or ``IntervalTables``.
    Single-head models only. Cost: O(n³k²) plus O(n·k) per case the cheap checks leave open."""
    c = counter if counter is not None else FlopCounter()
    tab = _tables(model_or_tab, c)
    require_single_head(tab, "cubic")
    d = resolve(dist, tab.n, tab.k)
    return sum(certified_sets(tab, m, d, c).count(c) for m in range(tab.n))


@dataclass
class MaxCertificate:
    """What the cubic proof certifies for max token m (k-1 = f free positions, nq = m+1 queries).

    cert0[q]  [nq] bool: the input with query q and every free position m is correct.
    ok[q, cc-1, t]  [nq, f, m] bool: t is in S(m, q, cc); inputs whose cc non-max free tokens all
        lie in S are correct (the per-token certificate).
    bucket[q, cc-1, t]  [nq, f, m] int: ceil(K·rho) (K = no use) with rho(t) an upper bound on
        max_{j, o} (-T(t, j, o))^+ / G0(cc, o); inputs whose cc non-max tokens have bucket sum
        < K are correct (the mixture certificate).
    Per group (q, cc) the certificate that covers more inputs is used (``use_mix``)."""

    m: int
    k: int
    dist: Distribution
    cert0: np.ndarray
    ok: np.ndarray | None = None
    bucket: np.ndarray | None = None
    K: int = MIX_BUCKETS
    use_mix: np.ndarray | None = field(default=None, init=False)
    _group_counts: dict | None = field(default=None, init=False)

    def count(self, c: FlopCounter | None = None) -> int:
        """Number of certified inputs with max m (exact integer); the distribution counts."""
        c = c if c is not None else FlopCounter()
        d, m, k = self.dist, self.m, self.k
        total = sum(int(self.cert0[q]) for q in range(m + 1) if d.max_only_occurs(k, m, q))
        if self.ok is None:
            return total
        assert self.bucket is not None  # certified_sets sets ok and bucket together
        nq, f_ = self.ok.shape[:2]
        self.use_mix = np.zeros((nq, f_), dtype=bool)
        mix = d.count_bucketed(self.bucket, self.K, m, k, c)
        for q, cc, ways in d.nonmax_groups(k, m):
            old = ways * d.count_tokens(self.ok[q, cc - 1], q, cc)
            new = ways * int(mix[q, cc - 1])
            self.use_mix[q, cc - 1] = new > old
            total += max(old, new)
        return total

    def covers(self, tokens) -> bool:
        """Whether this certificate covers the input ``tokens`` (k ints with max m). For tests;
        call ``count`` first (it picks the certificate per group)."""
        x = [int(t) for t in tokens]
        q, m = x[-1], self.m
        nonmax = [t for t in x[:-1] if t != m]
        if not nonmax:
            return bool(self.cert0[q])
        cc = len(nonmax)
        # non-max tokens exist only where ok and bucket are set; use_mix is set by count()
        assert self.use_mix is not None and self.bucket is not None and self.ok is not None
        if self.use_mix[q, cc - 1]:
            return sum(int(self.bucket[q, cc - 1, t]) for t in nonmax) < self.K
        return all(bool(self.ok[q, cc - 1, t]) for t in nonmax)


def certified_sets(tab: IntervalTables, m: int, dist: str | Distribution, c: FlopCounter) -> MaxCertificate:
    """The cubic proof for max token m (see ``MaxCertificate``). Entries for (q, cc) that cannot
    occur under ``dist`` are not refined. Cost O(n²k²) plus the refinements."""
    n, k = tab.n, tab.k
    dist = get_distribution(dist)
    f = k - 1  # free positions 0..k-2; the query sits at k-1
    eqke_lo, eqke_hi = tab.lo.eqke[0], tab.hi.eqke[0]  # [q, t]
    eqkp_lo, eqkp_hi = tab.lo.eqkp[0], tab.hi.eqkp[0]  # [q, i]
    nq = m + 1
    qs = np.arange(nq)
    # a constant shift per q keeps every exp <= ~1 (any float is sound: it cancels in sign F)
    shift = up(eqke_hi[qs, : m + 1].max(axis=1) + eqkp_hi[qs].max(axis=1), c)  # [nq]
    c.add(nq * (m + 1 + k + 1), "shift")

    def weight(t_lo, t_hi, p_lo, p_hi) -> Interval:
        """exp(EQKE[q, t] + EQKP[q, i] - shift[q]) enclosed; args broadcast with q first."""
        a_lo, a_hi = down(t_lo + p_lo, c), up(t_hi + p_hi, c)
        sh = shift.reshape((nq,) + (1,) * (a_lo.ndim - 1))
        s_lo, s_hi = down(a_lo - sh, c), up(a_hi - sh, c)
        c.add(2 * s_lo.size + 2 * s_hi.size, "scores")
        return exp(Interval(s_lo, s_hi), c)

    D, V, W = diff_lower(tab, m, c)  # [n, n], [n, n], [k, n]
    D = D[:nq]
    # query term T_q [nq, n] and max-copy terms T_m [nq, f, n]
    wq = weight(
        eqke_lo[qs, qs][:, None], eqke_hi[qs, qs][:, None], eqkp_lo[qs, f][:, None], eqkp_hi[qs, f][:, None]
    )  # [nq, 1]
    Qt = mul_lower(wq.lo, wq.hi, sum_lower([D, V[:nq], W[f][None, :]], c), c)
    wm = weight(eqke_lo[qs, m][:, None], eqke_hi[qs, m][:, None], eqkp_lo[qs, :f], eqkp_hi[qs, :f])  # [nq, f]
    Um = sum_lower([D[:, None, :], V[m][None, None, :], W[:f][None, :, :]], c)  # [nq, f, n]
    Mt = mul_lower(wm.lo[..., None], wm.hi[..., None], Um, c)
    # c = 0: all free positions hold m
    tot0 = sum_lower([Qt] + [Mt[:, i] for i in range(f)], c)
    cert0 = exclude_column(tot0, m).min(axis=-1) > 0  # [nq]
    c.add(tot0.size, "compare")
    if f == 0 or m == 0:
        return MaxCertificate(m, k, dist, cert0)
    G = _worst_arrangements(Qt, Mt, k, c)  # [nq, c-1, j, n]
    Gx = exclude_column(G, m)
    Gmin = Gx.min(axis=-1)  # [nq, c, j]
    c.add(G.size, "compare")
    # non-max tokens t < m at free positions j
    wt = weight(
        eqke_lo[qs, :m][:, :, None], eqke_hi[qs, :m][:, :, None], eqkp_lo[qs, None, :f], eqkp_hi[qs, None, :f]
    )  # [nq, m, f]
    Dmin = exclude_column(D, m).min(axis=-1)  # [nq]
    Vmin = exclude_column(V[:m], m).min(axis=-1)  # [m]
    Wmin = exclude_column(W[:f], m).min(axis=-1)  # [f]
    c.add(D.size + m * n + f * n, "compare")
    minU = sum_lower([Dmin[:, None, None], Vmin[None, :, None], Wmin[None, None, :]], c)  # [nq, m, f]
    tl = mul_lower(wt.lo, wt.hi, minU, c)  # [nq, m, f]: <= min_o T(t, j, o)
    cs = np.arange(1, k, dtype=np.float64)[None, :, None, None]  # copies c = 1..k-1
    ctl = down(cs * tl[:, None, :, :], c)  # [nq, c, m, f]
    cheap = down(Gmin[:, :, None, :] + ctl, c) > 0
    c.add(2 * ctl.size, "cheap check")
    ok = cast(np.ndarray, cheap.all(axis=-1))  # [nq, c, t] (numpy types a reduction as possibly scalar)
    valid = np.zeros((nq, f), dtype=bool)  # the (q, c) groups that occur under dist
    for q_, cc_, _ways in dist.nonmax_groups(k, m):
        valid[q_, cc_ - 1] = True

    def token_terms(a: np.ndarray, t_: np.ndarray) -> np.ndarray:
        """Lower bounds of T(t, j, o) for (q, t) = (a, t_): [F, f, n]. Cost O(F·k·n)."""
        U = sum_lower([D[a][:, None, :], V[t_][:, None, :], W[:f][None, :, :]], c)
        return mul_lower(wt.lo[a, t_][..., None], wt.hi[a, t_][..., None], U, c)

    qi, ci, ti = np.nonzero(~ok & valid[:, :, None])
    for s in range(0, len(qi), _REFINE_CHUNK):
        a, b_, t_ = qi[s : s + _REFINE_CHUNK], ci[s : s + _REFINE_CHUNK], ti[s : s + _REFINE_CHUNK]
        cT = down((b_ + 1.0)[:, None, None] * token_terms(a, t_), c)
        tot = down(Gx[a, b_] + cT, c)  # o = m stays +inf
        c.add(2 * tot.size, "exact check")
        ok[a, b_, t_] = (tot.min(axis=-1) > 0).all(axis=-1)

    # mixture certificate: with G0(cc, o) = T_q(o) + the f-cc smallest T_m(i, o) over all free i
    # (the worst arrangement), F(o) >= G0 - sum_j (-T(t_j, j, o))^+ >= G0 (1 - sum_j rho(t_j)).
    Ms = np.sort(Mt, axis=1)
    c.add(Mt.size * max(1, ceil(log2(max(f, 2)))), "sort")
    G0 = np.empty((nq, f, n))
    G0[:, f - 1] = acc = Qt
    for r in range(1, f):
        acc = down(acc + Ms[:, r - 1], c)
        c.add(acc.size, "lower sum")
        G0[:, f - 1 - r] = acc
    G0x = exclude_column(G0, m)
    G0min = G0x.min(axis=-1)  # [nq, f]
    usable = G0min > 0
    neg = np.maximum(-tl, 0.0).max(axis=-1)  # [nq, m] >= (-T(t, j, o))^+ for every j, o
    rho = up(neg[:, None, :] / np.where(usable, G0min, 1.0)[:, :, None], c)  # [nq, f, m]
    c.add(neg.size * (f + 1) + rho.size, "mixture")
    bucket = np.where(usable[:, :, None], _bucket(rho, c), MIX_BUCKETS)
    qi, ci, ti = np.nonzero((bucket >= 2) & usable[:, :, None] & valid[:, :, None])
    for s in range(0, len(qi), _REFINE_CHUNK):
        a, b_, t_ = qi[s : s + _REFINE_CHUNK], ci[s : s + _REFINE_CHUNK], ti[s : s + _REFINE_CHUNK]
        negT = np.maximum(-token_terms(a, t_), 0.0)  # [F, f, n]; o = m divides by +inf
        r = up(negT / G0x[a, b_][:, None, :], c).max(axis=(1, 2))
        c.add(2 * negT.size, "mixture")
        bucket[a, b_, t_] = np.minimum(bucket[a, b_, t_], _bucket(r, c))
    return MaxCertificate(m, k, dist, cert0, ok, bucket)


def _bucket(rho: np.ndarray, c: FlopCounter) -> np.ndarray:
    """ceil(K·rho) as ints, capped at K (= unusable); rho >= 0. Rounded up, so the sum of the
    buckets of a tuple is < K only if the sum of the rhos is < 1."""
    x = np.ceil(up(rho * MIX_BUCKETS, c))
    c.add(2 * x.size, "mixture")
    return np.minimum(x, MIX_BUCKETS).astype(np.int64)


def prove_cubic(model, dist: Distribution, *, counter: FlopCounter) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
    return cubic_certified(model, dist, counter)
