"""The top-two cell explanation (``maxk.estimators.residual_cells``) and ``wick-residual`` on it."""

from __future__ import annotations

import numpy as np
import pytest

import maxk
from maxk.circuits import circuit_tables
from maxk.distributions import resolve
from maxk.errors import MaxkError
from maxk.estimators.budget import RESIDUAL_RUNGS, cell_flops, explanation_flops, plan, zero_tables
from maxk.estimators.residual_cells import cell_keys, enumerate_cells, explain_cells
from maxk.estimators.sampling import soft_probs
from maxk.exact import evaluate
from maxk.flops import FlopCounter

from .helpers import max_like_model, random_model

CELL_RUNGS = [dict(r) for r in RESIDUAL_RUNGS if r.get("explanation") == "cells"]


def _all_inputs(dist: str, n: int, k: int):
    d = resolve(dist, n, k)
    return d, d.enumerate(n, k)


@pytest.mark.parametrize("dist,n,k", [("uniform", 6, 3), ("uniform", 5, 4), ("distinct", 7, 3), ("distinct", 8, 4)])
def test_cell_probabilities_are_the_laws_counts(dist, n, k):
    """Every input falls in exactly one enumerated cell, and each cell's probability is the share
    of inputs in it (the laws agree with enumeration)."""
    d, x = _all_inputs(dist, n, k)
    cells = enumerate_cells(d, n, k)
    keys = ((cells.m * (1 << k) + cells.M) * (n + 1) + cells.t + 1) * (1 << k) + cells.T
    assert len(np.unique(keys)) == len(keys)
    assert cells.prob.sum() == pytest.approx(1.0, abs=1e-12)
    got, _ = cell_keys(x, n)
    uniq, counts = np.unique(got, return_counts=True)
    order = np.argsort(keys)
    assert np.array_equal(uniq, keys[order][cells.prob[order] > 0])
    np.testing.assert_allclose(cells.prob[order][cells.prob[order] > 0], counts / len(x), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("dist,n,k", [("uniform", 7, 3), ("uniform", 6, 4), ("distinct", 8, 3), ("distinct", 9, 4)])
@pytest.mark.parametrize("max_cells", [None, 5, 40])
@pytest.mark.parametrize("heads", [1, 2])
def test_mean_of_w_over_every_input_is_the_explanation_estimate(dist, n, k, max_cells, heads):
    """E[W] identity: the mean of W over every input equals the explanation's estimate to 1e-12,
    with every cell kept or only the most probable (the rest at the fallback), one or two heads."""
    d, x = _all_inputs(dist, n, k)
    tab = circuit_tables(random_model(n=n, k=k, heads=heads, seed=3 + heads, scale=1.0))
    ex = explain_cells(tab, d, counter=FlopCounter(), max_cells=max_cells)
    w = ex.values(x)
    assert np.all((w >= 0) & (w <= 1))
    assert float(w.mean()) == pytest.approx(ex.estimate, rel=1e-12, abs=1e-14)
    assert (ex.covered < 1.0) == (max_cells is not None and max_cells < len(enumerate_cells(d, n, k).prob))


def test_cell_value_is_the_model_where_the_mean_field_is_exact():
    """With every position held by m or t2 (k = 2) and the query one of them, the cell's value is the
    model's probability on the max when every output is read (competitors = n − 1)."""
    n, k = 7, 2
    tab = circuit_tables(random_model(n=n, k=k, seed=5, scale=1.0))
    for dist in ("uniform", "distinct"):
        d, x = _all_inputs(dist, n, k)
        ex = explain_cells(tab, d, counter=FlopCounter(), competitors=n - 1)
        f = soft_probs(tab, x)
        np.testing.assert_allclose(ex.values(x), f, rtol=1e-10, atol=1e-12)
        assert ex.estimate == pytest.approx(evaluate(tab, dist).soft_accuracy, rel=1e-10)


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_cell_cost_does_not_depend_on_the_weights(dist):
    """``cell_flops`` (measured on the all-zero tables) is what every model counts."""
    for model in (
        random_model(n=9, k=4, seed=1),
        max_like_model(9, 4, 2, 0.3),
        random_model(n=9, k=4, heads=2, seed=2),
    ):
        tab = circuit_tables(model)
        d = resolve(dist, tab.n, tab.k)
        for cap in (None, 30):
            c = FlopCounter()
            explain_cells(tab, d, counter=c, max_cells=cap, competitors=3)
            assert c.total == cell_flops(tab, d, cap, 3)
    c = FlopCounter()
    explain_cells(zero_tables(tab), d, counter=c)
    assert c.total > 0


@pytest.mark.parametrize("design", ["systematic", "plain"])
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_cells_residual_is_unbiased_and_calibrated(dist, design):
    """Over 150 seeds the errors of ``wick-residual`` with the cell explanation average to zero
    within 3.5 standard errors of exact evaluation; error/spread has RMS near 1 for plain sampling,
    at most about 1 for the systematic design (its spread is conservative)."""
    tab = circuit_tables(max_like_model(8, 3, 2, 0.35))
    truth = evaluate(tab, dist).soft_accuracy
    errs, z = [], []
    for seed in range(150):
        e = maxk.estimate(
            tab, "wick-residual", dist, seed=seed, samples=300, design=design, explanation="cells", cells=20
        )
        assert e.spread is not None
        errs.append(e.estimate - truth)
        z.append((e.estimate - truth) / e.spread)
    errs = np.array(errs)
    assert errs.std() > 0
    assert abs(errs.mean()) < 3.5 * errs.std(ddof=1) / np.sqrt(len(errs)), (errs.mean(), errs.std())
    rms = float(np.sqrt(np.mean(np.square(z))))
    assert (0.6 < rms < 1.5) if design == "plain" else (0.05 < rms < 1.5), rms


def test_cells_control_lowers_the_variance_on_a_max_like_model():
    """Where the mean field is good, f − W varies far less than f, and the plain-design residual
    estimate beats plain Monte Carlo with the same inputs."""
    tab = circuit_tables(max_like_model(12, 4, 1, 0.15))
    truth = evaluate(tab, "distinct").soft_accuracy
    res = [
        maxk.estimate(
            tab, "wick-residual", "distinct", seed=s, samples=400, design="plain", explanation="cells", control="wick"
        ).estimate
        - truth
        for s in range(40)
    ]
    mc = [maxk.estimate(tab, "sampling", "distinct", seed=s, samples=400).estimate - truth for s in range(40)]
    assert np.mean(np.square(res)) < 0.5 * np.mean(np.square(mc))


@pytest.mark.parametrize(
    "dist,n,k,budgets",
    [
        ("distinct", 64, 10, (1e7, 1e8)),
        ("uniform", 24, 5, (1e7, 4e7)),
    ],
)
def test_budget_chooses_the_cells_within_budget(dist, n, k, budgets):
    """The budget's cheapest rungs are cell explanations: at n = 64, k = 10 ``budget=1e7`` runs one
    (the cumulant explanations cost >= 2·10⁸), counting at most F, and a richer one at 10⁸; the
    explanation counts exactly its planned (weight-independent) cost."""
    tab = circuit_tables(random_model(n=n, k=k, d_model=16, d_head=8, seed=7, scale=0.3))
    d = resolve(dist, n, k)
    assert explanation_flops(tab, d, CELL_RUNGS[0]) < 0.45 * budgets[0]
    plans = []
    for F in budgets:
        p = plan("wick-residual", tab, d, F)
        assert p.options["explanation"] == "cells"
        plans.append(p.options)
        e = maxk.estimate(tab, "wick-residual", d, seed=1, budget=F)
        assert e.flops is not None and 0.97 * F <= e.flops <= F, (F, e.flops)
        rung = {key: v for key, v in p.options.items() if key in ("explanation", "cells", "competitors")}
        assert e.details["explanation_flops"] == explanation_flops(tab, d, rung)
    assert plans[0] != plans[1]


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
@pytest.mark.parametrize("rung", CELL_RUNGS, ids=repr)
def test_every_cell_rung_is_unbiased(dist, rung):
    tab = circuit_tables(max_like_model(8, 3, 3, 0.4))
    truth = evaluate(tab, dist).soft_accuracy
    errs = np.array(
        [maxk.estimate(tab, "wick-residual", dist, seed=s, samples=200, **rung).estimate - truth for s in range(100)]
    )
    assert errs.std() > 0
    assert abs(errs.mean()) < 3.5 * errs.std(ddof=1) / np.sqrt(len(errs))


def test_cells_option_errors():
    tab = circuit_tables(max_like_model(8, 3, 4, 0.3))
    with pytest.raises(MaxkError, match="explanation must be"):
        maxk.estimate(tab, "wick-residual", samples=100, explanation="nope")
    for bad in (-1, 1.5, True):
        with pytest.raises(MaxkError, match="cells must be"):
            maxk.estimate(tab, "wick-residual", samples=100, explanation="cells", cells=bad)
    with pytest.raises(MaxkError, match="competitors"):
        maxk.estimate(tab, "wick-residual", samples=100, explanation="cells", competitors=-1)
    with pytest.raises(MaxkError, match="exchangeable"):
        explain_cells(tab, resolve("query-unique", 8, 3), counter=FlopCounter())
    e = maxk.estimate(tab, "wick-residual", samples=100, explanation="cells", cells=7)
    assert e.details["explanation_kind"] == "cells" and e.details["cells"] == 7
    assert e.estimate == pytest.approx(e.details["explanation"] + e.details["residual_mean"])
