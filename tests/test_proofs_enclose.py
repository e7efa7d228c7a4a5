"""The enclosure code against python-flint ``arb`` balls (an independent exact-enough reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flint import arb, arb_mat, ctx
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.errors import MaxkError
from maxk.flops import FlopCounter
from maxk.model import MaxKTransformer
from maxk.proofs import enclose as E

from .helpers import arb_matrix, arb_tables, random_model

ctx.prec = 300


def _inside(lo: float, x: arb, hi: float) -> bool:
    """lo <= x <= hi certainly (x is a tight arb ball)."""
    return bool(arb(float(lo)) <= x) and bool(x <= arb(float(hi)))


def _check_table(lo: np.ndarray, hi: np.ndarray, exact: arb_mat) -> None:
    for i in range(exact.nrows()):
        for j in range(exact.ncols()):
            assert _inside(lo[i, j], exact[i, j], hi[i, j]), (i, j, lo[i, j], exact[i, j], hi[i, j])


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 6),
    k=st.integers(1, 3),
    heads=st.integers(1, 2),
    d_head=st.sampled_from([1, 2, 3, 5]),
    use_scale=st.booleans(),
    scale=st.sampled_from([0.0, 1.0, 1e3]),
)
def test_enclosure_containsarb_tables(seed, n, k, heads, d_head, use_scale, scale):
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=3, d_head=d_head, n_heads=heads, use_attn_scale=use_scale)
    m = MaxKTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    m.init_weights(g)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    tab = E.enclosed_tables(m)
    ref = arb_tables(m)
    for name in E.IntervalTables.NAMES:
        lo, hi = getattr(tab.lo, name), getattr(tab.hi, name)
        if name == "eupu":
            _check_table(lo, hi, ref[name][0])
        else:
            for h in range(heads):
                _check_table(lo[h], hi[h], ref[name][h])


def test_enclosure_contains_float_tables_and_is_tight():
    m = random_model(n=10, k=4, d_model=16, d_head=8, heads=2, seed=3)
    c = FlopCounter()
    tab = E.enclosed_tables(m, c)
    flt = circuit_tables(m)
    assert c.total > 0
    for name in E.IntervalTables.NAMES:
        lo, hi, x = getattr(tab.lo, name), getattr(tab.hi, name), getattr(flt, name)
        assert lo.shape == x.shape
        assert np.all(lo <= x) and np.all(x <= hi)
        assert np.max(hi - lo) <= 1e-12 * max(1.0, np.abs(x).max())
        assert np.max(hi - lo) > 0  # rounding really is accounted for


def test_enclosure_rejects_overflow():
    m = random_model(n=4, k=2, d_model=4, d_head=2)
    with torch.no_grad():
        m.embed.W_E[0, 0] = float("inf")  # float32 weights cannot overflow float64 tables otherwise
    with pytest.raises(MaxkError, match="NaN or Inf"):
        E.enclosed_tables(m)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7, 32, 48, 1000, 4095])
def test_attn_scale_interval(d):
    cfg = ModelConfig(d_vocab=4, n_ctx=2, d_model=4, d_head=d)
    s = E.attn_scale_interval(cfg)
    exact = arb(1) / arb(d).sqrt()
    assert _inside(s.lo, exact, s.hi)
    assert s.hi - s.lo <= 4 * np.spacing(float(s.lo))
    cfg1 = ModelConfig(d_vocab=4, n_ctx=2, d_model=4, d_head=d, use_attn_scale=False)
    assert E.attn_scale_interval(cfg1).lo == 1.0 == E.attn_scale_interval(cfg1).hi


_floats = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(-1e-300, 1e-300, allow_nan=False),
    st.sampled_from([0.0, 5e-324, -5e-324, 1.0, -1.0, 2.0**-1022, 0.1]),
)


@settings(max_examples=60, deadline=None)
@given(a=_floats, b=_floats, ra=st.floats(0, 10), rb=st.floats(0, 1e-3))
def test_elementwise_ops_contain_arb(a, b, ra, rb):
    A = E.Interval(np.array([a]), np.array([a + ra]))
    B = E.Interval(np.array([b - rb]), np.array([b]))
    Aa = [arb(float(A.lo[0])), arb(float(A.hi[0]))]
    Ba = [arb(float(B.lo[0])), arb(float(B.hi[0]))]
    s, d, p = E.add(A, B), E.sub(A, B), E.mul(A, B)
    for x in Aa:
        for y in Ba:
            assert _inside(s.lo[0], x + y, s.hi[0])
            assert _inside(d.lo[0], x - y, d.hi[0])
            assert _inside(p.lo[0], x * y, p.hi[0])
    if A.lo[0] >= 0:
        lo = E.mul_lower(A.lo, A.hi, B.lo)[0]
        hi = E.mul_upper(A.lo, A.hi, B.hi)[0]
        for x in Aa:
            assert bool(arb(float(lo)) <= x * Ba[0])
            assert bool(x * Ba[1] <= arb(float(hi)))


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-745, 700, allow_nan=False), w=st.floats(0, 1e-6))
def test_exp_contains_arb(x, w):
    iv = E.exp(E.Interval(np.array([x]), np.array([x + w])))
    assert iv.lo[0] >= 0
    assert _inside(iv.lo[0], arb(float(x)).exp(), iv.hi[0])
    assert _inside(iv.lo[0], arb(float(x + w)).exp(), iv.hi[0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), p=st.integers(1, 40), mag=st.sampled_from([1.0, 1e-160, 1e150]))
def test_matmul_contains_arb(seed, p, mag):
    rng = np.random.default_rng(seed)
    a_mid = rng.standard_normal((3, p)) * mag
    b_lo = rng.standard_normal((p, 2))
    b_hi = b_lo + rng.random((p, 2)) * 1e-3
    A, B = E.point(a_mid), E.Interval(b_lo, b_hi)
    c = FlopCounter()
    C = E.matmul(A, B, c)
    assert c.by_label["matmul"] >= 3 * 2 * (2 * p - 1)
    # vertices of B's box: lo and hi corners (the product is linear in each entry of B)
    for corner in (b_lo, b_hi, np.where(rng.random((p, 2)) < 0.5, b_lo, b_hi)):
        _check_table(C.lo, C.hi, arb_matrix(a_mid) * arb_matrix(corner))
    # interval-interval product: vertices of A's box too
    A2 = E.Interval(a_mid, np.nextafter(a_mid + np.abs(a_mid) * 1e-3, np.inf))
    C2 = E.matmul(A2, B)
    for ca in (A2.lo, A2.hi):
        for cb in (b_lo, b_hi):
            _check_table(C2.lo, C2.hi, arb_matrix(ca) * arb_matrix(cb))


def test_matmul_abs_up_and_sum_lower():
    rng = np.random.default_rng(0)
    a, b = rng.random((4, 30)), rng.random((30, 3))
    up = E.matmul_abs_up(a, b)
    _check_table(np.zeros_like(up), up, arb_matrix(a) * arb_matrix(b))
    terms = [rng.standard_normal(5) * 10.0**e for e in (0, 8, -8, 3)]
    lo = E.sum_lower(terms)
    for i in range(5):
        exact = sum((arb(float(t[i])) for t in terms), arb(0))
        assert bool(arb(float(lo[i])) <= exact)


def test_gamma_rejects_huge_dimension():
    assert E.gamma(10) > 10 * 2.0**-53
    with pytest.raises(MaxkError):
        E.gamma(2**50)
