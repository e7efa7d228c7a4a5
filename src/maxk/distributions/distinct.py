"""``distinct``: k distinct tokens in [0, n), every order equally likely; N = n!/(n-k)! (Wu's)."""

from __future__ import annotations

from collections.abc import Iterator
from math import comb, factorial, perm

import numpy as np

from ..errors import MaxkError
from ..flops import FlopCounter
from ._laws import bucket_histograms, comb_any, comb_float, int_dtype, pack_cases, shuffle_rows, token_bitsets
from .base import Distribution


class Distinct(Distribution):
    """k distinct tokens drawn without replacement, in uniformly random order."""

    name = "distinct"
    allows_repeats = False
    exchangeable = True

    def check(self, n: int, k: int) -> Distinct:
        if k > n:
            raise MaxkError(f"distribution 'distinct' needs k <= n, got k={k}, n={n}")
        return self

    def n_sequences(self, n: int, k: int) -> int:
        return perm(n, k)

    def count_with_max(self, n: int, k: int, m: int) -> int:
        return k * perm(m, k - 1)

    def max_query_counts(self, k: int, m: int) -> tuple[int, int]:
        # others: k-1 distinct from [0, m) (query is max) / k-2 from [0, m)\{q} plus m, any order
        top = perm(m, k - 1)
        below = (k - 1) * perm(m - 1, k - 2) if k >= 2 and m >= 1 else 0
        return top, below

    def count_below(self, k: int, m: int, q: int, t: int) -> int:
        f, a = k - 1, t + 1
        if q < m and f == 0:
            return 0
        if q == m:
            return perm(a, f)
        return f * perm(a - (1 if q <= t else 0), f - 1)

    def support_rows(self, tokens: np.ndarray, *, query_last: bool = False) -> np.ndarray | None:
        if tokens.shape[1] < 2:
            return np.ones(tokens.shape[0], dtype=bool)
        srt = np.sort(tokens, axis=1)
        return (np.diff(srt, axis=1) != 0).all(axis=1)

    def support_with_query(self, support: np.ndarray | None, free: np.ndarray, q: int) -> np.ndarray | None:
        ok = (free != q).all(axis=1)
        return ok if support is None else support & ok

    def part_keys(self, tokens: np.ndarray, n: int, *, query_last: bool = False) -> np.ndarray | None:
        """Bit sets of each row's tokens: int64 [b, ceil(n / 63)] (disjoint sets combine)."""
        return token_bitsets(tokens, n)

    # ------------------------------------------------------------ cubic proof counts

    def max_only_occurs(self, k: int, m: int, q: int) -> bool:
        f = k - 1
        return f == 0 if q == m else f == 1

    def nonmax_groups(self, k: int, m: int) -> Iterator[tuple[int, int, int]]:
        f = k - 1
        for q in range(m + 1):
            if q < m and f == 0:
                continue
            cc = f if q == m else f - 1  # every free token other than the single m is non-max
            if cc >= 1:
                yield q, cc, (f if q < m else 1)  # where the single m sits among the free positions

    def count_tokens(self, allowed: np.ndarray, q: int, cc: int) -> int:
        size = int(allowed.sum()) - (int(allowed[q]) if q < len(allowed) else 0)
        return perm(size, cc)

    def count_bucketed(
        self, bucket: np.ndarray, K: int, m: int, k: int, counter: FlopCounter, memo: dict | None = None
    ) -> np.ndarray:
        """Subset DP over the tokens (the query excluded), for the rows whose count is not
        immediate: a row whose largest usable bucket times cc is below K counts P(u, cc) (u
        usable tokens). A row's count depends on its bucket histogram only, so rows whose
        ("sets", cc, histogram) is in ``memo`` are looked up (K FLOPs). Cost O(nq·m) plus O(m·k·K) per
        other row."""
        nq, f, _ = bucket.shape
        dt = int_dtype(m, f)
        cc = np.array([f - 1] * m + [f])  # copies per query row
        b = np.where(cc[:, None] >= 1, bucket[np.arange(nq), np.maximum(cc - 1, 0)], K).copy()  # [nq, m]
        b[np.arange(m), np.arange(m)] = K  # under distinct the query token cannot repeat
        usable = (b < K).sum(axis=1)
        hard = np.where(b < K, b, 0).max(axis=1, initial=0) * cc >= K
        counter.add(3 * b.size, "count DP")
        sets = np.zeros(nq, dtype=object)  # [nq] sets of cc distinct tokens per query
        for q in np.nonzero(~hard & (cc >= 1))[0]:
            sets[q] = comb(int(usable[q]), int(cc[q]))
        rows = np.nonzero(hard)[0]
        hists = bucket_histograms(b[rows], K)
        # "sets": unordered subsets, unlike bucketed_powers' ordered tuples under the same (cc, histogram)
        keys = [("sets", int(cc[q]), tuple(h[:K])) for q, h in zip(rows.tolist(), hists.tolist(), strict=True)]
        memo = {} if memo is None else memo
        known = np.array([key in memo for key in keys], dtype=bool)
        counter.add(K * int(known.sum()), "count lookup")
        todo = rows[~known]
        bh, R = b[todo], len(todo)
        dp = np.zeros((R, f + 1, K), dtype=dt)  # dp[row, size, bucket sum]
        dp[:, 0, 0] = 1
        ar = np.arange(K)[None, :]
        at = np.arange(R)[:, None]
        for t in range(m if R else 0):
            src = ar - bh[:, t : t + 1]  # [R, K]
            live = (src >= 0) & (bh[:, t : t + 1] < K)
            src = np.where(live, src, 0)
            for size in range(f - 1, -1, -1):
                dp[:, size + 1] += np.where(live, dp[:, size][at, src], 0)
            counter.add(2 * f * R * K, "count DP")
        for i, total in zip(np.nonzero(~known)[0].tolist(), dp[np.arange(R), cc[todo]].sum(axis=-1), strict=True):
            memo[keys[i]] = int(total)
        for i, q in enumerate(rows.tolist()):
            sets[q] = memo[keys[i]]
        out = np.zeros((nq, f), dtype=object)
        for q in range(nq):
            if cc[q] >= 1:
                out[q, cc[q] - 1] = factorial(int(cc[q])) * int(sets[q])  # ordered tuples
        return out

    # ------------------------------------------------------------ samplers

    def sample(self, n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random((size, n)).argsort(axis=1)[:, :k].astype(np.int64)

    def sample_given(self, n: int, k: int, m: np.ndarray, q: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        m = np.asarray(m, dtype=np.int64)
        b = m.shape[0]
        if q is None:
            others = distinct_below(m, k - 1, np.zeros((b, 0), dtype=np.int64), rng)
            return shuffle_rows(np.concatenate([others, m[:, None]], axis=1), rng)
        q = np.asarray(q, dtype=np.int64)
        out = np.empty((b, k), dtype=np.int64)
        out[:, -1] = q
        top = q == m
        if k == 1:
            return out
        nt = ~top
        out[top, :-1] = distinct_below(m[top], k - 1, np.zeros((top.sum(), 0), dtype=np.int64), rng)
        rest = distinct_below(m[nt], k - 2, q[nt, None], rng)
        out[nt, :-1] = shuffle_rows(np.concatenate([rest, m[nt, None]], axis=1), rng)
        return out

    # ------------------------------------------------------------ order statistics

    def top_law(self, r: np.ndarray, A: np.ndarray, n: int) -> np.ndarray:
        """P[max = t] = C(t, r-1)/C(A, r) for r distinct values from [0, A)."""
        from scipy.special import gammaln

        t = np.arange(n, dtype=np.float64)[None, :]
        r_ = r.astype(np.float64)[:, None]
        A_ = A.astype(np.float64)[:, None]
        ok = (t >= r_ - 1) & (t < A_)
        logp = (
            gammaln(t + 1)
            - gammaln(r_)
            - gammaln(np.maximum(t - r_ + 2, 1))
            - (gammaln(A_ + 1) - gammaln(r_ + 1) - gammaln(np.maximum(A_ - r_ + 1, 1)))
        )
        return np.where(ok, np.exp(np.where(ok, logp, 0.0)), 0.0)

    def copies_law(self, r: np.ndarray, t: np.ndarray, k: int) -> np.ndarray | None:
        return None

    def draw_rest(
        self, A: np.ndarray, count: int, q: np.ndarray, has_q: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        vals = np.empty((len(A), count), dtype=np.int64)
        for flag in (True, False):
            g = np.nonzero(has_q == flag)[0]
            if len(g):
                excl = q[g, None] if flag else np.zeros((len(g), 0), dtype=np.int64)
                vals[has_q == flag] = distinct_below(A[g], int(count), excl, rng)
        return vals

    def cases(self, n: int, k: int) -> dict[str, np.ndarray]:
        """P[max = m] = C(m, k-1)/C(n, k); the query is m with probability 1/k, else each q < m
        with (k-1)/(k·m). The r non-max, non-query tokens are distinct in [0, m) (minus q), so
        their largest is t2 with probability C(|[0, t2) minus q|, r-1) / C(|[0, m) minus q|, r);
        r2 = r - 1 remain."""
        pm = self.max_weights(n, k)
        out = []
        # query = max: the k-1 others are distinct in [0, m)
        r = k - 1
        m = np.arange(n)
        if r == 0:
            out.append((m, m, 0 * m, -1 + 0 * m, 0 * m, 0 * m, pm / k))
        else:
            M, T = np.meshgrid(m, m, indexing="ij")
            prob = (pm / k)[:, None] * comb_float(T, r - 1) / np.where(comb_float(M, r) > 0, comb_float(M, r), 1.0)
            ok = (T < M) & (prob > 0)
            out.append((M[ok], M[ok], 0 * M[ok], T[ok], 1 + 0 * M[ok], r - 1 + 0 * M[ok], prob[ok]))
        # query q < m: m among the others, r = k-2 further tokens distinct in [0, m) minus q
        if k >= 2:
            r = k - 2
            M, Q, T = np.meshgrid(m, m, m if r else np.array([-1]), indexing="ij")
            pq = (k - 1) / (k * np.maximum(M, 1)) * pm[M]
            if r == 0:
                prob = pq
                ok = (Q < M) & (prob > 0)
                zero = 0 * M[ok]
                out.append((M[ok], Q[ok], 1 + zero, T[ok], zero, zero, prob[ok]))
            else:
                below = T - (Q < T)
                pool = comb_float(M - 1, r)
                prob = pq * comb_float(below, r - 1) / np.where(pool > 0, pool, 1.0)
                ok = (Q < M) & (T < M) & (T != Q) & (prob > 0)
                one = 1 + 0 * M[ok]
                out.append((M[ok], Q[ok], one, T[ok], one, (r - 1) * one, prob[ok]))
        return pack_cases(out)

    def low_token_mask(self, n: int) -> np.ndarray:
        t_idx = np.arange(n)
        member = np.broadcast_to(t_idx[None, None, :] < t_idx[None, :, None], (n, n, n)).copy()
        member[np.arange(n), :, np.arange(n)] = False
        return member

    # ------------------------------------------------------------ strata of the max's positions

    def fixed_max_strata(self, n: int, k: int, max_copies: int | None) -> tuple[dict[str, np.ndarray], float]:
        """(m, q = m) and (m, q < m, position of m); the remaining tokens are an ordered draw
        without replacement from [0, m) minus q. Exact; ``max_copies`` is not needed."""
        last = k - 1
        eye = np.eye(k)
        N = perm(n, k)
        ms = np.arange(max(k - 1, 0), n)
        # query = max: all k-1 other positions random, population [0, m)
        top = dict(
            m=ms,
            q=ms,
            fixm=np.zeros((len(ms), k)),
            rest=np.tile(1.0 - eye[last], (len(ms), 1)),
            size=ms.astype(np.float64),
            removed=np.full((len(ms), 1), -1),
            weight=np.array([perm(int(m), k - 1) / N for m in ms]),
        )
        parts = [top]
        if k >= 2:
            mm, qq, pp = [], [], []
            for m in ms:
                if perm(int(m) - 1, k - 2) == 0:
                    continue
                g_q, g_p = np.meshgrid(np.arange(m), np.arange(last), indexing="ij")
                mm.append(np.full(g_q.size, m))
                qq.append(g_q.ravel())
                pp.append(g_p.ravel())
            if mm:
                mm, qq, pp = np.concatenate(mm), np.concatenate(qq), np.concatenate(pp)
                fix = eye[pp]
                parts.append(
                    dict(
                        m=mm,
                        q=qq,
                        fixm=fix,
                        rest=1.0 - fix - eye[last][None],
                        size=(mm - 1.0),
                        removed=qq[:, None].copy(),
                        weight=np.array([perm(max(m - 1, 0), k - 2) / N for m in range(n)])[mm],
                    )
                )
        st = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        st["gamma"] = self.pair_covariance_factor(st["size"])
        return st, 0.0

    # ------------------------------------------------------------ draws (without replacement)

    def pair_covariance_factor(self, size: np.ndarray) -> np.ndarray:
        return 1.0 / np.maximum(size - 1.0, 1.0)

    def p_none_drawn(self, size: np.ndarray, heavy: np.ndarray, r: np.ndarray) -> np.ndarray:
        return comb_any(size - heavy, r) / comb_any(size, r)

    def p_heaviest_at(self, size: np.ndarray, j: int | np.ndarray, r: np.ndarray) -> np.ndarray:
        return comb_any(size - j, r - 1) / comb_any(size, r) / r

    def p_heaviest_any(self, size: np.ndarray, j: int | np.ndarray, r: np.ndarray) -> np.ndarray:
        return comb_any(size - j, r - 1) / comb_any(size, r)


def distinct_below(m: np.ndarray, count: int, exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row, ``count`` distinct values uniformly from [0, m) minus the row's ``exclude``
    values, in uniformly random order. m: [b]; exclude: [b, e] distinct values < m -> [b, count].

    Selection by rank: draw r uniform in [0, m - e - j), then step r past every already used value
    at or below it (used values kept sorted), O(b·(count + e)²)."""
    b = m.shape[0]
    used = np.sort(exclude, axis=1) if exclude.size else np.zeros((b, 0), dtype=np.int64)
    e = used.shape[1]
    out = np.empty((b, count), dtype=np.int64)
    for j in range(count):
        r = np.floor(rng.random(b) * (m - e - j)).astype(np.int64)
        for i in range(used.shape[1]):
            r += used[:, i] <= r
        out[:, j] = r
        used = np.sort(np.concatenate([used, r[:, None]], axis=1), axis=1)
    return out
