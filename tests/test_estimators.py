"""Heuristic estimators: bin propagation against exact laws, case weights against enumeration,
sampling against exact evaluation, and every estimator on hand-built models whose soft accuracy is
known in closed form."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.circuits import CircuitTables, circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import DISTINCT, get_distribution
from maxk.errors import MaxkError
from maxk.estimators import binned
from maxk.estimators.bins import cases, coarse_cases
from maxk.estimators.registry import ESTIMATORS, estimate
from maxk.estimators.sampling import soft_probs, strata_weights
from maxk.exact import all_sequences, evaluate

from .helpers import random_model

DISTS = ["uniform", "distinct"]


# ---------------------------------------------------------------- binned laws


def _w1(vals_a, probs_a, vals_b, probs_b) -> float:
    """Wasserstein-1 distance between two discrete laws on the line (integral of |CDF difference|)."""
    v = np.concatenate([vals_a, vals_b])
    order = np.argsort(v, kind="stable")
    mass = np.concatenate([probs_a, -np.asarray(probs_b)])[order]
    diff = np.cumsum(mass)[:-1]
    return float(np.sum(np.abs(diff) * np.diff(v[order])))


def _law(rng, size=12):
    vals = rng.normal(size=size) * rng.uniform(0.5, 3)
    probs = rng.dirichlet(np.ones(size))
    return vals, probs


def _exact_pairs(f, a, b):
    (va, pa), (vb, pb) = a, b
    return f(va[:, None], vb[None, :]).ravel(), (pa[:, None] * pb[None, :]).ravel()


@pytest.mark.parametrize("profile", [binned.equal_profile, binned.tail_profile])
def test_from_atoms_keeps_mass_mean_and_order(profile):
    rng = np.random.default_rng(0)
    vals, probs = _law(rng, 30)
    masses = profile(7)
    assert masses.sum() == pytest.approx(1.0)
    x = binned.from_atoms(vals, probs, masses)
    assert np.all(np.diff(x) >= -1e-12)
    assert x @ masses == pytest.approx(vals @ probs, abs=1e-12)
    assert binned.from_atoms(vals, probs, 1)[0] == pytest.approx(vals @ probs, abs=1e-12)


def test_from_atoms_of_equal_atoms_is_exact():
    # 12 equal atoms into 4 bins: each bin is the mean of 3 consecutive sorted atoms
    vals = np.array([5.0, 1, 9, 3, 7, 11, 2, 4, 6, 8, 10, 0])
    x = binned.from_atoms(vals, np.full(12, 1 / 12), 4)
    assert np.allclose(x, [1, 4, 7, 10])


@pytest.mark.parametrize("op", ["sum", "product"])
def test_sum_and_product_of_independent_keep_exact_mean_and_converge(op):
    rng = np.random.default_rng(1)
    f = np.add if op == "sum" else np.multiply
    a, b_ = _law(rng), _law(rng)
    ev, ep = _exact_pairs(f, a, b_)
    dists = []
    for nb in (2, 8, 32):
        xa, xb = binned.from_atoms(*a, nb), binned.from_atoms(*b_, nb)
        out = binned.combine(f, xa, xb)
        masses = binned.equal_profile(nb)
        assert out @ masses == pytest.approx(ev @ ep, abs=1e-10)  # independence: means are exact
        dists.append(_w1(out, masses, ev, ep))
        # within a small factor of the best any nb-bin summary of the exact law can do
        floor = _w1(binned.from_atoms(ev, ep, nb), masses, ev, ep)
        assert dists[-1] < 2 * floor + 1e-9
    assert dists[2] < dists[0] / 3  # the law itself converges as bins are added


def test_max_of_independent_is_below_exact_and_converges():
    rng = np.random.default_rng(2)
    a, b_ = _law(rng), _law(rng)
    ev, ep = _exact_pairs(np.maximum, a, b_)
    exact_mean = ev @ ep
    gaps = []
    for nb in (1, 4, 16, 64):
        out = binned.combine(np.maximum, binned.from_atoms(*a, nb), binned.from_atoms(*b_, nb))
        m = out.mean()
        assert m <= exact_mean + 1e-12  # max is convex; bins hold conditional means (Jensen)
        gaps.append(exact_mean - m)
    assert gaps[0] > 0.05 and gaps[-1] < gaps[0] / 10


@pytest.mark.parametrize("profile", [binned.equal_profile, binned.tail_profile])
def test_iid_sums_match_the_exact_convolution(profile):
    # Y uniform on {0, 1, 2, 3}: the exact law of Y_1 + ... + Y_r by convolution
    vals, probs = np.arange(4.0), np.full(4, 0.25)
    nb = 8
    masses = profile(nb)
    y = binned.from_atoms(vals, probs, masses)
    sums = binned.iid_sums(y, 6, masses)
    law = np.array([1.0])
    for r in range(7):
        support = np.arange(len(law), dtype=np.float64)
        assert sums[r] @ masses == pytest.approx(support @ law, abs=1e-10)
        floor = _w1(binned.from_atoms(support, law, masses), masses, support, law)
        assert _w1(sums[r], masses, support, law) <= 1.5 * floor + 0.05 * np.sqrt(r) + 1e-12
        assert np.allclose(binned.iid_sum(y, r, masses), sums[r])
        law = np.convolve(law, probs)


def test_tail_profile_keeps_a_rare_heavy_atom_that_equal_bins_smear():
    # one token in 50 has weight 1000, the rest weight 1: the sum of 8 draws is ~1000 about 15%
    # of the time; equal bins smear it across most bins, the tail profile keeps the light 85%.
    vals = np.r_[np.ones(49), 1000.0]
    probs = np.full(50, 1 / 50)
    exact_light = (49 / 50) ** 8  # P[no heavy draw] = 0.85
    light = {}
    for profile in (binned.tail_profile, binned.equal_profile):
        masses = profile(6)
        s = binned.iid_sums(binned.from_atoms(vals, probs, masses), 8, masses)[8]
        light[profile] = masses[s < 100].sum()
    assert 0.7 <= light[binned.tail_profile] <= exact_light
    assert light[binned.equal_profile] < 0.4  # equal bins smear the heavy draw over most bins


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=20), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_binning_preserves_mean_for_any_law(values, nb, seed):
    vals = np.array(values)
    probs = np.random.default_rng(seed).dirichlet(np.ones(len(vals)))
    for masses in (binned.equal_profile(nb), binned.tail_profile(nb)):
        x = binned.from_atoms(vals, probs, masses)
        assert x @ masses == pytest.approx(vals @ probs, abs=1e-9 * (1 + np.abs(vals).max()))


# ---------------------------------------------------------------- case weights


def _brute_cases(dist, n, k):
    """(m, q, c, t2, c2) -> probability, by enumerating every sequence."""
    seqs = all_sequences(n, k)
    if dist == "distinct":
        seqs = seqs[[len(set(s)) == k for s in seqs]]
    out = Counter()
    for s in seqs:
        m, q = s.max(), s[-1]
        others = s[:-1]
        c = int((others == m).sum())
        rest = others[others != m]  # the query sits at the last position, never among these
        if len(rest):
            t2 = rest.max()
            c2 = int((rest == t2).sum())
        else:
            t2, c2 = -1, 0
        out[(int(m), int(q), c, int(t2), c2)] += 1 / len(seqs)
    return out


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("n,k", [(5, 3), (6, 4), (4, 1), (5, 2)])
def test_case_probabilities_match_enumeration(dist, n, k):
    cs = cases(dist, n, k)
    got = Counter()
    for m, q, c, t2, c2, p in zip(cs["m"], cs["q"], cs["c"], cs["t2"], cs["c2"], cs["prob"], strict=True):
        got[(int(m), int(q), int(c), int(t2), int(c2))] += p
    want = _brute_cases(dist, n, k)
    assert set(k_ for k_, v in got.items() if v > 0) == set(want)
    for key, p in want.items():
        assert got[key] == pytest.approx(p, rel=1e-12, abs=1e-15)
    # low group size: c + c2 + r2 = k - 1 non-query positions
    assert np.all(cs["c"] + cs["c2"] + cs["r2"] == k - 1)


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("gap,tol", [(None, 0.0), (0, 0.0), (2, 1e-3), (None, 5e-3)])
def test_merged_and_pruned_cases_keep_the_max_query_marginals(dist, gap, tol):
    n, k = 9, 4
    full = cases(dist, n, k)
    cs = coarse_cases(dist, n, k, gap, tol)
    marg = lambda c: np.bincount(c["m"] * n + c["q"], weights=c["prob"], minlength=n * n)  # noqa: E731
    assert np.allclose(marg(cs), marg(full), atol=1e-15)
    assert np.all(cs["c"] + cs["c2"] + cs["r2"] == k - 1)
    assert np.all((cs["t2"] < 0) | (cs["t2"] >= cs["m"] - (gap if gap is not None else n)))
    assert np.all(cs["tl"] <= cs["m"])
    if gap == 0:
        assert np.all(cs["t2"] == -1) and np.all((cs["tl"] == cs["m"]) | (cs["r2"] == 0))


@pytest.mark.parametrize("dist", DISTS)
def test_strata_weights_match_enumeration(dist):
    n, k = 6, 3
    seqs = all_sequences(n, k)
    if dist == "distinct":
        seqs = seqs[[len(set(s)) == k for s in seqs]]
    w = np.zeros((n, n))
    np.add.at(w, (seqs.max(axis=1), seqs[:, -1]), 1 / len(seqs))
    assert np.allclose(strata_weights(dist, n, k, True), w, atol=1e-15)
    assert np.allclose(strata_weights(dist, n, k, False), w.sum(axis=1), atol=1e-15)


@pytest.mark.parametrize("dist", DISTS)
def test_conditional_sampler_matches_the_conditional_law(dist):
    n, k, m, q = 6, 4, 4, 2
    seqs = all_sequences(n, k)
    if dist == "distinct":
        seqs = seqs[[len(set(s)) == k for s in seqs]]
    for cond_q in (None, q, m):
        keep = seqs.max(axis=1) == m
        if cond_q is not None:
            keep &= seqs[:, -1] == cond_q
        support = {tuple(s) for s in seqs[keep]}
        size = 40 * len(support)
        rng = np.random.default_rng(5)
        x = get_distribution(dist).sample_given(
            n, k, np.full(size, m), None if cond_q is None else np.full(size, cond_q), rng
        )
        counts = Counter(map(tuple, x))
        assert set(counts) == support
        expected = size / len(support)  # conditional law is uniform on its support
        chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
        dof = len(support) - 1
        assert chi2 < dof + 6 * np.sqrt(2 * dof)


# ---------------------------------------------------------------- sampling vs exact


@pytest.mark.parametrize("dist", DISTS)
def test_soft_probs_match_exact_evaluation(dist):
    model = random_model(n=7, k=3, heads=2, seed=3, scale=1.0)
    tab = circuit_tables(model)
    seqs = all_sequences(7, 3)
    if dist == "distinct":
        seqs = seqs[[len(set(s)) == 3 for s in seqs]]
    assert soft_probs(tab, seqs).mean() == pytest.approx(evaluate(tab, dist).soft_accuracy, abs=1e-12)


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("by_query", [False, True])
def test_stratified_and_sampling_agree_with_exact(dist, by_query):
    tab = circuit_tables(random_model(n=10, k=3, seed=7, scale=1.5))
    exact = evaluate(tab, dist).soft_accuracy
    s = estimate(tab, "stratified", dist, samples=30000, seed=1, by_query=by_query)
    assert abs(s.estimate - exact) < 5 * s.spread
    p = estimate(tab, "sampling", dist, samples=30000, seed=2)
    assert abs(p.estimate - exact) < 5 * p.spread
    assert s.spread < p.spread  # strata remove the between-strata variance
    assert s.flops > 0 and p.flops > 0


def test_sampling_is_reproducible_and_seeded():
    tab = circuit_tables(random_model(n=8, k=3, seed=1))
    a, b_ = (estimate(tab, "sampling", samples=500, seed=3) for _ in range(2))
    c = estimate(tab, "sampling", samples=500, seed=4)
    assert a.estimate == b_.estimate and a.estimate != c.estimate


# ---------------------------------------------------------------- hand-built models


def _tables(n, k, eqke, eqkp, evou, pvou, eupu) -> CircuitTables:
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=4, d_head=4)
    return CircuitTables(cfg, eqke[None], eqkp[None], evou[None], pvou[None], eupu)


def _p_max_is_query(dist, n, k):
    if dist == "distinct":
        return 1 / k
    return sum((1 / n) * ((q + 1) / n) ** (k - 1) for q in range(n))


DETERMINISTIC = ["mean", "bins"]


@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("n,k", [(9, 3), (12, 5)])
def test_direct_path_only_model(dist, n, k):
    """No attention signal, no values; the direct path favours the query token by beta. The answer
    is right exactly when the query is the max: soft accuracy =
    P[q = max]·e^β/(e^β+n−1) + (1 − P[q = max])/(e^β+n−1)."""
    beta = 2.5
    z = np.zeros
    tab = _tables(n, k, z((n, n)), z((n, k)), z((n, n)), z((k, n)), beta * np.eye(n))
    pq = _p_max_is_query(dist, n, k)
    truth = (pq * np.exp(beta) + (1 - pq)) / (np.exp(beta) + n - 1)
    for method in DETERMINISTIC:
        assert estimate(tab, method, dist).estimate == pytest.approx(truth, abs=1e-12)
    s = estimate(tab, "stratified", dist, samples=20000, by_query=True)
    assert s.estimate == pytest.approx(truth, abs=1e-12)  # constant within each (max, query) stratum
    for method in ("sampling", "systematic"):
        p = estimate(tab, method, dist, samples=20000)
        assert abs(p.estimate - truth) < 5 * p.spread


@pytest.mark.parametrize("dist", DISTS)
def test_attend_to_max_model(dist):
    """Scores rise steeply with the key token, so all attention goes to the copies of the max;
    EVOU = alpha·I: the logits are alpha at the max and 0 elsewhere, so every input has
    soft accuracy e^α/(e^α + n − 1)."""
    n, k, alpha = 10, 4, 3.0
    t = np.arange(n, dtype=np.float64)
    eqke = np.tile(60.0 * t, (n, 1))
    tab = _tables(n, k, eqke, np.zeros((n, k)), alpha * np.eye(n), np.zeros((k, n)), np.zeros((n, n)))
    truth = np.exp(alpha) / (np.exp(alpha) + n - 1)
    assert evaluate(tab, dist).soft_accuracy == pytest.approx(truth, abs=1e-12)
    for method in DETERMINISTIC:
        assert estimate(tab, method, dist).estimate == pytest.approx(truth, abs=1e-12)
    for method in ("sampling", "stratified", "systematic"):
        e = estimate(tab, method, dist, samples=2000)
        assert e.estimate == pytest.approx(truth, abs=1e-12) and e.spread < 1e-6  # rounding only


def test_attend_to_max_with_positional_values():
    """As above, plus a positional value PVOU[i] = gamma_i·(e_0 − e_max-ish): under ``distinct``
    the max sits at each of the k positions with probability 1/k, so the soft accuracy is the
    P[max = m]-weighted mean over m and positions of softmax(alpha·e_m + PVOU[i])[m]. Bin
    propagation conditions on the exact position of the max when positions = k − 1."""
    n, k, alpha = 10, 4, 3.0
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.float64)
    eqke = np.tile(60.0 * t, (n, 1))
    eqkp = rng.normal(size=(n, k))  # positional scores vary, but cannot beat the token gap
    pvou = rng.normal(size=(k, n)) * 2
    tab = _tables(n, k, eqke, eqkp, alpha * np.eye(n), pvou, np.zeros((n, n)))

    w = DISTINCT.max_weights(n, k)
    truth = 0.0
    for m in range(n):
        for i in range(k):
            logits = alpha * np.eye(n)[m] + pvou[i]
            truth += w[m] / k * np.exp(logits[m]) / np.exp(logits).sum()
    assert evaluate(tab, "distinct").soft_accuracy == pytest.approx(truth, abs=1e-12)
    assert estimate(tab, "bins", "distinct", positions=k - 1).estimate == pytest.approx(truth, abs=1e-12)
    assert estimate(tab, "mean", "distinct", positions=k - 1).estimate == pytest.approx(truth, abs=1e-12)
    # averaging the positions away is an approximation, and a visible one here
    assert abs(estimate(tab, "bins", "distinct", positions=1).estimate - truth) > 1e-4


# ---------------------------------------------------------------- bins and mean


@pytest.mark.parametrize("dist", DISTS)
def test_bins_with_one_bin_equals_mean(dist):
    tab = circuit_tables(random_model(n=12, k=4, seed=2, scale=1.0))
    a = estimate(tab, "bins", dist, n_bins=1)
    b_ = estimate(tab, "mean", dist)
    assert a.estimate == b_.estimate
    assert a.flops == b_.flops


@pytest.mark.parametrize("dist", DISTS)
def test_bins_near_exact_on_random_models(dist):
    # not a closed form: a loose check that the machinery is wired right on unstructured weights
    for seed in range(3):
        tab = circuit_tables(random_model(n=12, k=4, seed=seed, scale=1.0))
        exact = evaluate(tab, dist).soft_accuracy
        e = estimate(tab, "bins", dist, n_bins=6, gap=12, positions=3)
        assert abs(e.estimate - exact) < 0.1 * exact + 0.002
        assert e.details["per_max"] and sum(e.details["per_max"]) == pytest.approx(e.estimate)


def test_bins_rejects_multi_head_and_bad_options():
    tab2 = circuit_tables(random_model(n=6, k=3, heads=2))
    with pytest.raises(MaxkError, match="single-head"):
        estimate(tab2, "bins")
    tab = circuit_tables(random_model(n=6, k=3))
    for opts in ({"n_bins": 0}, {"gap": -1}, {"positions": 0}, {"profile": "x"}, {"tol": 0.5}):
        with pytest.raises(MaxkError):
            estimate(tab, "bins", **opts)


# ---------------------------------------------------------------- registry


def test_registry_contract():
    for name in ("sampling", "stratified", "systematic", "mean", "bins", "cumulant"):
        assert name in ESTIMATORS
    tab = circuit_tables(random_model(n=6, k=3))
    with pytest.raises(MaxkError, match="unknown estimator"):
        estimate(tab, "nope")
    with pytest.raises(MaxkError, match="does not take"):
        estimate(tab, "mean", samples=10)
    with pytest.raises(MaxkError):
        estimate(tab, "bins", "bogus")
    e = estimate(tab, "mean", "distinct")
    assert e.method == "mean" and e.dist == "distinct" and e.flops > 0 and e.seconds >= 0
    assert 0 <= e.estimate <= 1


# ---------------------------------------------------------------- a trained, noised model


@pytest.mark.slow
@pytest.mark.parametrize("dist", DISTS)
def test_bins_close_to_exact_on_noised_trained_model(dist):
    import copy

    import torch

    from maxk.train import trained_model

    base = trained_model(ModelConfig(d_vocab=16, n_ctx=4, d_model=16, d_head=16), seed=0, steps=1500)
    g = torch.Generator().manual_seed(0)
    for scale in (0.0, 0.3):
        m = copy.deepcopy(base)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if ".W_" in name:
                    p.add_(torch.randn(p.shape, generator=g) * scale * p.std())
        tab = circuit_tables(m)
        exact = evaluate(tab, dist).soft_accuracy
        for method in ("mean", "bins"):
            e = estimate(tab, method, dist)
            assert abs(e.estimate - exact) < {"mean": 0.02, "bins": 0.01}[method], (method, scale, e.estimate, exact)


# ---------------------------------------------------------------- command line


def test_cli_estimate_json_and_errors(tmp_path):
    import json

    from click.testing import CliRunner

    from maxk import checkpoint
    from maxk.cli import main

    path = tmp_path / "m.safetensors"
    checkpoint.save(random_model(n=8, k=3, seed=1), path)
    runner = CliRunner()
    r = runner.invoke(main, ["estimate", str(path), "--method", "bins", "--bins", "3", "--dist", "distinct", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {"method", "estimate", "flops", "seconds"} <= set(out) and "spread" not in out
    assert out["estimate"] == pytest.approx(estimate(checkpoint.load(path), "bins", "distinct", n_bins=3).estimate)
    r = runner.invoke(main, ["estimate", str(path), "--method", "stratified", "--samples", "500", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["spread"] > 0
    r = runner.invoke(main, ["estimate", str(path), "--method", "sampling", "--bins", "4"])
    assert r.exit_code == 2 and "--bins" in r.output
    r = runner.invoke(main, ["estimate", str(path), "--method", "nope"])
    assert r.exit_code == 2 and "unknown" in r.output
