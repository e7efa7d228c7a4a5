"""The cubic proof at scale: ``enclose``'s fast rounding equals ``np.nextafter`` bit for bit, the counting
kernel's fast paths equal plain dynamic programming and enumeration, the tier-by-tier exact
rechecks decide as the exact check over every output, and skipping the rechecks that cannot
change the count leaves the count unchanged."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.distributions import DISTINCT, UNIFORM, get_distribution
from maxk.distributions.uniform import bucketed_powers
from maxk.flops import FlopCounter
from maxk.proofs import enclose
from maxk.proofs.cubic import MIX_BUCKETS, certified_sets
from maxk.proofs.enclose import enclosed_tables

from .helpers import max_like_model
from .test_proofs_soundness import adversarial, drawn_model

SPECIAL = np.array([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.0, -1.0, 1e308, -1e308, np.inf, -np.inf])


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(a.view(np.int64) == b.view(np.int64)))


def _ref_down(x):
    return np.nextafter(np.asarray(x, dtype=np.float64), -np.inf)


def _ref_up(x):
    return np.nextafter(np.asarray(x, dtype=np.float64), np.inf)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.integers(1, 300), tile=st.sampled_from([1, 64]))
def test_fast_rounding_is_nextafter_bit_for_bit(seed, size, tile):
    """``enclose``'s rounding (np.nextafter on small arrays, torch.nextafter on large ones, in
    place or not) equals np.nextafter bit for bit, and counts one op per element."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([SPECIAL, rng.standard_normal(size) * 10.0 ** rng.integers(-300, 300, size)])
    x = np.tile(x, tile)  # tile 64: above enclose._TORCH_MIN, the torch path
    y, w = rng.standard_normal(x.shape), rng.random(x.shape)
    for name, ref in (("down", _ref_down), ("up", _ref_up)):
        c = FlopCounter()
        want = ref(x)
        assert _same_bits(getattr(enclose, name)(x, c), want) and c.by_label == {"rounding": x.size}
        assert _same_bits(getattr(enclose, name)(x.copy(), FlopCounter(), inplace=True), want)
    nan = enclose.down(np.full(x.size, np.nan), FlopCounter())
    assert np.isnan(nan).all()
    want_sum = _ref_down(_ref_down(x + y) + w[:1])
    assert _same_bits(enclose.sum_lower([x, y, w[:1]], FlopCounter()), want_sum)
    want_mul = _ref_down(np.where(y >= 0, w, w + 1.0) * y)
    assert _same_bits(enclose.mul_lower(w, w + 1.0, y, FlopCounter()), want_mul)
    strided = x[::2]  # a view: rounded into a copy, never into its base
    before = x.copy()
    enclose.down(strided, FlopCounter(), inplace=True)
    assert _same_bits(x, before)


def test_fast_rounding_of_large_arrays_in_pieces():
    """Arrays above torch's grain size are rounded piece by piece: every piece, the last partial
    one included."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 40_001)) * 10.0 ** rng.integers(-300, 300, (3, 40_001))
    for name, ref in (("down", _ref_down), ("up", _ref_up)):
        want = ref(x)
        assert _same_bits(getattr(enclose, name)(x, FlopCounter()), want)
        assert _same_bits(getattr(enclose, name)(x.copy(), FlopCounter(), inplace=True), want)


def _power_dp(bucket: np.ndarray, K: int) -> np.ndarray:
    """The reference: truncated polynomial powers by repeated multiplication, Python ints."""
    nq, f, _ = bucket.shape
    out = np.zeros((nq, f), dtype=object)
    for q in range(nq):
        for cc in range(1, f + 1):
            hist = [0] * K
            for b in bucket[q, cc - 1]:
                if b < K:
                    hist[b] += 1
            cur = [1] + [0] * (K - 1)
            for _ in range(cc):
                cur = [sum(cur[i] * hist[a - i] for i in range(a + 1)) for a in range(K)]
            out[q, cc - 1] = sum(cur)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), nq=st.integers(1, 3), m=st.integers(1, 70), f=st.integers(1, 19))
def test_bucketed_powers_match_plain_dp(seed, nq, m, f):
    """Every path (no usable token, every tuple counted, packed powers), int64 and exact ints."""
    K = MIX_BUCKETS
    rng = np.random.default_rng(seed)
    values = [[0, 1, 2, 5, 11, K - 1, K], [0, 0, 0, 1, K], [0, 1, 2, 3, K], [K]][seed % 4]
    bucket = rng.choice(values, size=(nq, f, m))
    got = bucketed_powers(bucket, K, FlopCounter())
    assert [int(x) for x in got.ravel()] == [int(x) for x in _power_dp(bucket, K).ravel()]


def test_bucketed_powers_match_enumeration():
    K = MIX_BUCKETS
    rng = np.random.default_rng(3)
    bucket = rng.choice([0, 3, 9, 17, 30, K], size=(2, 4, 6))
    got = bucketed_powers(bucket, K, FlopCounter())
    for q, cc in itertools.product(range(2), range(1, 5)):
        b = bucket[q, cc - 1]
        want = sum(1 for tup in itertools.product(range(6), repeat=cc) if sum(b[t] for t in tup) < K)
        assert got[q, cc - 1] == want


@pytest.mark.parametrize("name", ["uniform", "distinct", "query-unique"])
@pytest.mark.parametrize("k", [2, 4, 6])
def test_count_token_groups_is_count_tokens(name, k):
    d = get_distribution(name)
    rng = np.random.default_rng(k)
    for m in (0, 1, 5, 9):
        allowed = rng.random((m + 1, k - 1, m)) < 0.7
        qs = np.arange(m + 1)
        got = d.count_token_groups(allowed, qs, m, k)
        want = np.zeros_like(got, dtype=object)
        for q, cc, _ways in d.nonmax_groups(k, m):
            want[q, cc - 1] = d.count_tokens(allowed[q, cc - 1], q, cc)
        assert [int(x) for x in got.ravel()] == [int(x) for x in want.ravel()]
        sub = qs[::2]  # rows for some queries only
        assert [int(x) for x in d.count_token_groups(allowed[sub], sub, m, k).ravel()] == [
            int(x) for x in got[sub].ravel()
        ]


# small random, max-like, noised and near-tied models: (n, k, seed, noise, adversarial rank)
SMALL_MODELS = st.builds(
    drawn_model,
    st.integers(3, 12),
    st.integers(2, 5),
    st.integers(0, 10**6),
    st.sampled_from([0.0, 0.05, 0.3]),
    st.integers(-1, 1),
)


@settings(max_examples=25, deadline=None)
@given(model=SMALL_MODELS, dist=st.sampled_from(["uniform", "distinct"]))
def test_tier_rechecks_decide_as_the_exact_check(model, dist):
    """With one output exact (r = 1) and every case rechecked, each token's per-token verdict
    and mixture bucket are those of the check that is exact over every output (r = n - 1, whose
    partial stage computes every output), and pruning changes no count. With the worst
    arrangement per position formed on every output (``per_position="all"``), so that both
    checks read the same G; "shared" forms it on the r shared rivals, which differ with r."""
    n, k = model.cfg.n, model.cfg.k
    if dist == "distinct" and k > n:
        return
    tab = enclosed_tables(model)
    d = get_distribution(dist)
    for m in range(1, n):
        opt = {"per_position": "all"}
        tiers = certified_sets(tab, m, d, FlopCounter(), exact_outputs=1, prune=False, **opt)
        every = certified_sets(tab, m, d, FlopCounter(), exact_outputs=n - 1, exact_budget=0.0, prune=False, **opt)
        pruned = certified_sets(tab, m, d, FlopCounter(), exact_outputs=1, **opt)
        if tiers.ok is None:
            continue
        assert every.ok is not None and tiers.bucket is not None and every.bucket is not None
        valid = np.zeros(tiers.ok.shape[:2], dtype=bool)
        for q, cc, _ways in d.nonmax_groups(k, m):
            valid[q, cc - 1] = True
        assert np.array_equal(tiers.ok[valid], every.ok[valid])
        b1, bn = tiers.bucket[valid], every.bucket[valid]
        assert np.all((b1 == bn) | ((b1 == 1) & (bn == 0)))  # a bucket of 1 is not rechecked
        assert pruned.count() == tiers.count()


def test_pruning_keeps_the_count_on_a_trained_like_model():
    for dist in (UNIFORM, DISTINCT):
        tab = enclosed_tables(adversarial(max_like_model(16, 5, 7, 0.05), 0))
        for m in range(tab.n):
            a = certified_sets(tab, m, dist, FlopCounter()).count()
            assert a == certified_sets(tab, m, dist, FlopCounter(), prune=False).count()
