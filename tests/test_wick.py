"""Wick propagation of the cumulant explanation: the mean identity over every input, each row's
moments and expansion against enumeration and autograd, exactness where the expansion is exact,
the per-position split, and the API."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import maxk
from maxk.circuits import CircuitTables, circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import get_distribution
from maxk.errors import MaxkError
from maxk.estimators.registry import estimate
from maxk.exact import evaluate
from maxk.flops import FlopCounter
from maxk.wick_propagation import WickExplanation, WickValues, explain, wick
from maxk.wick_propagation.terms import pair_expectations

from .helpers import max_like_model, random_model


@functools.cache
def _trained() -> CircuitTables:
    return circuit_tables(maxk.train(ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=8), seed=0, steps=300))


MODELS = {
    "random": lambda: circuit_tables(random_model(n=8, k=3, seed=1)),
    "random-2-heads": lambda: circuit_tables(random_model(n=7, k=4, heads=2, seed=2)),
    "max-like-noised": lambda: circuit_tables(max_like_model(10, 4, seed=0, noise=0.3)),
    "trained": _trained,
}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------- the mean identity


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
@pytest.mark.parametrize("max_heavy", [12, 0])
def test_mean_of_wick_is_the_estimate(model, dist, max_heavy):
    tab = MODELS[model]()
    w = wick(tab, dist, max_heavy=max_heavy)
    assert w.exhaustive and w.n_inputs == get_distribution(dist).n_sequences(tab.n, tab.k)
    est = estimate(tab, "cumulant", dist, max_heavy=max_heavy).estimate
    est1 = estimate(tab, "cumulant", dist, max_heavy=max_heavy, order=1).estimate
    # bit-identical to the estimator's generic heavy path, and to its default (vectorised) path
    # up to that path's rounding
    assert w.estimate == estimate(tab, "cumulant", dist, max_heavy=max_heavy, heavy_path="generic").estimate
    assert _rel(w.estimate, est) < 1e-11
    assert w.estimate_first == est1
    assert _rel(w.mean_wick, est) < 1e-9
    assert _rel(float((w.weight * w.wick_first).sum()), est1) < 1e-9
    assert np.array_equal(w.wick, w.constant + w.first + w.second)
    ev = evaluate(tab, dist)
    assert abs(float((w.weight * w.soft).sum()) - ev.soft_accuracy) < 1e-12
    assert int(w.correct.sum()) == ev.correct


@pytest.mark.parametrize(
    "options",
    [dict(readout="taylor"), dict(heavy_order=2), dict(order=1), dict(tau=0.5, max_heavy=2), dict(prune_mass=0.5)],
)
def test_mean_identity_with_options(options):
    tab = MODELS["max-like-noised"]()
    for dist in ("uniform", "distinct"):
        w = wick(tab, dist, **options)
        est = estimate(tab, "cumulant", dist, **options).estimate
        assert _rel(w.mean_wick, est) < 1e-9
        if options.get("order") == 1:
            assert np.array_equal(w.wick, w.wick_first) and not w.second.any()


def test_uncovered_inputs_keep_the_identity():
    # uniform, k − 1 = 9 > 8: only patterns of at most 2 copies of the max are strata; and inputs
    # holding two copies of their heaviest heavy token are in no heavy sub-stratum
    tab = circuit_tables(max_like_model(3, 10, seed=1, noise=0.4))
    w = wick(tab, "uniform", tau=0.01)
    est = estimate(tab, "cumulant", "uniform", tau=0.01).estimate
    un = w.stratum < 0
    assert un.any() and (w.first[un] == 0).all() and (w.second[un] == 0).all()
    assert _rel(w.mean_wick, est) < 1e-9
    tab = MODELS["max-like-noised"]()
    w = wick(tab, "uniform")
    ex = explain(tab, "uniform")
    un = np.nonzero(w.stratum < 0)[0]
    assert len(un)
    x = w.inputs[un].astype(np.int64)
    from maxk.wick_propagation.rows import RowIndex, assign

    _, base = assign(RowIndex.of(ex.rows), torch.from_numpy(x))
    assert (base.numpy() >= 0).all()  # two copies of the heaviest heavy token: the parent's estimate
    assert np.allclose(w.wick[un], ex.parent[0][base.numpy()], rtol=0, atol=1e-15)


# ---------------------------------------------------------------- each row against enumeration


def _wires(tab: CircuitTables, xs: np.ndarray) -> np.ndarray:
    """y(x) [N, H·(n + 1)]: per head (D_h, N_h) with the estimator's normalisation."""
    q = xs[:, -1]
    out = []
    for h in range(tab.n_heads):
        al = np.exp(tab.eqkp[h] - tab.eqkp[h].max(1, keepdims=True))[q]  # [N, k]
        be = np.exp(tab.eqke[h] - tab.eqke[h].max(1, keepdims=True))
        w = al * be[q[:, None], xs]
        N = np.einsum("xi,xio->xo", w, tab.evou[h][xs] + tab.pvou[h][None])
        out += [w.sum(1, keepdims=True), N]
    return np.concatenate(out, 1)


def _g(tab: CircuitTables, q: int, m: int):
    """g(y) = softmax(EUPU[q] + Σ_h N_h/D_h)[m] as a torch function of y [H·(n + 1)]."""
    n, H = tab.n, tab.n_heads
    U = torch.as_tensor(tab.eupu[q])

    def g(y):
        L = U.clone()
        for h in range(H):
            blk = y[h * (n + 1) : (h + 1) * (n + 1)]
            L = L + blk[1:] / blk[0]
        return torch.softmax(L, 0)[m]

    return g


@pytest.mark.parametrize("model", ["random-2-heads", "max-like-noised", "trained"])
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_each_row_against_enumeration_and_autograd(model, dist):
    """μ_s and tr(H_s Σ_s) against the row's enumerated inputs (dense Hessian by autograd), and the
    per-input terms against the dense Taylor terms: with g replaced by its own quadratic Taylor
    polynomial g̃ at μ_s, g(μ_s) + ½ tr(HΣ) + first + second = g̃(y(x)) on every input."""
    tab = MODELS[model]()
    ex = explain(tab, dist)
    X = get_distribution(dist).enumerate(tab.n, tab.k)
    v = ex.values(X)
    pc, st = ex.pieces, ex.rows.st
    norm = [tab.eqke[h].max(1) + tab.eqkp[h].max(1) for h in range(tab.n_heads)]
    worst = dict(mu=0.0, trace=0.0, terms=0.0, w_mean=0.0)
    for s in np.unique(v["stratum"][v["stratum"] >= 0]):
        idx = v["stratum"] == s
        xs = X[idx]
        q, m = int(st["q"][s]), int(st["m"][s])
        assert (xs[:, -1] == q).all() and (xs.max(1) == m).all()
        y = _wires(tab, xs)
        mu = y.mean(0)
        mu_pc = []
        for h in range(tab.n_heads):
            muD = np.exp(pc.ell[h, s] - norm[h][q])
            r = pc.R[h, s] - (tab.eupu[q] if h == 0 else 0.0)
            mu_pc += [[muD], r * muD]
        mu_pc = np.concatenate(mu_pc)
        worst["mu"] = max(worst["mu"], float(np.abs(mu - mu_pc).max() / np.abs(mu).max()))
        g = _g(tab, q, m)
        mt = torch.as_tensor(mu)
        grad = torch.autograd.functional.jacobian(g, mt).numpy()
        H = torch.autograd.functional.hessian(g, mt).numpy()
        dy = y - mu
        cov = dy.T @ dy / len(xs)
        tr = float(np.sum(H * cov))
        first = dy @ grad
        if pc.order[s] == 2:
            worst["trace"] = max(worst["trace"], abs(tr - pc.trace[s]))
            quad = np.einsum("xa,ab,xb->x", dy, H, dy)
            g2 = float(g(mt)) + first + 0.5 * quad  # the quadratic Taylor polynomial g̃(y(x))
            mine = pc.est1[s] + 0.5 * pc.trace[s] + v["first"][idx] + v["second"][idx]
            worst["terms"] = max(worst["terms"], float(np.abs(mine - g2).max()))
        else:
            assert (v["second"][idx] == 0).all()
            worst["terms"] = max(worst["terms"], float(np.abs(v["first"][idx] - first).max()))
        worst["w_mean"] = max(worst["w_mean"], abs(float(v["wick"][idx].mean()) - pc.est[s]))
    # (the trace is exact up to the rounding of the estimator's prefix-sum population moments)
    assert worst["mu"] < 1e-9 and worst["trace"] < 1e-10 and worst["terms"] < 1e-10 and worst["w_mean"] < 1e-12, worst


def test_deterministic_rows_are_exact():
    # distinct, k = 2: with q < m the input is (m, q), fixed: W = f exactly there
    tab = circuit_tables(random_model(n=9, k=2, seed=3))
    w = wick(tab, "distinct")
    fixed = w.inputs[:, 0] > w.inputs[:, 1]
    assert np.allclose(w.wick[fixed], w.soft[fixed], rtol=0, atol=1e-14)
    assert np.abs(w.first[fixed]).max() < 1e-14 and np.abs(w.second[fixed]).max() < 1e-28


def _scaled(tab: CircuitTables, eps: float) -> CircuitTables:
    """The tables with every token-dependent part scaled by eps around its token mean."""
    ev = tab.evou.mean(1, keepdims=True) + eps * (tab.evou - tab.evou.mean(1, keepdims=True))
    return CircuitTables(tab.cfg, eps * tab.eqke, tab.eqkp, ev, tab.pvou, tab.eupu)


def test_residual_shrinks_on_near_deterministic_rows():
    # wire deviations O(ε): f − W = O(ε³) (the Taylor series in the wires truncated after second
    # order; the Gaussian read-out's closure is O(ε⁴)), f − W1 = O(ε²). (With logit deviations of
    # order one the second-order term need not help: measured, at ε = 0.1 here W is worse than W1.)
    base = circuit_tables(random_model(n=8, k=4, seed=5, scale=1.0))
    res, res1 = [], []
    for eps in (0.02, 0.01, 0.005):
        for dist in ("uniform", "distinct"):
            w = wick(_scaled(base, eps), dist, max_heavy=0)
            res.append(float(np.abs(w.soft - w.wick).mean()))
            res1.append(float(np.abs(w.soft - w.wick_first).mean()))
    for i in range(2, 6):
        assert res[i] < res[i - 2] / 6 and res1[i] > res1[i - 2] / 5
    assert all(a < b for a, b in zip(res, res1, strict=True)) and res[-1] < res1[-1] / 5


# ---------------------------------------------------------------- per-position terms


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_terms_sum_to_first_and_second(dist):
    tab = MODELS["random-2-heads"]()
    ex = explain(tab, dist, max_heavy=2, tau=0.3)
    X = get_distribution(dist).enumerate(tab.n, tab.k)
    X = X[np.random.default_rng(0).choice(len(X), 30, replace=False)]
    v = ex.values(X)
    for i, tl in enumerate(ex.terms(X)):
        first = sum(val for name, val in tl if "×" not in name)
        second = sum(val for name, val in tl if "×" in name)
        assert first == pytest.approx(v["first"][i], abs=1e-13)
        assert second == pytest.approx(v["second"][i], abs=1e-13)
        assert all(abs(a[1]) >= abs(b[1]) for a, b in zip(tl, tl[1:], strict=False))
        s = v["stratum"][i]
        if s >= 0 and ex.pieces.order[s] == 2:  # the pair expectations add up to tr(HΣ)
            assert pair_expectations(ex, X[i], s) == pytest.approx(ex.pieces.trace[s], abs=1e-13)


# ---------------------------------------------------------------- API


@pytest.mark.parametrize("model", ["random-2-heads", "max-like-noised"])
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_exhaustive_path_agrees_with_generic(model, dist):
    tab = MODELS[model]()
    ex = explain(tab, dist)
    w = wick(tab, dist)  # every input: the prefix-sharing path
    assert np.array_equal(w.inputs, get_distribution(dist).enumerate(tab.n, tab.k))
    v = ex.values(w.inputs)  # the generic path
    for name in ("wick", "wick_first", "soft", "constant", "first", "second"):
        assert np.allclose(v[name], getattr(w, name), rtol=0, atol=1e-13), name
    assert np.array_equal(v["correct"], w.correct) and np.array_equal(v["stratum"], w.stratum)


def test_api():
    tab = MODELS["max-like-noised"]()
    ex = explain(tab, "uniform")
    assert isinstance(ex, WickExplanation)
    w = wick(tab, "uniform")
    assert w.inputs.dtype == np.int16 and w.stratum.dtype == np.int32 and w.weight[0] == 1 / w.n_inputs
    s = wick(tab, "distinct", samples=500, seed=3)
    assert isinstance(s, WickValues) and not s.exhaustive and s.n_inputs == 500
    assert s.weight.sum() == pytest.approx(1.0)
    assert np.array_equal(s.inputs, wick(tab, "distinct", samples=500, seed=3).inputs)
    g = wick(tab, "uniform", inputs=w.inputs[:7])
    assert np.allclose(g.wick, w.wick[:7], rtol=0, atol=1e-13) and g.n_inputs == 7
    c = FlopCounter()
    explain(tab, "uniform", counter=c)
    ex.values(w.inputs[:100], counter=c)
    assert c.total > 0 and w.flops > 0 and w.seconds > 0
    with pytest.raises(MaxkError):
        wick(tab, "uniform", inputs=np.array([[0, 1, 2, 10]]))
    with pytest.raises(MaxkError):
        explain(tab, "uniform", readout="nope")
    with pytest.raises(MaxkError):
        wick(tab, "uniform", bins=3)


# ---------------------------------------------------------------- the fast paths against the plain ones


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_fast_paths_agree_with_the_plain_ones(model, dist, monkeypatch):
    """Every input, on one and two heads, random, noised and trained models: the prefix-sharing
    kernel (blocks shared among worker threads, token columns broadcast, uncovered inputs patched
    one by one) bit-identical to itself in one thread and equal to the generic per-input path."""
    from maxk.wick_propagation import exhaustive

    tab = MODELS[model]()
    monkeypatch.setattr(exhaustive, "_TILE", 2 * tab.n * tab.n)  # many blocks of two tuples each
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        w = wick(tab, dist)
        torch.set_num_threads(1)
        w1 = wick(tab, dist)
    finally:
        torch.set_num_threads(before)
    assert w.estimate == w1.estimate and w.estimate_first == w1.estimate_first
    assert np.array_equal(w.explanation.pieces.trace, w1.explanation.pieces.trace)
    for name in ("inputs", "wick", "wick_first", "soft", "correct", "stratum", "constant", "first", "second"):
        assert np.array_equal(getattr(w, name), getattr(w1, name)), name
    assert np.array_equal(w.inputs, get_distribution(dist).enumerate(tab.n, tab.k))
    v = w.explanation.values(w.inputs)  # the generic path: a forward pass per input
    for name in ("wick", "wick_first", "soft", "constant", "first", "second"):
        assert np.allclose(v[name], getattr(w, name), rtol=0, atol=1e-13), name
    assert np.array_equal(v["correct"], w.correct) and np.array_equal(v["stratum"], w.stratum)
    un = w.stratum < 0
    assert np.array_equal(w.wick[un], w.constant[un]) and not w.first[un].any() and not w.second[un].any()


def test_assign_columns_is_assign():
    from maxk.wick_propagation.rows import RowIndex, assign, assign_columns

    tab = MODELS["max-like-noised"]()
    for dist in ("uniform", "distinct"):
        ex = explain(tab, dist, max_heavy=3, tau=0.2)
        ix = RowIndex.of(ex.rows)
        x = torch.from_numpy(get_distribution("uniform").enumerate(tab.n, tab.k).astype(np.int64))
        row, base = assign(ix, x)
        cols = [c.contiguous() for c in x.T]
        for m in (None, x.amax(1)):
            r2, b2 = assign_columns(ix, cols, m)
            assert torch.equal(row, r2) and torch.equal(base, b2)
        assert (row >= 0).any() and (row < 0).any()
