"""The cubic proof's faster pieces decide as the plain ones: the worst-arrangement table from one
sort per (q, o) equals sorting each free position's terms on its own, bit for bit; the dyadic
descent of a failed tier finds exactly the single outputs that fail; the levels with each query's
rivals dropped, and the tier minima read off them, are the masked ones; a group whose buckets
did not change keeps its mixture count; and the shipped model's certified counts are those the
proof has always given."""

from __future__ import annotations

from dataclasses import replace
from math import ceil, log2

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.checkpoint import load
from maxk.flops import FlopCounter
from maxk.proofs.cubic import RecheckPool, _DyadicTiers, _OutputSets, _worst_arrangements, certified_sets
from maxk.proofs.enclose import enclosed_tables
from maxk.proofs.registry import prove

from .helpers import max_like_model


def _worst_arrangements_by_sorting(Qt: np.ndarray, Mt: np.ndarray) -> np.ndarray:
    """The reference: for each free position j, sort the other positions' terms and add the
    smallest ones to Qt in increasing order, rounding down after each addition."""
    nq, f, n = Mt.shape
    G = np.empty((nq, f, f, n))
    for j in range(f):
        X = Mt.copy()
        X[:, j, :] = np.inf
        X.sort(axis=1)
        acc = Qt
        G[:, f - 1, j, :] = Qt
        for r in range(1, f):
            acc = np.nextafter(acc + X[:, r - 1, :], -np.inf)
            G[:, f - r - 1, j, :] = acc
    return G


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), f=st.integers(1, 19), shape=st.tuples(st.integers(1, 4), st.integers(1, 9)))
def test_worst_arrangements_equal_sorting_each_position(seed, f, shape):
    rng = np.random.default_rng(seed)
    (nq, n), ties = shape, seed % 2 == 0
    Mt = rng.standard_normal((nq, f, n)) * 10.0 ** rng.integers(-5, 5, (nq, f, n))
    if ties:  # repeated values: which of two equal terms is left out must not matter
        Mt = np.round(Mt)
    Qt = rng.standard_normal((nq, n))
    c = FlopCounter()
    got = _worst_arrangements(Qt, Mt, f + 1, c)
    want = _worst_arrangements_by_sorting(Qt, Mt)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.int64), want.view(np.int64))
    # one sort per (q, o) and (k-1)^2/2 rounded additions, each counted with its rounding
    assert c.by_label["sort"] == nq * n * f * max(1, ceil(log2(max(f, 2))))
    sums = nq * n * (f * (f - 1) // 2 + (f - 1))
    assert c.by_label.get("lower sum", 0) == c.by_label.get("rounding", 0) == sums


def _output_sets(rng, n: int, m: int, r: int) -> _OutputSets:
    nq, f = m + 1, 3
    G0x = rng.standard_normal((nq, f, n))
    G0x[..., m] = np.inf
    V = rng.standard_normal((n, n))
    return _OutputSets(G0x, V, m, r)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 70), r=st.integers(1, 5), cases=st.integers(1, 6))
def test_dyadic_descent_finds_exactly_the_failing_outputs(seed, n, r, cases):
    """With a block's value the min over its outputs (+inf outside the exact sets' complement),
    the descent from the marked tiers returns exactly the (case, output) pairs of those tiers
    whose value is below the case's threshold, with their values."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, n))
    sets = _output_sets(rng, n, m, r)
    dy = _DyadicTiers(sets, n)
    mask = sets.rest[rng.integers(0, m + 1, cases)]  # [F, n]: outputs outside the shared exact sets
    values = np.round(rng.standard_normal((cases, n)), 1)
    lv = dy.levels(values, mask, FlopCounter())
    thr = rng.standard_normal(cases)
    bits = rng.integers(0, 1 << len(sets.starts), cases)

    def fails(case, level, blk):
        v = lv[level][case, blk]
        return v < thr[case], v

    case, out, val = dy.descend(bits, fails)
    got = sorted(zip(case.tolist(), out.tolist(), val.tolist(), strict=True))
    tier_of = np.searchsorted(sets.starts, np.arange(len(sets.perm)), side="right") - 1
    want = []
    for i in range(cases):
        for pos, o in enumerate(sets.perm):
            if (bits[i] >> tier_of[pos]) & 1 and mask[i, o] and values[i, o] < thr[i]:
                want.append((i, int(o), float(values[i, o])))
    assert got == sorted(want)


def test_levels_are_block_minima():
    rng = np.random.default_rng(1)
    n, m = 37, 20
    sets = _output_sets(rng, n, m, 2)
    dy = _DyadicTiers(sets, n)
    x = rng.standard_normal((3, n))
    lv = dy.levels(x, None, FlopCounter())
    order = np.full((3, dy.size), np.inf)
    order[:, : len(sets.perm)] = x[:, sets.perm]
    for level, arr in enumerate(lv):
        assert np.array_equal(arr, order.reshape(3, -1, 1 << level).min(axis=-1))
    # the coarse tiers are covered by their blocks exactly once
    covered = np.zeros(len(sets.perm), dtype=int)
    for _tier, level, blk in dy.blocks:
        covered[blk << level : (blk + 1) << level] += 1
    assert (covered == 1).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 70), r=st.integers(1, 5), f=st.integers(1, 4))
def test_dropped_outputs_and_tier_minima_are_the_masked_ones(seed, n, r, f):
    """Levels with each query's shared rivals and m dropped equal the levels under the rest
    mask, and the tier minima read off them equal ``rest_min``'s over the outputs, bit for bit."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, n))
    sets = _output_sets(rng, n, m, r)
    dy = _DyadicTiers(sets, n)
    nq = m + 1
    x = np.round(rng.standard_normal((nq, f, n)), 1)  # ties: which equal entry is the min must not matter
    drop = np.concatenate([sets.shared, np.full((nq, 1), m)], axis=1)
    masked = dy.levels(x, np.broadcast_to(sets.rest[:, None, :], x.shape), FlopCounter())
    dropped = dy.levels(x, None, FlopCounter(), drop)
    for a, b in zip(masked, dropped, strict=True):
        assert np.array_equal(a, b)
    want = sets.rest_min(x, np.arange(nq))
    assert np.array_equal(dy.tier_mins(dropped, FlopCounter()), want)
    assert np.array_equal(dy.tier_mins(dy.levels(x[:, 0], None, FlopCounter(), drop), FlopCounter()), want[:, 0])


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
@pytest.mark.parametrize("seed", [0, 1])
def test_unchanged_groups_keep_their_mixture_counts(dist, seed):
    """A certificate counts again only the groups whose buckets the mixture rechecks touched and
    keeps the others' counts: the same total, group choice and use of the mixture as counting
    every group afresh."""
    model = max_like_model(9, 4, seed, 0.3)
    tab = enclosed_tables(model)
    for m in range(tab.n):
        cert = certified_sets(tab, m, dist, FlopCounter(), pool=RecheckPool(0.05))
        fresh = replace(cert, mix_known=None, mix_changed=None)
        assert cert.count() == fresh.count()
        if cert.use_mix is not None:
            assert np.array_equal(cert.use_mix, fresh.use_mix)


def test_shipped_model_counts_are_kept():
    """The shipped model's certified counts, as before the faster rechecks (uniform and distinct)."""
    model = load("default")
    assert prove(model, "cubic").certified == 16_772_275
    assert prove(model, "cubic", dist="distinct").certified == 15_247_026
