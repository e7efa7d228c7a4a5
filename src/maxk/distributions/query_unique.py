"""``query-unique``: the query uniform on [0, n), every free token i.i.d. uniform on [0, n) minus
{query}; N = n·(n−1)^(k−1).

The clean law of the planted-trigger experiment (docs/wick.md, "Anomaly detection"): the
trigger is the query token appearing again among the free positions, and this is the uniform
law with every such input removed (every remaining input equally likely, as the kernel's
contract asks). Given the max m and the query q, the free tokens are i.i.d. from [0, m] minus q
with at least one m (q < m), or i.i.d. from [0, m) (q = m: no free token can equal the query, so
none is m). The non-max free tokens are draws with replacement from a population, so every draw
law is ``Uniform``'s; the tokens are not exchangeable (the query's position is special), so the
systematic design's order-statistic steps (``top_law``, ``copies_law``, ``draw_rest``) do not
apply and raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from math import comb

import numpy as np

from ..errors import MaxkError
from ..flops import FlopCounter
from ._laws import pack_cases, token_bitsets
from .base import Distribution
from .uniform import Uniform, bucketed_powers, with_max

_NOT_EXCHANGEABLE = (
    "distribution 'query-unique' has no order-statistic steps: its free tokens exclude the query, "
    "so the k tokens are not exchangeable (the systematic design needs them to be)"
)


class QueryUnique(Distribution):
    """The query uniform; every free token i.i.d. uniform on [0, n) minus the query token."""

    name = "query-unique"
    allows_repeats = True
    exchangeable = False

    def check(self, n: int, k: int) -> QueryUnique:
        if k >= 2 and n < 2:
            raise MaxkError(f"distribution 'query-unique' needs n >= 2 when k >= 2, got n={n}, k={k}")
        return self

    def n_sequences(self, n: int, k: int) -> int:
        return n * (n - 1) ** (k - 1)

    def count_with_max(self, n: int, k: int, m: int) -> int:
        top, below = self.max_query_counts(k, m)
        return top + m * below

    def max_query_counts(self, k: int, m: int) -> tuple[int, int]:
        # q = m: free tokens from [0, m); q < m: from [0, m] minus q (m tokens), at least one m
        f = k - 1
        return m**f, (m**f - (m - 1) ** f if m >= 1 else 0)

    def count_below(self, k: int, m: int, q: int, t: int) -> int:
        f = k - 1
        if q == m:
            return (t + 1) ** f
        if f == 0:
            return 0
        a = t + 1 - (1 if q <= t else 0)  # allowed non-max tokens: [0, t] minus q
        return (a + 1) ** f - a**f

    def support_rows(self, tokens: np.ndarray, *, query_last: bool = False) -> np.ndarray | None:
        if not query_last or tokens.shape[1] < 2:
            return None  # any free tokens are allowed together (a query beside them: the keys)
        return (tokens[:, :-1] != tokens[:, -1:]).all(axis=1)

    def support_with_query(self, support: np.ndarray | None, free: np.ndarray, q: int) -> np.ndarray | None:
        ok = (free != q).all(axis=1)
        return ok if support is None else support & ok

    def part_keys(self, tokens: np.ndarray, n: int, *, query_last: bool = False) -> np.ndarray | None:
        """Bit sets int64 [b, ceil(n / 63)]: of every token of a part without the query, of the
        query alone for the part holding it (a free token of the other part must not be it)."""
        return token_bitsets(tokens[:, -1:] if query_last else tokens, n)

    # ------------------------------------------------------------ cubic proof counts

    def max_only_occurs(self, k: int, m: int, q: int) -> bool:
        f = k - 1
        return f == 0 if q == m else f >= 1

    def nonmax_groups(self, k: int, m: int) -> Iterator[tuple[int, int, int]]:
        f = k - 1
        for q in range(m + 1):
            if q == m:
                if f >= 1:
                    yield q, f, 1  # no free position can hold m = q
                continue
            for cc in range(1, f):
                yield q, cc, comb(f, cc)

    def count_tokens(self, allowed: np.ndarray, q: int, cc: int) -> int:
        size = int(allowed.sum()) - (int(allowed[q]) if q < len(allowed) else 0)
        return size**cc

    def count_bucketed(
        self, bucket: np.ndarray, K: int, m: int, k: int, counter: FlopCounter, memo: dict | None = None
    ) -> np.ndarray:
        """``Uniform``'s truncated polynomial powers with the query token left out of its rows
        (bucket K: never below K), as ``bucketed_powers``."""
        b = bucket.copy()
        if m > 0:
            b[np.arange(m), :, np.arange(m)] = K
        return bucketed_powers(b, K, counter, memo)

    # ------------------------------------------------------------ samplers

    def sample(self, n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
        q = rng.integers(0, n, size=size, dtype=np.int64)
        free = rng.integers(0, n - 1, size=(size, k - 1), dtype=np.int64) if k > 1 else np.zeros((size, 0), np.int64)
        free += free >= q[:, None]
        return np.concatenate([free, q[:, None]], axis=1)

    def sample_given(self, n: int, k: int, m: np.ndarray, q: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        m = np.asarray(m, dtype=np.int64)
        b, f = m.shape[0], k - 1
        if q is None:  # P[q = m | m] = m^f / count, else q uniform below m
            mf = m.astype(np.float64)
            top = mf**f
            below = np.where(m >= 1, top - np.maximum(mf - 1.0, 0.0) ** f, 0.0)
            p_top = top / (top + mf * below)
            q = np.where(rng.random(b) < p_top, m, np.floor(rng.random(b) * m).astype(np.int64))
        q = np.asarray(q, dtype=np.int64)
        out = np.empty((b, k), dtype=np.int64)
        out[:, -1] = q
        if f == 0:
            return out
        top = q == m
        # query is the max: free tokens i.i.d. on [0, m); else i.i.d. on [0, m] minus q with max
        # m: i.i.d. on [0, m - 1] with max m - 1, mapped past q (v -> v + [v >= q])
        out[top, :-1] = np.floor(rng.random((top.sum(), f)) * m[top, None]).astype(np.int64)
        v = with_max(m[~top] - 1, f, n, rng)
        out[~top, :-1] = v + (v >= q[~top, None])
        return out

    # ------------------------------------------------------------ order statistics (none)

    def top_law(self, r: np.ndarray, A: np.ndarray, n: int) -> np.ndarray:
        raise MaxkError(_NOT_EXCHANGEABLE)

    def copies_law(self, r: np.ndarray, t: np.ndarray, k: int) -> np.ndarray | None:
        raise MaxkError(_NOT_EXCHANGEABLE)

    def draw_rest(
        self, A: np.ndarray, count: int, q: np.ndarray, has_q: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        raise MaxkError(_NOT_EXCHANGEABLE)

    def cases(self, n: int, k: int) -> dict[str, np.ndarray]:
        """Query = max m: the f = k−1 free tokens i.i.d. on [0, m), whose largest t2 has c2 copies
        with count C(f, c2)·t2^(f−c2). Query q < m: c >= 1 free copies of m (C(f, c) ways), the
        r = f − c others i.i.d. on [0, m) minus q, largest t2 != q with c2 copies and r − c2 below
        it, from [0, t2) minus q: count C(r, c2)·a^(r−c2), a = t2 − [q < t2]. P = count / N."""
        f = k - 1
        N = float(n) * float(n - 1) ** f
        mm = np.arange(n)
        out = []
        if f == 0:
            out.append((mm, mm, 0 * mm, -1 + 0 * mm, 0 * mm, 0 * mm, np.full(n, 1.0 / N)))
            return pack_cases(out)
        M, T = np.meshgrid(mm, mm, indexing="ij")
        for c2 in range(1, f + 1):
            pr = comb(f, c2) * T.astype(np.float64) ** (f - c2) / N
            ok = (T < M) & (pr > 0)
            z = 0 * M[ok]
            out.append((M[ok], M[ok], z, T[ok], c2 + z, f - c2 + z, pr[ok]))
        M2, Q2 = np.meshgrid(mm, mm, indexing="ij")
        M3, Q3, T3 = np.meshgrid(mm, mm, mm, indexing="ij")
        a = (T3 - (Q3 < T3)).astype(np.float64)
        for c in range(1, f + 1):
            r = f - c
            if r == 0:
                ok = Q2 < M2
                z = 0 * M2[ok]
                out.append((M2[ok], Q2[ok], c + z, -1 + z, z, z, np.full(len(z), comb(f, c) / N)))
                continue
            for c2 in range(1, r + 1):
                pr = comb(f, c) * comb(r, c2) * a ** (r - c2) / N
                ok = (Q3 < M3) & (T3 < M3) & (T3 != Q3) & (pr > 0)
                z = 0 * M3[ok]
                out.append((M3[ok], Q3[ok], c + z, T3[ok], c2 + z, r - c2 + z, pr[ok]))
        return pack_cases(out)

    def low_token_mask(self, n: int) -> np.ndarray:
        t_idx = np.arange(n)
        member = np.broadcast_to(t_idx[None, None, :] < t_idx[None, :, None], (n, n, n)).copy()
        member[np.arange(n), :, np.arange(n)] = False  # a free token is never the query token
        return member

    # ------------------------------------------------------------ strata of the max's positions

    def fixed_max_strata(self, n: int, k: int, max_copies: int | None) -> tuple[dict[str, np.ndarray], float]:
        """(m, q = m, no free m; the free tokens i.i.d. on [0, m)) and (m, q < m, set P != ∅ of
        free positions holding m; the others i.i.d. on [0, m) minus q). For k − 1 > 8 only sets
        of at most ``max_copies`` (default 2) positions are enumerated and the weights
        renormalised within each m to the exact P[max = m] (as ``Uniform``)."""
        f = k - 1
        N = self.n_sequences(n, k)
        cmax = f if (max_copies is None and f <= 8) else (2 if max_copies is None else int(max_copies))
        free_row = np.r_[np.ones(f), 0.0]
        # query = max: all free positions random, population [0, m) (k = 1: every m, no position)
        ms = np.array([m for m in range(n) if m**f > 0], dtype=np.int64)
        parts: list[dict[str, np.ndarray]] = [
            dict(
                m=ms,
                q=ms.copy(),
                fixm=np.zeros((len(ms), k)),
                rest=np.tile(free_row, (len(ms), 1)),
                size=ms.astype(np.float64),
                removed=np.full((len(ms), 1), -1),
                weight=np.array([float(Fraction(int(m) ** f, N)) for m in ms]),
            )
        ]
        pats = np.array([P for P in range(1, 1 << f) if bin(P).count("1") <= cmax], dtype=np.int64)
        if len(pats) and n >= 2:
            bits = ((pats[:, None] >> np.arange(f)[None, :]) & 1).astype(np.float64)  # [n_pat, f]
            npos = bits.sum(axis=1).astype(np.int64)
            # weight of (m, q, P): (m - 1)^(f - |P|) / N, one exact fraction per (m, |P|)
            wt = np.array([[float(Fraction(max(m - 1, 0) ** (f - c), N)) for c in range(f + 1)] for m in range(n)])
            grid = np.meshgrid(np.arange(n), np.arange(n), np.arange(len(pats)), indexing="ij")
            g_m, g_q, g_p = (g.ravel() for g in grid)
            keep = g_q < g_m
            g_m, g_q, g_p = g_m[keep], g_q[keep], g_p[keep]
            weight = wt[g_m, npos[g_p]]
            keep = weight > 0
            g_m, g_q, g_p, weight = g_m[keep], g_q[keep], g_p[keep], weight[keep]
            zero = np.zeros((len(g_m), 1))
            parts.append(
                dict(
                    m=g_m,
                    q=g_q,
                    fixm=np.concatenate([bits[g_p], zero], axis=1),
                    rest=np.concatenate([1.0 - bits[g_p], zero], axis=1),
                    size=g_m - 1.0,
                    removed=g_q[:, None].copy(),
                    weight=weight,
                )
            )
        st = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        pm_true = self.max_weights(n, k)
        cov_m = np.bincount(st["m"], weights=st["weight"], minlength=n)
        dropped = float(max(pm_true.sum() - cov_m.sum(), 0.0))
        if cmax < f:  # renormalise within each m to the exact P[max = m]
            st["weight"] = st["weight"] * (pm_true / np.where(cov_m > 0, cov_m, 1.0))[st["m"]]
        st["gamma"] = self.pair_covariance_factor(st["size"])
        return st, dropped

    # ------------------------------------------------------------ draws (with replacement): Uniform's

    pair_covariance_factor = Uniform.pair_covariance_factor
    p_none_drawn = Uniform.p_none_drawn
    p_heaviest_at = Uniform.p_heaviest_at
    p_heaviest_any = Uniform.p_heaviest_any
