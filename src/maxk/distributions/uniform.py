"""``uniform``: k i.i.d. uniform tokens in [0, n); N = n^k (the paper's distribution)."""

from __future__ import annotations

from collections.abc import Iterator
from math import comb

import numpy as np
from flint import fmpz_poly

from ..flops import FlopCounter
from ._laws import bucket_histograms, int_dtype, pack_cases
from .base import Distribution


class Uniform(Distribution):
    """Every token i.i.d. uniform on [0, n)."""

    name = "uniform"
    allows_repeats = True
    exchangeable = True

    def n_sequences(self, n: int, k: int) -> int:
        return n**k

    def count_with_max(self, n: int, k: int, m: int) -> int:
        return (m + 1) ** k - m**k

    def max_query_counts(self, k: int, m: int) -> tuple[int, int]:
        return (m + 1) ** (k - 1), (m + 1) ** (k - 1) - m ** (k - 1)

    def count_below(self, k: int, m: int, q: int, t: int) -> int:
        f, a = k - 1, t + 1  # free positions; allowed non-max tokens 0..t
        if q < m and f == 0:
            return 0
        return (a + 1) ** f if q == m else (a + 1) ** f - a**f

    def support_rows(self, tokens: np.ndarray, *, query_last: bool = False) -> np.ndarray | None:
        return None

    def support_with_query(self, support: np.ndarray | None, free: np.ndarray, q: int) -> np.ndarray | None:
        return None

    def part_keys(self, tokens: np.ndarray, n: int, *, query_last: bool = False) -> np.ndarray | None:
        return None

    # ------------------------------------------------------------ cubic proof counts

    def max_only_occurs(self, k: int, m: int, q: int) -> bool:
        return not (q < m and k == 1)

    def nonmax_groups(self, k: int, m: int) -> Iterator[tuple[int, int, int]]:
        f = k - 1
        for q in range(m + 1):
            if q < m and f == 0:
                continue
            for cc in range(1, (f if q == m else f - 1) + 1):
                yield q, cc, comb(f, cc)

    def group_ways(self, k: int, m: int) -> np.ndarray:
        f = k - 1
        ways = np.zeros((m + 1, f), dtype=np.int64 if f <= 60 else object)
        if f >= 1:
            ways[:] = [comb(f, cc) for cc in range(1, f + 1)]
            ways[:m, f - 1] = 0  # q < m: at most f - 1 free positions hold a non-max token
        return ways

    def count_tokens(self, allowed: np.ndarray, q: int, cc: int) -> int:
        return int(allowed.sum()) ** cc

    def count_token_groups(self, allowed: np.ndarray, qs: np.ndarray, m: int, k: int) -> np.ndarray:
        """|allowed|^cc per group, vectorised: O(b·k·m)."""
        f = k - 1
        cc = np.arange(1, f + 1)[None, :]
        occurs = cc <= np.where(np.asarray(qs) == m, f, f - 1)[:, None]  # [b, f]
        out = np.where(occurs, allowed.sum(axis=-1), 0).astype(int_dtype(m, f))
        out **= np.broadcast_to(cc, out.shape).astype(out.dtype)
        return out

    def count_bucketed(
        self, bucket: np.ndarray, K: int, m: int, k: int, counter: FlopCounter, memo: dict | None = None
    ) -> np.ndarray:
        """Truncated polynomial powers of the bucket histogram (``bucketed_powers``)."""
        return bucketed_powers(bucket, K, counter, memo)

    # ------------------------------------------------------------ samplers

    def sample(self, n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, n, size=(size, k), dtype=np.int64)

    def sample_given(self, n: int, k: int, m: np.ndarray, q: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        m = np.asarray(m, dtype=np.int64)
        b = m.shape[0]
        if q is None:
            return with_max(m, k, n, rng)
        q = np.asarray(q, dtype=np.int64)
        out = np.empty((b, k), dtype=np.int64)
        out[:, -1] = q
        top = q == m
        if k == 1:
            return out
        # query is the max: others i.i.d. in [0, m]; else: others have max exactly m
        out[top, :-1] = np.floor(rng.random((top.sum(), k - 1)) * (m[top, None] + 1)).astype(np.int64)
        out[~top, :-1] = with_max(m[~top], k - 1, n, rng)
        return out

    # ------------------------------------------------------------ order statistics

    def top_law(self, r: np.ndarray, A: np.ndarray, n: int) -> np.ndarray:
        """P[max = t] = ((t+1)^r - t^r)/A^r for r i.i.d. uniform values on [0, A)."""
        t = np.arange(n, dtype=np.float64)[None, :]
        r_ = r.astype(np.float64)[:, None]
        A_ = A.astype(np.float64)[:, None]
        ok = t < A_
        hi = np.power(np.minimum(t + 1, A_) / np.maximum(A_, 1), r_)
        lo = np.power(np.minimum(t, A_) / np.maximum(A_, 1), r_)
        return np.where(ok, hi - lo, 0.0)

    def copies_law(self, r: np.ndarray, t: np.ndarray, k: int) -> np.ndarray | None:
        """P[c] ∝ C(r, c)·t^(r-c) for c = 1..r copies of the largest value t."""
        from scipy.special import gammaln

        c = np.arange(1, k + 1, dtype=np.float64)[None, :]
        r_ = r.astype(np.float64)[:, None]
        t_ = t.astype(np.float64)[:, None]
        logc = gammaln(r_ + 1) - gammaln(c + 1) - gammaln(np.maximum(r_ - c + 1, 1))
        logfrac = np.log(np.maximum(t_, 1.0) / (t_ + 1.0))  # t = 0 only allows c = r
        logf = np.where(r_ - c > 0, np.where(t_ > 0, (r_ - c) * logfrac, -np.inf), 0.0)
        return np.where(c <= r_, np.exp(logc + logf - c * np.log(t_ + 1.0)), 0.0)

    def draw_rest(
        self, A: np.ndarray, count: int, q: np.ndarray, has_q: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return np.floor(rng.random((len(A), count)) * A[:, None]).astype(np.int64)

    def cases(self, n: int, k: int) -> dict[str, np.ndarray]:
        """Given (m, q), each of the k-1 other tokens is i.i.d. uniform on [0, m] (q = m) or the
        others have max m (q < m): c copies of m with weight C(k-1, c)·m^r (r = k-1-c, c >= 1 if
        q < m), and the r others i.i.d. below m, whose largest t2 has c2 copies with probability
        C(r, c2)·t2^(r-c2)/m^r, leaving r2 = r - c2 i.i.d. below t2. Per query, P = count / n^k."""
        nk = float(n) ** k
        out = []
        m = np.arange(n)
        for c in range(k):
            r = k - 1 - c
            base = comb(k - 1, c) * m.astype(np.float64) ** r / nk  # [m], per query value
            if r == 0:
                sub = [(m, -1 + 0 * m, 0 * m, 0 * m, base)]
            else:
                sub = []
                M, T = np.meshgrid(m, m, indexing="ij")
                for c2 in range(1, r + 1):
                    pr = base[:, None] * comb(r, c2) * T.astype(np.float64) ** (r - c2) / np.maximum(M, 1.0) ** r
                    ok = (T < M) & (pr > 0)
                    sub.append((M[ok], T[ok], c2 + 0 * M[ok], r - c2 + 0 * M[ok], pr[ok]))
            for Ms, Ts, C2, R2, pr in sub:
                # query = max (any c), then every query q < m (c >= 1)
                out.append((Ms, Ms, c + 0 * Ms, Ts, C2, R2, pr))
                if c >= 1:
                    reps = Ms  # m choices of q below m
                    qs = np.concatenate([np.arange(v) for v in Ms]) if len(Ms) else Ms
                    out.append(
                        (
                            np.repeat(Ms, reps),
                            qs,
                            c + 0 * qs,
                            np.repeat(Ts, reps),
                            np.repeat(C2, reps),
                            np.repeat(R2, reps),
                            np.repeat(pr, reps),
                        )
                    )
        return pack_cases(out)

    def low_token_mask(self, n: int) -> np.ndarray:
        t_idx = np.arange(n)
        return np.broadcast_to(t_idx[None, None, :] < t_idx[None, :, None], (n, n, n)).copy()

    # ------------------------------------------------------------ strata of the max's positions

    def fixed_max_strata(self, n: int, k: int, max_copies: int | None) -> tuple[dict[str, np.ndarray], float]:
        """(m, q, set P of free positions holding m); the other tokens i.i.d. uniform on [0, m).
        For k - 1 > 8 only sets of at most ``max_copies`` (default 2) positions are enumerated and
        the weights renormalised within each m to the exact P[max = m]."""
        last = k - 1
        cmax = last if (max_copies is None and last <= 8) else (2 if max_copies is None else int(max_copies))
        pats = np.array([P for P in range(1 << last) if bin(P).count("1") <= cmax], dtype=np.int64)
        bits = ((pats[:, None] >> np.arange(last)[None, :]) & 1).astype(np.float64)  # [n_pat, last]
        fix_p = np.concatenate([bits, np.zeros((len(pats), 1))], axis=1)
        rest_p = np.concatenate([1.0 - bits, np.zeros((len(pats), 1))], axis=1)
        nr = rest_p.sum(axis=1)
        g_m, g_q, g_p = np.meshgrid(np.arange(n), np.arange(n), np.arange(len(pats)), indexing="ij")
        g_m, g_q, g_p = g_m.ravel(), g_q.ravel(), g_p.ravel()
        keep = (g_q <= g_m) & ~((g_q < g_m) & (pats[g_p] == 0))
        g_m, g_q, g_p = g_m[keep], g_q[keep], g_p[keep]
        weight = (g_m / n) ** nr[g_p] / float(n) ** (k - nr[g_p])
        keep = weight > 0
        g_m, g_q, g_p, weight = g_m[keep], g_q[keep], g_p[keep], weight[keep]
        pm_true = self.max_weights(n, k)
        cov_m = np.bincount(g_m, weights=weight, minlength=n)
        dropped = float(max(pm_true.sum() - cov_m.sum(), 0.0))
        if cmax < last:  # renormalise within each m to the exact P[max = m]
            weight = weight * (pm_true / np.where(cov_m > 0, cov_m, 1.0))[g_m]
        st = dict(
            m=g_m,
            q=g_q,
            fixm=fix_p[g_p],
            rest=rest_p[g_p],
            size=g_m.astype(np.float64),
            removed=np.full((len(g_m), 1), -1),
            weight=weight,
            gamma=np.zeros(len(g_m)),
        )
        return st, dropped

    # ------------------------------------------------------------ draws (with replacement)

    def pair_covariance_factor(self, size: np.ndarray) -> np.ndarray:
        return np.zeros(len(size))

    def p_none_drawn(self, size: np.ndarray, heavy: np.ndarray, r: np.ndarray) -> np.ndarray:
        return ((size - heavy) / np.maximum(size, 1.0)) ** r

    def p_heaviest_at(self, size: np.ndarray, j: int | np.ndarray, r: np.ndarray) -> np.ndarray:
        return (1.0 / size) * ((size - j) / size) ** (r - 1)

    def p_heaviest_any(self, size: np.ndarray, j: int | np.ndarray, r: np.ndarray) -> np.ndarray:
        return r * (1.0 / size) * ((size - j) / size) ** (r - 1)


def bucketed_powers(bucket: np.ndarray, K: int, counter: FlopCounter, memo: dict | None = None) -> np.ndarray:
    """[nq, f] counts: for row q and group size cc, the ordered cc-tuples of tokens t, each drawn
    from every t with ``bucket[q, cc-1, t] < K``, whose buckets sum to less than K (bucket
    [nq, f, m] ints in [0, K]): the coefficients below x^K of h(x)^cc, h the row's bucket
    histogram. Exact integers. Rows with no usable token count 0 and rows whose largest usable
    bucket times cc is below K count u^cc (u usable tokens); the others take h^cc by squaring,
    truncated, in FLINT's exact integer polynomials (``_truncated_power_sum``).
    ``memo``: a dict kept across calls (e.g. one proof's) from (cc, histogram) to the count, so
    that a histogram met again is looked up (K FLOPs) instead of powered.
    Cost O(nq·f·m) plus O(K²·log f) per row of the last kind not in ``memo``."""
    nq, f, m_ = bucket.shape
    hist_all = bucket_histograms(bucket, K)[..., :K]  # [nq, f, K]; bucket K: in no counted tuple
    usable = hist_all.sum(axis=-1)  # [nq, f]
    held = hist_all > 0
    top = np.where(usable > 0, K - 1 - np.argmax(held[..., ::-1], axis=-1), 0)  # the largest usable bucket
    cc = np.arange(1, f + 1)[None, :]
    counter.add(3 * bucket.size, "count DP")
    out = np.empty((nq, f), dtype=int_dtype(m_, f))
    out[...] = np.where(top * cc < K, usable, 0)
    out **= np.broadcast_to(cc, (nq, f)).astype(out.dtype)
    qi, ci = np.nonzero((top * cc >= K) & (usable > 0))
    hists = hist_all[qi, ci]  # [R, K]
    memo = {} if memo is None else memo
    for q, c, hist in zip(qi.tolist(), ci.tolist(), hists.tolist(), strict=True):
        key = (c + 1, tuple(hist))
        got = memo.get(key)
        if got is None:
            got = memo[key] = _truncated_power_sum(hist, c + 1, K, counter)
        else:
            counter.add(K, "count lookup")
        out[q, c] = got
    return out


def _truncated_power_sum(hist: list[int], e: int, K: int, counter: FlopCounter) -> int:
    """Sum of the coefficients of x^0..x^(K-1) in h(x)^e, h(x) = sum_a hist[a] x^a, exactly:
    FLINT's truncated power of an integer polynomial (``fmpz_poly.pow_trunc``, binary powering
    with every product cut below x^K), counted as K·(K+1) operations per product of it."""
    bits = e.bit_length()
    counter.add(K * (K + 1) * (bits - 1 + e.bit_count()), "count DP")
    return int(sum(fmpz_poly(hist).pow_trunc(e, K).coeffs()))


def _copies_table(k: int, n: int) -> np.ndarray:
    """cdf[m, c-1] = P[at most c copies of m | max = m] for k i.i.d. uniform tokens: [n, k]."""
    w = np.array([[comb(k, c) * float(m) ** (k - c) for c in range(1, k + 1)] for m in range(n)])
    return np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)


def with_max(m: np.ndarray, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """k i.i.d. uniform tokens conditioned on max = m (per row). m: [b] -> [b, k]."""
    b = m.shape[0]
    cdf = _copies_table(k, n)[m]  # [b, k]
    c = 1 + (rng.random(b)[:, None] > cdf).sum(axis=1)
    c = np.minimum(c, k)
    is_max = rng.random((b, k)).argsort(axis=1).argsort(axis=1) < c[:, None]
    low = np.floor(rng.random((b, k)) * m[:, None]).astype(np.int64)
    return np.where(is_max, m[:, None], low)
