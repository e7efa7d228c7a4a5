"""Covariance (cumulant) propagation: the propagation rules against closed forms, the exact
per-stratum moments against enumeration, and the estimator against exact truth."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from maxk.circuits import CircuitTables
from maxk.config import ModelConfig
from maxk.distributions import DISTINCT, get_distribution
from maxk.errors import MaxkError
from maxk.estimators.cumulant import (
    cumulant_propagation,
    expected_softmax,
    heavy,
    logits,
    populations,
    strata,
    stratum_moments,
)
from maxk.estimators.registry import ESTIMATORS, estimate
from maxk.exact import evaluate
from maxk.flops import FlopCounter
from maxk.torch_threads import single_threaded

from .moments_engine import Moments


def _random_tables(n, k, H=1, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=4, d_head=4, n_heads=H)
    return CircuitTables(
        cfg,
        scale * 2 * rng.normal(size=(H, n, n)),
        scale * rng.normal(size=(H, n, k)),
        scale * rng.normal(size=(H, n, n)),
        scale * rng.normal(size=(H, k, n)),
        scale * rng.normal(size=(n, n)),
    )


# ---------------------------------------------------------------- propagation rules


def test_linear_sum_exact():
    mom = Moments.independent([1.0, -2.0, 0.5], [0.3, 2.0, 1.5])
    out = mom.linear([[1, 1, 1], [2, 0, -1]], [0.5, 0.0])
    assert np.allclose(out.mean, [0.0, 1.5])
    assert np.allclose(out.cov, [[3.8, 0.6 - 1.5], [0.6 - 1.5, 4 * 0.3 + 1.5]])


def test_product_of_independent_exact_for_any_law():
    # x uniform on {0, 3} and y exponential-like discrete law: Var(xy) = μx²σy² + μy²σx² + σx²σy²
    mx, vx, my, vy = 1.5, 2.25, -0.7, 0.4
    out = Moments.independent([mx, my], [vx, vy]).products([(0, 1), (0, 0)])
    assert out.mean[0] == pytest.approx(mx * my)
    assert out.cov[0, 0] == pytest.approx(mx**2 * vy + my**2 * vx + vx * vy)
    # E[x²] exact for any law
    assert out.mean[1] == pytest.approx(mx**2 + vx)
    # check against enumeration of a concrete independent pair with these moments
    xs = np.array([0.0, 3.0])  # equally likely
    ys = np.array([my - np.sqrt(vy), my + np.sqrt(vy)])
    prod = (xs[:, None] * ys[None, :]).ravel()
    assert prod.mean() == pytest.approx(out.mean[0])
    assert prod.var() == pytest.approx(out.cov[0, 0])


def test_products_of_gaussians_match_isserlis():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 3))
    C = A @ A.T + 0.5 * np.eye(3)
    mu = np.array([0.3, -1.0, 2.0])
    out = Moments(mu, C).products([(0, 1), (1, 2), (0, 2)])
    x = rng.multivariate_normal(mu, C, size=400_000)
    z = np.stack([x[:, 0] * x[:, 1], x[:, 1] * x[:, 2], x[:, 0] * x[:, 2]], axis=1)
    assert np.allclose(out.mean, z.mean(0), atol=0.03)
    assert np.allclose(out.cov, np.cov(z.T), rtol=0.05, atol=0.1)


def test_quadratic_form_of_independent_gaussians_closed_form():
    # x ~ N(0, I_d): xᵀx is chi-square(d): mean d, variance 2d
    d = 5
    mean, var = Moments.independent(np.zeros(d), np.ones(d)).quadratic_form(np.eye(d))
    assert mean == pytest.approx(d)
    assert var == pytest.approx(2 * d)
    # noncentral: x ~ N(μ, σ² I): mean Σμ² + dσ², variance 2dσ⁴ + 4σ²Σμ²
    mu = np.array([1.0, -2.0, 0.0, 0.5, 3.0])
    s2 = 0.7
    mean, var = Moments.independent(mu, np.full(d, s2)).quadratic_form(np.eye(d))
    assert mean == pytest.approx(mu @ mu + d * s2)
    assert var == pytest.approx(2 * d * s2**2 + 4 * s2 * mu @ mu)


def test_exp_lognormal_identities():
    mom = Moments(np.array([0.2, -0.5]), np.array([[0.3, 0.1], [0.1, 0.2]]))
    out = mom.exp()
    assert out.mean[0] == pytest.approx(np.exp(0.2 + 0.15))
    assert out.cov[0, 1] == pytest.approx(out.mean[0] * out.mean[1] * np.expm1(0.1))


def test_ratio_second_order_small_noise():
    rng = np.random.default_rng(2)
    mu = np.array([2.0, 5.0])
    C = np.array([[0.01, 0.004], [0.004, 0.02]])
    mean, var = Moments(mu, C).ratio(0, 1)
    x = rng.multivariate_normal(mu, C, size=2_000_000)
    r = x[:, 0] / x[:, 1]
    se = r.std() / np.sqrt(len(r))  # ≈ 1.5e-5
    assert abs(mean - r.mean()) < 4 * se
    assert abs(mu[0] / mu[1] - r.mean()) > 8 * se  # the second-order term is needed
    assert var == pytest.approx(r.var(), rel=0.03)


def test_expected_softmax_degenerate_and_gaussian():
    mean = np.array([2.0, 0.0, -1.0])
    p = np.exp(mean) / np.exp(mean).sum()
    zero = np.zeros((3, 3))
    for ro in ("gauss", "taylor"):
        assert expected_softmax(mean, zero, 0, ro) == pytest.approx(p[0])
    rng = np.random.default_rng(3)
    C = 0.05 * np.eye(3)
    x = rng.multivariate_normal(mean, C, size=400_000)
    sm = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    for ro in ("gauss", "taylor"):
        assert expected_softmax(mean, C, 0, ro) == pytest.approx(sm[:, 0].mean(), abs=1e-3)


# ---------------------------------------------------------------- exact stratum moments


@pytest.mark.parametrize("dist", ["distinct", "uniform"])
@pytest.mark.parametrize("max_heavy", [0, 2])
def test_stratum_moments_exact_by_enumeration(dist, max_heavy):
    n, k = 7, 4
    tab = _random_tables(n, k, seed=4)
    st, heads = stratum_moments(tab, dist, max_heavy=max_heavy, tau=0.3)
    assert st["weight"].sum() == pytest.approx(1.0)
    beta = np.exp(tab.eqke - tab.eqke.max(2, keepdims=True))
    alpha = np.exp(tab.eqkp - tab.eqkp.max(2, keepdims=True))
    h = heads[0]
    worst = 0.0
    for s in range(len(st["m"])):
        q = st["q"][s]
        xs = _enumerate_stratum(tab, st, s, dist)  # [inputs, k]
        w = alpha[0, q][None, :] * beta[0, q][xs]
        D = w.sum(1)
        N = np.einsum("bi,bin->bn", w, tab.evou[0][xs] + tab.pvou[0][None])
        errs = [
            D.mean() - h["mu_D"][s],
            D.var() - h["var_D"][s],
            N.mean(0) - h["mu_N"][s],
            ((N - N.mean(0)) * (D - D.mean())[:, None]).mean(0) - h["cov_ND"][s],
            N.var(0) - h["var_N"][s],
        ]
        worst = max(worst, max(float(np.abs(e).max()) for e in errs))
    assert worst < 1e-12


def test_strata_weights_are_the_distribution():
    for dist in ("distinct", "uniform"):
        st, _ = stratum_moments(_random_tables(6, 3, seed=5), dist)
        w_m = np.bincount(st["m"], weights=st["weight"], minlength=6)
        assert np.allclose(w_m, get_distribution(dist).max_weights(6, 3))


# ---------------------------------------------------------------- the estimator


def _max_model(n, k, H=1, lam=20.0, gamma=3.0, pos=None):
    """Attention entirely on the max (score λ·t: the next token gets e^-λ of its weight),
    EVOU = γ·identity: logits = γ e_m (plus
    PVOU of the max's position if given), so the soft accuracy has a closed form."""
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=4, d_head=4, n_heads=H)
    eqke = np.tile(lam * np.arange(n)[None, :], (n, 1))[None].repeat(H, 0)
    pv = np.zeros((H, k, n)) if pos is None else np.asarray(pos, dtype=np.float64)[None]
    return CircuitTables(cfg, eqke, np.zeros((H, n, k)), gamma * np.eye(n)[None].repeat(H, 0), pv, np.zeros((n, n)))


def test_closed_form_attention_on_max_distinct():
    n, k, g = 16, 5, 3.0
    tab = _max_model(n, k, gamma=g)
    closed = np.exp(g) / (np.exp(g) + n - 1)
    for ro in ("gauss", "taylor"):
        res = cumulant_propagation(tab, "distinct", readout=ro)
        assert res["estimate"] == pytest.approx(closed, abs=1e-7)


def test_closed_form_positional_values_distinct():
    # logits = γ e_m + PVOU[position of the max]; under distinct the max is at each position with
    # probability 1/k, so soft accuracy = mean_i softmax(γ e_m + p_i)_m, the same for every m.
    n, k, g = 16, 4, 2.0
    rng = np.random.default_rng(6)
    pos = rng.normal(size=(k, n))
    tab = _max_model(n, k, gamma=g, pos=pos)
    vals = []
    for m in range(k - 1, n):
        for i in range(k):
            lg = g * np.eye(n)[m] + pos[i]
            vals.append(np.exp(lg[m]) / np.exp(lg).sum())
    w = DISTINCT.max_weights(n, k)[k - 1 :]
    closed = float(np.array(vals).reshape(-1, k).mean(1) @ w)
    assert cumulant_propagation(tab, "distinct")["estimate"] == pytest.approx(closed, abs=1e-7)
    assert evaluate(tab, "distinct").soft_accuracy == pytest.approx(closed, abs=1e-7)


def test_near_exact_on_small_random_models():
    # covariance propagation with heavy-token conditioning against exhaustive truth
    for seed, dist in ((7, "uniform"), (8, "distinct")):
        tab = _random_tables(10, 4, seed=seed, scale=0.7)
        truth = evaluate(tab, dist).soft_accuracy
        res = cumulant_propagation(tab, dist)
        assert abs(res["estimate"] - truth) < 0.01, (seed, res["estimate"], truth)
        # second order is no worse than the bare mean-field value of the unconditioned strata
        plain = cumulant_propagation(tab, dist, max_heavy=0, order=1)
        assert abs(res["estimate"] - truth) <= abs(plain["estimate"] - truth) + 1e-3


def test_registry_and_options():
    assert "cumulant" in ESTIMATORS
    tab = _max_model(12, 3)
    e = estimate(tab, "cumulant", "distinct")
    assert e.method == "cumulant" and e.flops > 0 and e.seconds >= 0
    assert e.details["order"] == 2 and "second_order_correction" in e.details
    e1 = estimate(tab, "cumulant", "uniform", order=1)
    assert e1.details["second_order_correction"] == 0.0
    with pytest.raises(MaxkError):
        estimate(tab, "cumulant", "uniform", readout="nope")
    with pytest.raises(MaxkError):
        estimate(tab, "cumulant", "uniform", order=3)
    with pytest.raises(MaxkError):
        estimate(tab, "cumulant", "uniform", max_heavy=-1)
    # the experiment switches are declared options, validated
    opts = ESTIMATORS.get("cumulant").options
    assert opts["heavy_path"] == "vectorised" and opts["ratio_correction"] is True and opts["lse_correction"] is True
    for bad in ({"heavy_path": "fast"}, {"heavy_path": 1}, {"ratio_correction": "yes"}, {"lse_correction": 0}):
        with pytest.raises(MaxkError) as err:
            estimate(tab, "cumulant", "distinct", **bad)
        assert "\n" not in str(err.value)
    base = estimate(tab, "cumulant", "distinct").estimate
    assert estimate(tab, "cumulant", "distinct", heavy_path="generic").estimate == pytest.approx(base, abs=1e-12)


def test_correction_switches():
    # each second-order mean correction can be switched off on its own, and changes the estimate;
    # a switch does nothing where its correction is not formed
    tab = _random_tables(10, 4, seed=7, scale=0.7)
    full = cumulant_propagation(tab, "uniform")["estimate"]
    no_ratio = cumulant_propagation(tab, "uniform", ratio_correction=False)["estimate"]
    no_lse = cumulant_propagation(tab, "uniform", lse_correction=False)["estimate"]
    assert abs(full - no_ratio) > 1e-9 and abs(full - no_lse) > 1e-9
    # the Taylor read-out has no logsumexp correction
    taylor = cumulant_propagation(tab, "uniform", readout="taylor")["estimate"]
    assert cumulant_propagation(tab, "uniform", readout="taylor", lse_correction=False)["estimate"] == taylor
    # mean propagation uses neither
    first = cumulant_propagation(tab, "uniform", order=1)["estimate"]
    off = cumulant_propagation(tab, "uniform", order=1, ratio_correction=False, lse_correction=False)
    assert off["estimate"] == first


def test_multi_head_runs_and_matches_truth_roughly():
    tab = _random_tables(8, 3, H=2, seed=9, scale=0.5)
    for dist in ("uniform", "distinct"):
        truth = evaluate(tab, dist).soft_accuracy
        assert abs(cumulant_propagation(tab, dist)["estimate"] - truth) < 0.01


@pytest.mark.slow
def test_shipped_model_k4_uniform():
    from maxk import checkpoint, circuit_tables

    tab = circuit_tables(checkpoint.load("default"))
    truth = evaluate(tab, "uniform").soft_accuracy
    assert abs(cumulant_propagation(tab, "uniform")["estimate"] - truth) < 0.001


def test_vectorised_heavy_path_matches_generic():
    for dist in ("distinct", "uniform"):
        tab = _random_tables(12, 4, seed=10, scale=1.0)
        fast = cumulant_propagation(tab, dist, tau=0.1, max_heavy=3)["estimate"]
        assert cumulant_propagation(tab, dist, tau=0.1, max_heavy=3, heavy_path="vectorised")["estimate"] == fast
        slow = cumulant_propagation(tab, dist, tau=0.1, max_heavy=3, heavy_path="generic")["estimate"]
        assert fast == pytest.approx(slow, abs=1e-12)
        # and the split matters on this model (the test would catch a path that ignores it)
        assert abs(fast - cumulant_propagation(tab, dist, max_heavy=0)["estimate"]) > 1e-4


# ---------------------------------------------------------------- linearised logit covariance


def _enumerate_stratum(tab, st, s, dist):
    """All inputs of stratum s (its population drawn into the random positions) as an array."""
    k = tab.k
    m, q = st["m"][s], st["q"][s]
    pos = [i for i in range(k) if st["rest"][s][i]]
    pop = [t for t in range(m) if t not in st["removed"][s]]
    draws = itertools.permutations(pop, len(pos)) if dist == "distinct" else itertools.product(pop, repeat=len(pos))
    xs = []
    for c in draws:
        x = np.full(k, -1)
        x[k - 1] = q
        x[st["fixm"][s] > 0] = m
        if "fixh_tok" in st and st["fixh_tok"][s] >= 0:
            x[st["fixh_pos"][s]] = st["fixh_tok"][s]
        x[pos] = c
        xs.append(x)
    xs = np.array(xs)
    assert (xs >= 0).all()
    return xs


@pytest.mark.parametrize("dist", ["distinct", "uniform"])
def test_linearised_logit_covariance_exact_by_enumeration(dist):
    # δL = Σ_h (N_h − r_h D_h)/μ_Dh is linear in (N, D), so its covariance is exact: the diagonal
    # var_L and both quadratic forms of the read-out (a = p and a = e_m − p, which share one product)
    n, k, H = 7, 4, 2
    tab = _random_tables(n, k, H=H, seed=11)
    c = FlopCounter()
    T = populations._Tables(tab, c)
    st, _ = strata._strata(n, k, dist, None)
    st = strata._refine(T, st, dist, 0.3, 2, c)  # includes "heavy token h at J" sub-strata
    with single_threaded():
        mom = populations._block_moments(T, st, c)
        _, r = logits._logit_mean(T, st, mom, 2, c, ratio_correction=True)
        var_L, quad2 = logits._logit_cov(T, st, mom, r, c)
        p = np.random.default_rng(12).dirichlet(np.ones(n), size=len(st["m"]))
        q_a, q_p = quad2(p)
    beta = np.exp(tab.eqke - tab.eqke.max(2, keepdims=True))
    alpha = np.exp(tab.eqkp - tab.eqkp.max(2, keepdims=True))
    worst = 0.0
    for s in range(len(st["m"])):
        xs = _enumerate_stratum(tab, st, s, dist)
        q, m = st["q"][s], st["m"][s]
        dl = np.zeros((len(xs), n))
        for h in range(H):
            wgt = alpha[h, q][None] * beta[h, q][xs]  # [inputs, k]
            D = wgt.sum(1)
            N = np.einsum("xi,xio->xo", wgt, tab.evou[h][xs] + tab.pvou[h][None])
            dl += (N - r[h][s][None] * D[:, None]) / mom["heads"][h]["mu_D"][s]
        a = -p[s].copy()
        a[m] += 1.0
        scale = max(dl.var(0).max(), 1.0)  # relative, or absolute (logit² units) when small
        errs = [dl.var(0) - var_L[s], (dl @ p[s]).var() - q_p[s], (dl @ a).var() - q_a[s]]
        worst = max(worst, max(float(np.abs(e).max()) for e in errs) / scale)
    assert worst < 1e-10


# ---------------------------------------------------------------- precision with dominant tokens


def _dominant_tables(n=8, k=4, seed=13):
    """Tokens 2 and 3 out-attend every other token by e^32 (≈ 10^14: β² by 10^28, far beyond float64's
    relative precision), and position 0 is attended e^-30 less than the others: prefix sums
    Σ_{t<m} β² minus the removed heavy tokens leave nothing of the rest of the population."""
    rng = np.random.default_rng(seed)
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=4, d_head=4, n_heads=1)
    eqke = -32.0 + 0.5 * rng.normal(size=(1, n, n))
    eqke[:, :, [2, 3]] = 0.0
    eqkp = rng.normal(size=(1, n, k))
    eqkp[:, :, 0] -= 30.0
    return CircuitTables(
        cfg, eqke, eqkp, 2 * rng.normal(size=(1, n, n)), rng.normal(size=(1, k, n)), rng.normal(size=(n, n))
    )


@pytest.mark.parametrize("dist", ["distinct", "uniform"])
def test_population_moments_exact_with_dominant_heavy_tokens(dist, monkeypatch):
    tab = _dominant_tables()
    beta = np.exp(tab.eqke - tab.eqke.max(2, keepdims=True))
    alpha = np.exp(tab.eqkp - tab.eqkp.max(2, keepdims=True))
    scale = 1 + np.abs(tab.evou).max() + np.abs(tab.pvou).max()

    def worst_relative_error():
        st, heads = stratum_moments(tab, dist, max_heavy=2, tau=0.1)
        h = heads[0]
        worst = 0.0
        for s in range(len(st["m"])):
            xs = _enumerate_stratum(tab, st, s, dist)
            q = st["q"][s]
            w = alpha[0, q][None] * beta[0, q][xs]
            D = w.sum(1)
            N = np.einsum("xi,xio->xo", w, tab.evou[0][xs] + tab.pvou[0][None])
            mu = D.mean()
            errs = [
                (D.mean() - h["mu_D"][s]) / mu,
                (D.var() - h["var_D"][s]) / mu**2,
                (N.mean(0) - h["mu_N"][s]) / (mu * scale),
                (((N - N.mean(0)) * (D - mu)[:, None]).mean(0) - h["cov_ND"][s]) / (mu**2 * scale),
                (N.var(0) - h["var_N"][s]) / (mu * scale) ** 2,
            ]
            worst = max(worst, max(float(np.abs(e).max()) for e in errs))
        return worst

    assert worst_relative_error() < 1e-9
    # the direct summation is what makes them exact here: the prefix-sum differences alone fail
    monkeypatch.setattr(populations, "_DIRECT_TOL", np.inf)
    assert worst_relative_error() > 1e-3


def test_vectorised_heavy_path_with_dominant_tokens(monkeypatch):
    # the heavy sub-strata's light-token means also come from prefix differences; where those lose
    # precision the vectorised path sums the population directly, as if every pair were summed so
    n, k = 10, 4
    tab = _dominant_tables(n=n, k=k, seed=14)
    for dist in ("distinct", "uniform"):
        c = FlopCounter()
        T = populations._Tables(tab, c)
        st, _ = strata._strata(n, k, dist, None)
        _, aux = strata._refine(T, st, dist, 0.1, 3, c, heavy_rows=False)
        est = {}
        default = heavy._DIRECT_TOL
        for tol in (0.0, default, np.inf):
            monkeypatch.setattr(heavy, "_DIRECT_TOL", tol)
            with single_threaded(), np.errstate(all="ignore"):
                est[tol] = heavy._heavy_mean_field(T, st, aux, dist, "gauss", c)[0]
        assert np.abs(est[default] - est[0.0]).max() < 1e-12
        assert np.abs(est[np.inf] - est[0.0]).max() > 1e-5  # without it: visibly off
        monkeypatch.setattr(heavy, "_DIRECT_TOL", default)
        # and the whole estimate agrees with the generic path and, roughly, with the truth
        fast = cumulant_propagation(tab, dist, tau=0.1, max_heavy=3)["estimate"]
        slow = cumulant_propagation(tab, dist, tau=0.1, max_heavy=3, heavy_path="generic")["estimate"]
        assert fast == pytest.approx(slow, abs=1e-10)
        truth = evaluate(tab, dist).soft_accuracy
        assert abs(fast - truth) < 0.01, (dist, fast, truth)
