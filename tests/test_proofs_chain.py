"""``maxk.proofs.chain``: tables as float product chains with one a-priori rounding radius each,
held against arb (random and adversarial weights), and the cheapest order actually taken."""

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
from maxk.proofs import chain as Ch

from .helpers import arb_matrix, arb_tables, random_model

ctx.prec = 300


def _check_inside(iv, exact: arb_mat) -> None:
    for i in range(exact.nrows()):
        for j in range(exact.ncols()):
            x = exact[i, j]
            assert bool(arb(float(iv.lo[i, j])) <= x) and bool(x <= arb(float(iv.hi[i, j]))), (i, j)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 6),
    k=st.integers(1, 3),
    d_head=st.sampled_from([1, 2, 3, 5]),
    use_scale=st.booleans(),
    scale=st.sampled_from([0.0, 1.0, 1e3]),
)
def test_head_tables_contain_arb_tables(seed, n, k, d_head, use_scale, scale):
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=3, d_head=d_head, use_attn_scale=use_scale)
    m = MaxKTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    m.init_weights(g)
    with torch.no_grad():
        for p in m.parameters():  # biases too
            p.add_(torch.randn(p.shape, generator=g) * scale)
    tabs = Ch.head_tables(m)
    ref = arb_tables(m)
    for name in ("eqke", "eqkp", "evou", "pvou", "eupu"):
        _check_inside(getattr(tabs, name), ref[name][0])


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 9),
    k=st.integers(1, 3),
    d_head=st.sampled_from([1, 2, 5]),
    scale=st.sampled_from([0.0, 1.0, 1e3, 1e-150]),
    cut=st.sampled_from([-1e300, -5.0, 0.0, 6.0]),
)
def test_banded_eqke_contains_arb_tables(seed, n, k, d_head, scale, cut):
    """``banded_qk``: the far entries' rank-one bound and the exact entries contain arb's EQKE
    and EQKP, with biases, tiny and huge weights; a cut of −1e300 bounds every entry below the
    diagonal's neighbour (the bound's worst case), 6 what a proof uses."""
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=3, d_head=d_head)
    m = MaxKTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    m.init_weights(g)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (scale if scale > 1e-100 else 1.0))
            if scale < 1e-100:
                p.mul_(1e-150)
    c = FlopCounter()
    tabs = Ch.head_tables(m, c, eqke_cut=cut)
    ref = arb_tables(m)
    for name in ("eqke", "eqkp", "evou", "pvou", "eupu"):
        _check_inside(getattr(tabs, name), ref[name][0])
    assert c.total > 0


def test_banded_eqke_is_exact_near_the_diagonal_and_cheaper_on_a_trained_model():
    """On a max-like model (keys' scores grow with the token) the far entries are bounded, the
    entries from q − 1 on are the chain's (radius ~1e-12), and the tables cost fewer FLOPs; a far
    entry's upper end stays ``cut`` below the row's lowest score at or above q."""
    from .helpers import max_like_model

    m = max_like_model(24, 3, 0, 0.05)
    c_full, c_band = FlopCounter(), FlopCounter()
    full, band = Ch.head_tables(m, c_full), Ch.head_tables(m, c_band, eqke_cut=2.0)
    n = 24
    near = np.arange(n)[None, :] >= np.arange(n)[:, None] - 1
    tol = 1e-9 * np.abs(full.eqke.hi).max()  # the same products, perhaps in another order
    assert np.allclose(band.eqke.lo[near], full.eqke.lo[near], rtol=0, atol=tol)
    assert np.allclose(band.eqkp.hi, full.eqkp.hi, rtol=0, atol=tol)
    far = (band.eqke.hi - band.eqke.lo > 1e-6) & ~near
    assert far.sum() > n  # something was bounded, not computed
    assert np.all(band.eqke.lo[far] <= full.eqke.lo[far]) and np.all(full.eqke.hi[far] <= band.eqke.hi[far])
    lowest = np.where(~np.tril(np.ones((n, n), dtype=bool), -1), full.eqke.lo, np.inf).min(axis=1)
    assert np.all(band.eqke.hi[far] <= np.broadcast_to(lowest[:, None], (n, n))[far])
    assert c_band.by_label["matmul"] < c_full.by_label["matmul"]


def test_head_tables_are_tight_and_counted():
    m = random_model(n=12, k=4, d_model=16, d_head=8, seed=2)
    c = FlopCounter()
    tabs = Ch.head_tables(m, c)
    flt = circuit_tables(m)
    assert c.by_label["matmul"] > 0 and c.by_label["chain enclosure"] > 0
    for name in ("eqke", "eqkp", "evou", "pvou"):
        iv, x = getattr(tabs, name), getattr(flt, name)[0]
        assert np.all(iv.lo <= x) and np.all(x <= iv.hi)
        assert 0 < np.max(iv.hi - iv.lo) <= 1e-9 * max(1.0, np.abs(x).max())
    assert np.all(tabs.eupu.lo <= flt.eupu) and np.all(flt.eupu <= tabs.eupu.hi)


def test_value_bound_bounds_every_value_table_entry():
    for seed, scale in ((0, 1.0), (1, 30.0), (2, 1e-3)):
        m = random_model(n=9, k=3, d_model=6, d_head=3, seed=seed, scale=scale)
        tabs = Ch.head_tables(m)
        mags = [max(np.abs(x.lo).max(), np.abs(x.hi).max()) for x in (tabs.evou, tabs.pvou, tabs.eupu)]
        assert sum(mags) <= tabs.value_bound < np.inf


@pytest.mark.parametrize(
    "factors",
    [
        # exact cancellation: the float product is 0 or far off, the radius must cover it
        [np.array([[1e12, 1.0, -1e12]]), np.array([[1.0], [1.0], [1.0]])],
        [np.array([[1e16, 1.0, -1e16, 3.0]]), np.ones((4, 2)), np.array([[1.0, -1.0], [1e-3, 2.0]])],
        # subnormal range
        [np.full((2, 3), 1e-160), np.full((3, 2), 1e-160)],
        [np.full((2, 3), 2.0**-1070), np.full((3, 2), 0.5), np.full((2, 1), 3.0)],
        # rank one, zero, mixed scales
        [np.outer([1.0, 2.0], [3.0, -1.0, 0.5]), np.outer([1.0, -2.0, 1e8], [1.0, 1.0])],
        [np.zeros((3, 2)), np.ones((2, 3))],
    ],
)
def test_chain_enclosure_contains_the_exact_product(factors):
    iv = Ch.chain_enclosure(factors, [0.0] * len(factors), FlopCounter())
    exact = arb_matrix(factors[0])
    for x in factors[1:]:
        exact = exact * arb_matrix(x)
    _check_inside(iv, exact)


def test_chain_enclosure_covers_a_relative_error_in_a_factor():
    """A factor known only to within rel·|x| (here x·(1 + rel) stands for x): still enclosed."""
    rel = 1e-6
    a, b = np.array([[1.0, 2.0], [3.0, -4.0]]), np.array([[0.5, 1.5], [-2.0, 1.0]])
    iv = Ch.chain_enclosure([a * (1 + rel), b], [rel * 1.01, 0.0], FlopCounter())
    _check_inside(iv, arb_matrix(a) * arb_matrix(b))


def test_the_cheapest_order_is_taken():
    """[100, 2] @ [2, 100] @ [100, 1]: right first costs 698 operations, left first 30000 (plus
    ~900 for the norms either way)."""
    rng = np.random.default_rng(0)
    f = [rng.normal(size=(100, 2)), rng.normal(size=(2, 100)), rng.normal(size=(100, 1))]
    c = FlopCounter()
    Ch.chain_enclosure(f, [0.0] * 3, c)
    assert 2 * 199 + 100 * 3 <= c.by_label["matmul"] < 3000


def test_bad_chains_are_refused_clearly():
    with pytest.raises(MaxkError, match="at least two factors"):
        Ch.chain_enclosure([np.ones((2, 2))], [0.0], FlopCounter())
    with pytest.raises(MaxkError, match="overflows"):
        Ch.chain_enclosure([np.full((2, 2), 1e200), np.full((2, 2), 1e200)], [0.0, 0.0], FlopCounter())
    m = random_model(n=4, k=2, d_model=4, d_head=2)
    with torch.no_grad():
        m.embed.W_E[0, 0] = float("nan")
    with pytest.raises(MaxkError, match="NaN"):
        Ch.head_tables(m)
