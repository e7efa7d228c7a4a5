"""The prover's choice of rivals (``maxk.proofs.rivals``): each pair's order lists distinct
outputs other than m, prefixes agree, every step is the single removal that lowers the larger
outside column most (against a brute force over every output), the cache returns what a direct
call does, and on a trained model the greedy order certifies more than the EVOU order with the
same number of rivals."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import maxk
from maxk.proofs.enclose import Interval
from maxk.proofs.registry import prove
from maxk.proofs.rivals import RivalCache, greedy_rivals


def _tables(n: int, k: int, seed: int, ties: bool):
    rng = np.random.default_rng(seed)

    def iv(shape, scale=1.0):
        x = rng.normal(size=shape) * scale
        if ties:  # few distinct values: ties between terms' maxima and within rows
            x = np.round(x)
        w = rng.uniform(0, 0.01, size=shape)
        return Interval(x - w, x + w)

    return iv((n, n), 2.0), iv((n, k)), iv((n, n)), iv((n, n))  # eqke, eqkp, evou, eupu


def _pairs(n: int):
    return np.nonzero(np.triu(np.ones((n, n), dtype=bool)))


def _columns(tabs, q: int, m: int, taken: set[int]) -> tuple[float, float]:
    """The outside columns (below m, above m) of pair (q, m) with ``taken`` removed, directly."""
    eqke, eqkp, evou, eupu = ((t.lo + t.hi) / 2 for t in tabs)
    k = eqkp.shape[1]
    sq = eqke[q, q] + eqkp[q, k - 1]
    sm = eqke[q, m] + eqkp[q, : k - 1]
    top = max([sq, *sm])
    wq, wm = np.exp(sq - top), float(np.exp(sm - top).sum())
    rows = [(eupu[q] - eupu[q, m], wq + wm), (evou[q] - evou[q, m], wq), (evou[m] - evou[m, m], wm)]
    out = []
    for side in (range(m), range(m + 1, evou.shape[0])):
        left = [o for o in side if o not in taken]
        out.append(sum(w * max(x[o] for o in left) for x, w in rows) if left else -np.inf)
    return out[0], out[1]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 9), k=st.integers(1, 4), seed=st.integers(0, 10**6), ties=st.booleans())
def test_each_step_is_the_removal_that_lowers_the_larger_column_most(n, k, seed, ties):
    tabs = _tables(n, k, seed, ties)
    qs, ms = _pairs(n)
    R = n + 1  # past the last output: the rest is m
    order = greedy_rivals(*tabs, qs, ms, R)
    assert order.shape == (qs.size, R)
    for row, q, m in zip(order, qs, ms, strict=True):
        real = [int(o) for o in row if o != m]
        assert len(real) == len(set(real)) == n - 1 and m not in real
        assert np.all(row[n - 1 :] == m)  # the pair's outputs run out after n − 1
        taken: set[int] = set()
        for o in real:
            below, above = _columns(tabs, q, m, taken)
            side = range(m) if (below >= above and m > 0) or m == n - 1 else range(m + 1, n)
            options = [x for x in side if x not in taken]
            assert o in options
            after = {x: max(_columns(tabs, q, m, taken | {x})[0 if x < m else 1], -1e300) for x in options}
            assert after[o] <= min(after.values()) + 1e-9 * (1 + abs(min(after.values())))
            taken.add(o)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 10), k=st.integers(1, 4), seed=st.integers(0, 10**6))
def test_prefixes_agree_and_the_cache_returns_the_direct_order(n, k, seed):
    tabs = _tables(n, k, seed, False)
    qs, ms = _pairs(n)
    full = greedy_rivals(*tabs, qs, ms, 5)
    for r in range(6):
        assert np.array_equal(greedy_rivals(*tabs, qs, ms, r), full[:, :r])
    cache = RivalCache(tabs, n)
    half = np.arange(qs.size) % 2 == 0
    assert np.array_equal(cache.get(qs[half], ms[half], 2), full[half, :2])
    assert np.array_equal(cache.get(qs, ms, 5), full)  # grown: the ordered pairs extended, the rest new
    assert np.array_equal(cache.get(qs[::-1], ms[::-1], 3), full[::-1, :3])


def test_the_greedy_order_certifies_more_than_the_evou_order_on_the_shipped_model():
    """Same rival counts, same check; only which outputs are checked one by one differs
    (measured: +81,943, +92,590, +52,733 inputs at r = 1, 2, 4, with 9% to 7% fewer FLOPs)."""
    model = maxk.load("default")
    for r in (1, 2, 4):
        greedy = prove(model, "subcubic-coupled", exact_outputs=r)
        evou = prove(model, "subcubic-coupled", exact_outputs=r, rival_order="evou")
        assert greedy.certified > evou.certified, r
        assert (greedy.flops or 0) < (evou.flops or 0)  # r candidates instead of r + 1
