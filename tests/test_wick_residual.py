"""``wick-residual`` (cumulant estimate + sampled mean of f − W) and ``maxk wick``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import maxk
from maxk.checkpoint import save
from maxk.circuits import circuit_tables
from maxk.cli import main
from maxk.distributions import resolve
from maxk.errors import MaxkError
from maxk.estimators.budget import RESIDUAL_RUNGS, residual_flops_bound
from maxk.exact import evaluate
from maxk.flops import FlopCounter

from .helpers import max_like_model, random_model


@pytest.mark.parametrize("design", ["systematic", "plain"])
@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_residual_estimator_is_unbiased_and_calibrated(dist, design):
    """Over 120 seeds the errors against exact evaluation average to zero within their standard
    error; error / spread has RMS near 1 for plain sampling (calibrated), at most about 1 for the
    systematic design (its successive-difference spread is conservative: measured RMS ~0.2-0.4)."""
    tab = circuit_tables(max_like_model(8, 3, 2, 0.3))
    truth = evaluate(tab, dist).soft_accuracy
    errs, z = [], []
    for seed in range(120):
        e = maxk.estimate(tab, "wick-residual", dist, seed=seed, samples=300, design=design)
        errs.append(e.estimate - truth)
        z.append((e.estimate - truth) / e.spread)
    errs = np.array(errs)
    assert abs(errs.mean()) < 3.5 * errs.std(ddof=1) / np.sqrt(len(errs))
    rms = float(np.sqrt(np.mean(np.square(z))))
    assert (0.5 < rms < 1.6) if design == "plain" else (0.05 < rms < 1.6), rms


def test_residual_beats_plain_sampling_where_the_explanation_is_good():
    tab = circuit_tables(max_like_model(10, 3, 1, 0.05))
    truth = evaluate(tab).soft_accuracy
    res = [maxk.estimate(tab, "wick-residual", seed=s, samples=500, design="plain").estimate - truth for s in range(40)]
    mc = [maxk.estimate(tab, "sampling", seed=s, samples=500).estimate - truth for s in range(40)]
    assert np.mean(np.square(res)) < 0.25 * np.mean(np.square(mc))


def test_residual_options_and_details():
    tab = circuit_tables(random_model(n=6, k=3, seed=4))
    e = maxk.estimate(tab, "wick-residual", samples=100, design="plain")
    assert e.details["design"] == "plain" and e.details["samples"] == 100
    assert e.estimate == pytest.approx(e.details["explanation"] + e.details["residual_mean"])
    assert e.flops > maxk.estimate(tab, "cumulant").flops  # the explanation plus every sampled input
    with pytest.raises(MaxkError, match="design"):
        maxk.estimate(tab, "wick-residual", design="nope")
    with pytest.raises(MaxkError, match="levels"):
        maxk.estimate(tab, "wick-residual", levels=0)


def test_cli_wick_json_npz_and_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    save(max_like_model(8, 3, 0, 0.3), path)
    out = tmp_path / "w.npz"
    r = CliRunner().invoke(main, ["wick", str(path), "--json", "--top", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    for key in (
        "estimate",
        "mean_wick",
        "exhaustive",
        "n_inputs",
        "auroc",
        "auroc_first_order",
        "r2",
        "variance_ratio",
        "seconds",
    ):
        assert key in obj
    assert obj["exhaustive"] and obj["n_inputs"] == 8**3
    assert obj["mean_wick"] == pytest.approx(obj["estimate"], rel=1e-9)
    assert len(obj["top"]) == 3
    with np.load(out) as z:
        assert z["inputs"].shape == (8**3, 3) and z["inputs"].dtype == np.int8
        assert z["wick"].dtype == np.float32 and z["soft"].shape == (8**3,)
    r = CliRunner().invoke(main, ["wick", str(path), "--samples", "500", "--dist", "distinct"])
    assert r.exit_code == 0 and "sampled" in r.output, r.output
    r = CliRunner().invoke(main, ["wick", str(tmp_path / "missing.safetensors")])
    assert r.exit_code == 2
    r = CliRunner().invoke(main, ["wick", str(path), "--top", "-1"])
    assert r.exit_code == 2 and "--top" in r.output


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
@pytest.mark.parametrize("setting", [dict(r) for r in RESIDUAL_RUNGS], ids=lambda r: repr(r) if r else "default")
def test_every_explanation_setting_is_unbiased(dist, setting):
    """The compute knob's explanation settings (mean propagation without heavy tokens up to the
    default): over 120 seeds the errors against exact evaluation average to zero within 3.5
    standard errors, with the systematic design and control "auto" that the budget uses."""
    tab = circuit_tables(max_like_model(8, 3, 3, 0.4))
    truth = evaluate(tab, dist).soft_accuracy
    errs = [
        maxk.estimate(tab, "wick-residual", dist, seed=seed, samples=200, **setting).estimate - truth
        for seed in range(120)
    ]
    errs = np.array(errs)
    assert errs.std() > 0  # the estimates do vary: the test can fail
    assert abs(errs.mean()) < 3.5 * errs.std(ddof=1) / np.sqrt(len(errs)), (errs.mean(), errs.std())


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_budgeted_residual_is_unbiased_and_within_budget(dist):
    """Under ``budget=F`` the explanation is built, the rest of F buys inputs: counted FLOPs <= F
    (and within 1% of it), richer explanations and more inputs as F grows, unbiased over seeds."""
    tab = circuit_tables(max_like_model(8, 3, 4, 0.3))
    truth = evaluate(tab, dist).soft_accuracy
    seen = []
    for F in (3e5, 1e6, 3e6):
        e = maxk.estimate(tab, "wick-residual", dist, seed=0, budget=F)
        assert e.flops is not None and 0.99 * F <= e.flops <= F, (F, e.flops)
        seen.append((e.details["explanation_flops"], e.details["samples"]))
    assert seen == sorted(seen) and seen[0][0] < seen[-1][0], seen
    errs = np.array(
        [maxk.estimate(tab, "wick-residual", dist, seed=s, budget=3e5).estimate - truth for s in range(100)]
    )
    assert abs(errs.mean()) < 3.5 * errs.std(ddof=1) / np.sqrt(len(errs))


@pytest.mark.parametrize("design", ["systematic", "plain"])
@pytest.mark.parametrize("control", ["auto", "wick", "constant"])
def test_residual_flops_bound_is_what_the_run_counts(design, control):
    """After the explanation, the run counts exactly ``residual_flops_bound`` with plain inputs
    and at most it with the systematic design (its placement is bounded), at sizes on either
    side of a chunk."""
    tab = circuit_tables(max_like_model(9, 4, 1, 0.3))
    d = resolve("uniform", tab.n, tab.k)
    for samples in (40, 9000, 20000):
        for levels in (1, 3):
            c = FlopCounter()
            e = maxk.estimate(
                tab, "wick-residual", d, counter=c, samples=samples, design=design, levels=levels, control=control
            )
            counted = e.flops - e.details["explanation_flops"]
            bound = residual_flops_bound(tab, d, samples, design, levels, control)
            assert counted == bound if design == "plain" else 0.7 * bound <= counted <= bound, (samples, levels)


def test_residual_flops_cap_errors():
    tab = circuit_tables(max_like_model(8, 3, 4, 0.3))
    with pytest.raises(MaxkError, match="not both"):
        maxk.estimate(tab, "wick-residual", samples=100, flops=1e6)
    with pytest.raises(MaxkError, match="too few for 20 inputs"):
        maxk.estimate(tab, "wick-residual", flops=1e5)
    for bad in (0, -1.0, float("inf"), float("nan"), "1e6", True):
        with pytest.raises(MaxkError, match="flops must be"):
            maxk.estimate(tab, "wick-residual", flops=bad)
    with pytest.raises(MaxkError, match="order"):
        maxk.estimate(tab, "wick-residual", order=3, samples=100)
