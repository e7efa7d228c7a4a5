"""The MSE-versus-FLOPs frontier (issue 11): the Monte Carlo reference line matches plain sampling
measured over many seeds, and the frontier runs end to end (module and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from maxk import checkpoint
from maxk.circuits import circuit_tables
from maxk.cli import main
from maxk.errors import MaxkError
from maxk.estimators import frontier
from maxk.estimators.bench import stratified_truth, truth_sample
from maxk.estimators.budget import per_input_flops
from maxk.estimators.registry import estimate
from maxk.estimators.sampling import soft_probs
from maxk.exact import all_sequences

from .helpers import random_model


@pytest.fixture(scope="module")
def tiny():
    model = random_model(n=8, k=3, d_model=8, d_head=4, seed=11, scale=1.0)
    tab = circuit_tables(model)
    p = soft_probs(tab, all_sequences(8, 3))
    return model, tab, float(p.mean()), float(p.var())


@pytest.mark.parametrize("budget", [3e3, 2e4, 2e5])
def test_mc_reference_matches_measured_plain_sampling(tiny, budget):
    """Over 600 seeds, plain sampling at budget F has the MSE the reference line predicts,
    Var[p(x)] / ⌊F / f⌋ (exact variance over all 512 inputs), to within its sampling noise
    (relative standard error ≈ 6%)."""
    _, tab, mean, var = tiny
    f = per_input_flops(tab) + 2
    errs, flops = [], set()
    for seed in range(600):
        e = estimate(tab, "sampling", "uniform", budget=budget, seed=seed)
        errs.append(e.estimate - mean)
        flops.add(e.flops)
    (spent,) = flops
    predicted = float(frontier.mc_mse(np.array([var]), np.array([spent]), f)[0])
    measured = float(np.mean(np.square(errs)))
    assert 0.8 < measured / predicted < 1.25, (measured, predicted)
    assert abs(np.mean(errs)) < 4 * np.sqrt(predicted / 600)  # unbiased


def test_the_bench_variance_is_the_per_input_variance(tiny):
    """The variance the frontier prices Monte Carlo with (from the shared stratified samples)
    is the exact per-input variance."""
    _, tab, mean, var = tiny
    mu, _, v = stratified_truth(tab, truth_sample("uniform", 8, 3, 200_000, seed=3))
    assert abs(mu - mean) < 3e-3 and abs(v / var - 1) < 0.03


def test_run_frontier_end_to_end(tiny, tmp_path):
    model, *_ = tiny
    out = tmp_path / "fam.json"
    fam = frontier.run_frontier(
        "k3",
        model,
        "uniform",
        3,
        (0.1, 0.5),
        ["sampling", "mean", "stratified"],
        [1e3, 1e6],
        truth_samples=20_000,
        exact=True,
        out=out,
    )
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(fam["rows"]))
    rows = {(r["method"], r["budget"]): r for r in fam["rows"]}
    assert ("stratified", 1e3) not in rows  # refused: below four inputs per stratum
    assert all(m["runs"]["stratified@1000"]["refused"].startswith("budget") for m in fam["models"])
    for r in fam["rows"]:
        assert r["flops"] <= r["budget"] and r["max_flops"] <= r["budget"]
        assert {"family", "method", "budget", "flops", "rmse", "mc_rmse", "mse_ratio", "bias"} <= set(r)
        assert r["mse_ratio"] == pytest.approx(r["mc_rmse"] ** 2 / r["rmse"] ** 2)
        assert r["models"] == 3
    png = tmp_path / "f.png"
    frontier.plot_frontier([fam], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_replaces_runs_and_keeps_truth(tiny):
    model, *_ = tiny
    fam = frontier.run_frontier(
        "k3", model, "uniform", 2, (0.1, 0.5), ["sampling"], [1e4], truth_samples=5000, exact=True
    )
    truth = [m["truth"] for m in fam["models"]]
    frontier.rerun(fam, model, ["mean"], [1e5, 1e4])
    assert [m["truth"] for m in fam["models"]] == truth
    assert {r["method"] for r in fam["rows"]} == {"sampling", "mean"} and 1e5 in fam["budgets"]


def test_parse_budgets():
    assert frontier.parse_budgets("1e6, 1e5,1e6") == [1e5, 1e6]
    for bad in ("", "x", "-1", "inf", "0"):
        with pytest.raises(MaxkError):
            frontier.parse_budgets(bad)


def test_cli_frontier_on_any_checkpoint(tiny, tmp_path):
    model, *_ = tiny
    ck = tmp_path / "tiny.safetensors"
    checkpoint.save(model, ck)
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["estimate-bench", "--budgets", "1e4,1e6", "--base", str(ck), "--models", "2", "--truth-samples", "2000"]
    args += ["--methods", "sampling,systematic,cumulant,wick-residual", "--json", "--out", str(out), "--plot", str(png)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["rows"]
    assert {r["family"] for r in rows} == {"k3"} and {r["budget"] for r in rows} == {1e4, 1e6}
    assert {r["method"] for r in rows} == {"sampling", "systematic", "cumulant", "wick-residual"}
    assert {r["budget"] for r in rows if r["method"] == "wick-residual"} == {1e6}  # 1e4 pays for no explanation
    assert json.loads(out.read_text())["rows"] == rows and png.exists()
    bad = CliRunner().invoke(main, ["estimate-bench", "--plot", str(png), "--quick"])
    assert bad.exit_code == 2 and "--plot needs --budgets" in bad.output


def test_cli_estimate_budget(tmp_path):
    r = CliRunner().invoke(main, ["estimate", "default", "--method", "mean", "--budget", "1e6", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["flops"] <= 1e6 and out["budget"] == 1e6 and out["settings"]["strata"] == "max-query"
    r = CliRunner().invoke(main, ["estimate", "default", "--method", "bins", "--budget", "1e5", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["flops"] <= 1e5 and out["settings"] == {"strata": "max", "outputs": 4, "n_bins": 2}
    r = CliRunner().invoke(main, ["estimate", "default", "--method", "bins", "--budget", "5e4"])
    assert r.exit_code == 2 and "too small for 'bins'" in r.output
    r = CliRunner().invoke(main, ["estimate", "default", "--method", "sampling", "--budget", "1e6", "--samples", "9"])
    assert r.exit_code == 2 and "drop --samples" in r.output
