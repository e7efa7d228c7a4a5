"""Systematic sampling over the order-statistic hierarchy: the inverse-CDF map gives exactly the
distribution's law, the estimate is exact when N resolves every input, unbiased otherwise, and
beats plain Monte Carlo at the same number of inputs."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chi2

from maxk.circuits import circuit_tables
from maxk.errors import MaxkError
from maxk.estimators.registry import estimate
from maxk.estimators.systematic import ordered_inputs
from maxk.exact import all_sequences, evaluate

from .helpers import random_model


def _support(dist, n, k):
    seqs = all_sequences(n, k)
    if dist == "distinct":
        seqs = seqs[[len(set(s)) == k for s in seqs]]
    return [tuple(s) for s in seqs]


@pytest.mark.parametrize(
    "dist,n,k", [("distinct", 6, 3), ("distinct", 5, 5), ("uniform", 4, 3), ("uniform", 3, 4), ("uniform", 2, 5)]
)
def test_fully_resolved_map_hits_every_input_equally(dist, n, k):
    """With levels = k nothing is left to chance: M·T evenly spaced u give each of the T
    equally likely inputs exactly M times."""
    seqs = _support(dist, n, k)
    M = 7
    N = M * len(seqs)
    u = (np.arange(N) + 0.37) / N
    x = ordered_inputs(dist, n, k, u, k, np.random.default_rng(0))
    counts = Counter(map(tuple, x))
    assert set(counts) == set(seqs)
    assert set(counts.values()) == {M}


@pytest.mark.parametrize(
    "dist,n,k,levels",
    [("distinct", 7, 4, 1), ("distinct", 8, 4, 2), ("uniform", 5, 4, 2), ("uniform", 4, 5, 1), ("uniform", 6, 3, 3)],
)
def test_partly_random_map_has_the_distribution_law(dist, n, k, levels):
    """Uniform u and the random rest: chi-square of the input frequencies against the uniform law
    on the support."""
    seqs = _support(dist, n, k)
    N = 60 * len(seqs)
    rng = np.random.default_rng(1)
    x = ordered_inputs(dist, n, k, rng.random(N), levels, rng)
    counts = Counter(map(tuple, x))
    assert set(counts) <= set(seqs)
    obs = np.array([counts.get(s, 0) for s in seqs], dtype=np.float64)
    stat = float(np.sum((obs - 60) ** 2 / 60))
    assert stat < chi2.ppf(1 - 1e-6, len(seqs) - 1)


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_estimate_is_exact_when_every_input_is_resolved(dist):
    n, k = 6, 3
    tab = circuit_tables(random_model(n=n, k=k, heads=2, seed=4, scale=1.2))
    T = len(_support(dist, n, k))
    e = estimate(tab, "systematic", dist, samples=3 * T, levels=k, seed=5)
    assert e.estimate == pytest.approx(evaluate(tab, dist).soft_accuracy, abs=1e-12)


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_unbiased_and_better_than_plain_sampling(dist):
    """Over independent seeds the mean is the exact soft accuracy (within 4 standard errors),
    the variance is below plain Monte Carlo's with the same inputs, and the stated spread is of
    the right size."""
    tab = circuit_tables(random_model(n=10, k=4, seed=2, scale=1.5))
    exact = evaluate(tab, dist).soft_accuracy
    runs = [estimate(tab, "systematic", dist, samples=600, levels=2, seed=s) for s in range(150)]
    est = np.array([r.estimate for r in runs])
    assert abs(est.mean() - exact) < 4 * est.std(ddof=1) / np.sqrt(len(est))
    mc = np.array([estimate(tab, "sampling", dist, samples=600, seed=1000 + s).estimate for s in range(150)])
    assert est.var() < 0.5 * mc.var()
    z = (est - exact) / np.array([r.spread for r in runs])
    assert 0.3 < np.sqrt(np.mean(z**2)) < 1.5


def test_flops_and_options():
    tab = circuit_tables(random_model(n=8, k=3, seed=1))
    s = estimate(tab, "systematic", "distinct", samples=1000)
    p = estimate(tab, "sampling", "distinct", samples=1000)
    assert p.flops < s.flops < 1.5 * p.flops  # same inputs through the tables, plus placing them
    assert s.details == {"samples": 1000, "levels": 3}
    with pytest.raises(MaxkError, match="levels"):
        estimate(tab, "systematic", levels=0)
    with pytest.raises(MaxkError, match="samples"):
        estimate(tab, "systematic", samples=1)


def test_cli_systematic(tmp_path):
    from click.testing import CliRunner

    from maxk import checkpoint
    from maxk.cli import main

    path = tmp_path / "m.safetensors"
    checkpoint.save(random_model(n=8, k=3, seed=1), path)
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "estimate",
            str(path),
            "--method",
            "systematic",
            "--samples",
            "3000",
            "--levels",
            "2",
            "--dist",
            "distinct",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["method"] == "systematic" and out["spread"] > 0 and out["flops"] > 0
    r = runner.invoke(main, ["estimate", str(path), "--method", "bins", "--levels", "2"])
    assert r.exit_code == 2 and "--levels" in r.output
    r = runner.invoke(main, ["estimate", str(path), "--method", "systematic", "--levels", "0"])
    assert r.exit_code == 2 and "levels" in r.output and "Traceback" not in r.output


def test_rounding_never_selects_an_impossible_value():
    """u just below 1 must pick the largest possible value, never a zero-probability cell."""
    rng = np.random.default_rng(0)
    u = np.full(64, float(np.nextafter(1.0, 0.0)))
    for dist in ("distinct", "uniform"):
        x = ordered_inputs(dist, 50, 6, u, 6, rng)
        assert (x.max(axis=1) == 49).all() and (x >= 0).all()
        if dist == "distinct":
            assert all(len(set(row)) == 6 for row in x.tolist())
