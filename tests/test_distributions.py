"""Every count and law the distribution kernel offers, against plain enumeration of the inputs
(every registered distribution, small n and k drawn by hypothesis).

The systematic design's order-statistic steps (``top_law``, ``copies_law``, ``draw_rest``)
presume exchangeable tokens: they are checked for the exchangeable laws, and a law that is not
exchangeable (``query-unique``) must refuse them (MaxkError); every other method is checked for
every law."""

from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction
from math import comb

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.distributions import (
    DISTINCT,
    DISTRIBUTIONS,
    QUERY_UNIQUE,
    UNIFORM,
    Distribution,
    get_distribution,
    resolve,
)
from maxk.distributions._laws import bucket_histograms
from maxk.errors import MaxkError
from maxk.flops import FlopCounter

KERNELS = [get_distribution(name) for name in DISTRIBUTIONS]  # every registered distribution


def _support(d: Distribution, n: int, k: int) -> np.ndarray:
    """Every input with nonzero probability: the law as enumerated, [N, k]."""
    return d.enumerate(n, k)


@pytest.mark.parametrize("n,k", [(2, 1), (3, 3), (5, 2), (4, 4)])
def test_enumeration_is_the_stated_law(n, k):
    every = [tuple(x) for x in itertools.product(range(n), repeat=k)]
    assert [tuple(x) for x in UNIFORM.enumerate(n, k).tolist()] == every
    assert [tuple(x) for x in DISTINCT.enumerate(n, k).tolist()] == [x for x in every if len(set(x)) == k]
    assert [tuple(x) for x in QUERY_UNIQUE.enumerate(n, k).tolist()] == [x for x in every if x[-1] not in x[:-1]]


@st.composite
def _shape(draw, kmax: int = 4, nmax: int = 6):
    d = draw(st.sampled_from(KERNELS))
    k = draw(st.integers(1, kmax))
    n = draw(st.integers(max(2, k if not d.allows_repeats else 2), nmax))
    return d, n, k


def _free_split(x: np.ndarray, m: int) -> tuple[int, np.ndarray]:
    """(number of free positions holding the max, the free non-max tokens in order)."""
    free = x[:-1]
    return int((free == m).sum()), free[free != m]


@settings(max_examples=60, deadline=None)
@given(_shape())
def test_totals_max_and_query_counts(shape):
    d, n, k = shape
    X = _support(d, n, k)
    assert d.n_sequences(n, k) == len(X)
    mx, q = X.max(axis=1), X[:, -1]
    w = d.max_weights(n, k)
    wq = d.max_query_weights(n, k)
    for m in range(n):
        cnt = int((mx == m).sum())
        assert d.count_with_max(n, k, m) == cnt
        assert w[m] == float(Fraction(cnt, len(X)))
        top, below = d.max_query_counts(k, m)
        assert top == int(((mx == m) & (q == m)).sum())
        for q0 in range(n):
            c = int(((mx == m) & (q == q0)).sum())
            assert wq[m, q0] == float(Fraction(c, len(X)))
            if q0 < m:
                assert below == c


@settings(max_examples=60, deadline=None)
@given(_shape())
def test_counts_below_a_threshold(shape):
    d, n, k = shape
    X = _support(d, n, k)
    mx, q = X.max(axis=1), X[:, -1]
    for m in range(n):
        for q0 in range(m + 1):
            sel = X[(mx == m) & (q == q0)]
            for t in range(-1, m):
                want = sum(1 for x in sel if all(v <= t for v in x[:-1] if v != m))
                assert d.count_below(k, m, q0, t) == want, (m, q0, t)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 9), st.integers(0, 6))
def test_bucket_histograms_count_each_value(seed, K, m):
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, K + 1, size=(3, 2, m))
    got = bucket_histograms(bucket, K)
    assert got.shape == (3, 2, K + 1)
    for idx in np.ndindex(3, 2):
        assert got[idx].tolist() == [int((bucket[idx] == a).sum()) for a in range(K + 1)]


@settings(max_examples=60, deadline=None)
@given(_shape(), st.integers(0, 10**6))
def test_cubic_groups_token_counts_and_bucketed_counts(shape, seed):
    d, n, k = shape
    X = _support(d, n, k)
    rng = np.random.default_rng(seed)
    f, K = k - 1, 7
    for m in range(n):
        rows = X[X.max(axis=1) == m]
        for q0 in range(m + 1):
            only_max = any(x[-1] == q0 and (x[:-1] == m).all() for x in rows)
            assert d.max_only_occurs(k, m, q0) == only_max, (m, q0)
        groups = {(q0, cc): ways for q0, cc, ways in d.nonmax_groups(k, m)}
        table = d.group_ways(k, m)
        assert table.shape == (m + 1, f)
        qs, cs = np.nonzero(table)
        assert {(int(q0), int(c0) + 1): int(table[q0, c0]) for q0, c0 in zip(qs, cs, strict=True)} == groups
        split = Counter()
        for x in rows:
            _, rest = _free_split(x, m)
            if len(rest):
                split[(int(x[-1]), len(rest))] += 1
        assert set(split) <= set(groups), (m, groups, split)
        if m == 0 or f == 0:
            assert all(d.count_tokens(np.ones(m, dtype=bool), q0, cc) == 0 for q0, cc in groups)
            continue
        allowed = rng.random((m + 1, f, m)) < 0.6
        bucket = rng.integers(0, K + 1, size=(m + 1, f, m))
        mix = d.count_bucketed(bucket, K, m, k, FlopCounter())
        for (q0, cc), ways in groups.items():
            sel = [x for x in rows if x[-1] == q0 and len(_free_split(x, m)[1]) == cc]
            assert ways * d.count_tokens(np.ones(m, dtype=bool), q0, cc) == len(sel)
            al = allowed[q0, cc - 1]
            assert ways * d.count_tokens(al, q0, cc) == sum(all(al[t] for t in _free_split(x, m)[1]) for x in sel)
            want = sum(sum(bucket[q0, cc - 1, t] for t in _free_split(x, m)[1]) < K for x in sel)
            assert ways * int(mix[q0, cc - 1]) == want, (m, q0, cc)


@settings(max_examples=30, deadline=None)
@given(_shape(), st.integers(0, 10**6))
def test_support_rows_query_and_part_keys(shape, seed):
    d, n, k = shape
    X = _support(d, n, k)
    full = set(map(tuple, X.tolist()))
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=(40, k))
    ok = d.support_rows(rows, query_last=True)
    want = np.array([tuple(r) in full for r in rows.tolist()])
    assert np.array_equal(np.ones(len(rows), dtype=bool) if ok is None else ok, want)
    if k >= 2:
        free = rows[:, :-1]
        sup = d.support_rows(free)  # free positions only: keeps every row that some query completes
        occurs_somehow = np.array([any(tuple(r) + (q0,) in full for q0 in range(n)) for r in free.tolist()])
        assert sup is None or not np.any(occurs_somehow & ~sup)
        for q0 in range(n):
            occ = d.support_with_query(sup, free, q0)
            want = np.array([tuple(r) + (q0,) in full for r in free.tolist()])
            assert np.array_equal(np.ones(len(free), dtype=bool) if occ is None else occ, want)
        a = int(rng.integers(0, k))  # parts: free positions [0, a) and [a, k) with the query
        A, B = rows[:, :a], rows[:, a:]
        keep_a = d.support_rows(A)
        keep_b = d.support_rows(B, query_last=True)
        A = A if keep_a is None else A[keep_a]
        B = B if keep_b is None else B[keep_b]
        ka, kb = d.part_keys(A, n), d.part_keys(B, n, query_last=True)
        pairs = [tuple(x) + tuple(y) in full for x in A.tolist() for y in B.tolist()]
        if ka is None:
            assert all(pairs)
        else:
            got = d.parts_compatible(torch.as_tensor(ka), torch.as_tensor(kb)).numpy()
            assert got.tolist() == pairs


@settings(max_examples=60, deadline=None)
@given(_shape(kmax=4, nmax=7))
def test_case_law_matches_enumeration(shape):
    d, n, k = shape
    X = _support(d, n, k)
    want = Counter()
    for x in X:
        m = int(x.max())
        c, rest = _free_split(x, m)
        t2 = int(rest.max()) if len(rest) else -1
        c2 = int((rest == t2).sum()) if len(rest) else 0
        want[(m, int(x[-1]), c, t2, c2, len(rest) - c2)] += Fraction(1, len(X))
    cs = d.cases(n, k)
    got = Counter()
    for i in range(len(cs["prob"])):
        got[tuple(int(cs[c][i]) for c in ("m", "q", "c", "t2", "c2", "r2"))] += cs["prob"][i]
    assert {key for key, p in got.items() if p > 0} == set(want)
    for key, p in want.items():
        assert got[key] == pytest.approx(float(p), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("d", KERNELS, ids=lambda d: d.name)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_low_token_mask(d, n):
    # a free non-max token below tl can be t beside query q iff some input (k = 2 or 3) with
    # query q and max >= tl holds t at a free position, t < tl
    want = np.zeros((n, n, n), dtype=bool)
    for k in (2, 3):
        try:
            X = _support(d.check(n, k), n, k) if d.n_sequences(n, k) else np.zeros((0, k), np.int64)
        except MaxkError:
            continue
        for x in X.tolist():
            m = max(x)
            for t in x[:-1]:
                if t != m:
                    want[x[-1], t + 1 : m + 1, t] = True
    assert np.array_equal(d.low_token_mask(n), want)


@settings(max_examples=30, deadline=None)
@given(_shape(kmax=4, nmax=6))
def test_fixed_max_strata_are_exact(shape):
    d, n, k = shape
    X = _support(d, n, k)
    st_, dropped = d.fixed_max_strata(n, k, None)
    assert dropped == pytest.approx(0.0, abs=1e-12)
    got = Counter()
    for i in range(len(st_["m"])):
        m, q0 = int(st_["m"][i]), int(st_["q"][i])
        key = (m, q0, tuple(int(v) for v in st_["fixm"][i][:-1]))
        got[key] += st_["weight"][i]
        removed = [int(r) for r in st_["removed"][i] if r >= 0]
        assert st_["size"][i] == m - len(removed)
        assert st_["rest"][i][-1] == 0 and np.all(st_["rest"][i][:-1] + st_["fixm"][i][:-1] == 1)
        assert st_["gamma"][i] == d.pair_covariance_factor(np.array([st_["size"][i]]))[0]
    want = Counter()
    for x in X:
        m = int(x.max())
        want[(m, int(x[-1]), tuple(int(v == m) for v in x[:-1]))] += Fraction(1, len(X))
    assert {key for key, p in got.items() if p > 0} == set(want)
    for key, p in want.items():
        assert got[key] == pytest.approx(float(p), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(KERNELS), st.integers(1, 6), st.data())
def test_draw_laws_match_enumeration(d, size, data):
    r = data.draw(st.integers(1, size if not d.allows_repeats else 4))
    draws = list(
        itertools.permutations(range(size), r) if not d.allows_repeats else itertools.product(range(size), repeat=r)
    )  # token 0 is the heaviest
    s, rr = np.array([float(size)]), np.array([float(r)])
    for nh in range(size + 1):
        want = Fraction(sum(all(t >= nh for t in x) for x in draws), len(draws))
        assert d.p_none_drawn(s, np.array([float(nh)]), rr)[0] == pytest.approx(float(want), rel=1e-12, abs=1e-15)
    for j in range(1, size + 1):
        at = Fraction(sum(x[0] == j - 1 and all(t >= j for t in x[1:]) for x in draws), len(draws))
        anyw = Fraction(sum(sum(t == j - 1 for t in x) == 1 and all(t >= j - 1 for t in x) for x in draws), len(draws))
        assert d.p_heaviest_at(s, j, rr)[0] == pytest.approx(float(at), rel=1e-12, abs=1e-15)
        assert d.p_heaviest_any(s, j, rr)[0] == pytest.approx(float(anyw), rel=1e-12, abs=1e-15)
    if r >= 2:  # Cov(f(X_0), f(X_1)) = -gamma·Var_population(f)
        fv = np.random.default_rng(size * 7 + r).normal(size=size)
        a = np.array([fv[x[0]] for x in draws])
        b = np.array([fv[x[1]] for x in draws])
        cov = float(np.mean(a * b) - np.mean(a) * np.mean(b))
        gamma = d.pair_covariance_factor(s)[0]
        assert cov == pytest.approx(-gamma * float(np.var(fv)), abs=1e-12)


EXCHANGEABLE = [d for d in KERNELS if d.exchangeable]


@pytest.mark.parametrize("d", [d for d in KERNELS if not d.exchangeable], ids=lambda d: d.name)
def test_order_statistic_steps_refused_without_exchangeability(d):
    rng = np.random.default_rng(0)
    one = np.array([2])
    with pytest.raises(MaxkError, match="exchangeable"):
        d.top_law(one, np.array([4]), 5)
    with pytest.raises(MaxkError, match="exchangeable"):
        d.copies_law(one, one, 3)
    with pytest.raises(MaxkError, match="exchangeable"):
        d.draw_rest(np.array([4]), 1, np.array([0]), np.array([True]), rng)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(EXCHANGEABLE), st.integers(2, 7), st.data())
def test_order_statistic_laws(d, n, data):
    A = data.draw(st.integers(1, n))
    r = data.draw(st.integers(1, A if not d.allows_repeats else 4))
    tuples = list(
        itertools.permutations(range(A), r) if not d.allows_repeats else itertools.product(range(A), repeat=r)
    )
    top = Counter(max(x) for x in tuples)
    law = d.top_law(np.array([r]), np.array([A]), n)[0]
    law = law / law.sum()
    for t in range(n):
        assert law[t] == pytest.approx(top[t] / len(tuples), abs=1e-12)
    cl = d.copies_law(np.array([r]), np.array([A - 1]), max(r, 1))
    if d.allows_repeats:
        sel = [x for x in tuples if max(x) == A - 1]
        copies = Counter(sum(v == A - 1 for v in x) for x in sel)
        cl = cl[0] / cl[0].sum()
        for c in range(1, r + 1):
            assert cl[c - 1] == pytest.approx(copies[c] / len(sel), abs=1e-12)
    else:
        assert cl is None


@settings(max_examples=20, deadline=None)
@given(_shape(kmax=4, nmax=7), st.integers(0, 10**6))
def test_samplers_stay_in_the_support_and_condition(shape, seed):
    d, n, k = shape
    rng = np.random.default_rng(seed)
    full = set(map(tuple, _support(d, n, k).tolist()))
    assert all(tuple(x) in full for x in d.sample(n, k, 200, rng).tolist())
    ms = np.array([m for m in range(n) if d.count_with_max(n, k, m) > 0])
    m = rng.choice(ms, size=200)
    x = d.sample_given(n, k, m, None, rng)
    assert all(tuple(r) in full for r in x.tolist()) and np.array_equal(x.max(axis=1), m)
    q = np.array([rng.choice([q0 for q0 in range(mm + 1) if _has(full, mm, q0)]) for mm in m])
    x = d.sample_given(n, k, m, q, rng)
    assert all(tuple(r) in full for r in x.tolist())
    assert np.array_equal(x.max(axis=1), m) and np.array_equal(x[:, -1], q)
    if not d.exchangeable:  # no order-statistic steps (test_order_statistic_steps_refused_...)
        return
    A = rng.integers(1, n + 1, size=50)
    cnt = 1
    has_q = rng.random(50) < 0.5
    qq = np.minimum(rng.integers(0, n, size=50), A - 1)
    A = np.where(has_q & (A < 2), 2, A)
    qq = np.minimum(qq, A - 1)
    vals = d.draw_rest(A, cnt, qq, has_q, rng)
    assert np.all(vals[:, 0] < A)
    if not d.allows_repeats:
        assert not np.any(has_q & (vals[:, 0] == qq))


def _has(full: set, m: int, q0: int) -> bool:
    return any(max(x) == m and x[-1] == q0 for x in full)


def test_registry_lookup_and_validation():
    assert DISTRIBUTIONS == ("uniform", "distinct", "query-unique")
    assert get_distribution("uniform") is UNIFORM and get_distribution(DISTINCT) is DISTINCT
    assert get_distribution("query-unique") is QUERY_UNIQUE and not QUERY_UNIQUE.exchangeable
    assert UNIFORM.exchangeable and DISTINCT.exchangeable
    assert resolve("distinct", 5, 5) is DISTINCT
    with pytest.raises(MaxkError, match="unknown distribution"):
        get_distribution("gaussian")
    with pytest.raises(MaxkError, match="k <= n"):
        resolve("distinct", 3, 4)
    with pytest.raises(MaxkError, match="n >= 2"):
        resolve("query-unique", 1, 2)


def test_closed_forms_at_the_paper_size():
    # DESIGN §3: P[max = m] = ((m+1)^k - m^k)/n^k (uniform) and C(m, k-1)/C(n, k) (distinct)
    n, k = 64, 4
    for m in (3, 10, 63):
        assert Fraction(UNIFORM.count_with_max(n, k, m), UNIFORM.n_sequences(n, k)) == Fraction(
            (m + 1) ** k - m**k, n**k
        )
        assert Fraction(DISTINCT.count_with_max(n, k, m), DISTINCT.n_sequences(n, k)) == Fraction(
            comb(m, k - 1), comb(n, k)
        )
