"""``maxk estimate-bench --quick``: the protocol runs end to end and its figures are consistent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from maxk import checkpoint
from maxk.circuits import circuit_tables
from maxk.cli import main
from maxk.config import ModelConfig
from maxk.estimators import bench
from maxk.exact import evaluate
from maxk.model import MaxKTransformer


def test_noised_model_changes_only_weight_matrices():
    base = checkpoint.load("default")
    m = bench.noised_model(base, 0.1, seed=3)
    for (name, p), (_, p0) in zip(m.named_parameters(), base.named_parameters(), strict=True):
        if name in bench.NOISED:
            d, d0 = (p - p0).detach().double(), p0.detach().double()
            rel = float(d.pow(2).mean().sqrt() / d0.pow(2).mean().sqrt())
            assert 0.07 < rel < 0.13, name
        else:
            assert torch.equal(p, p0), name
    again = bench.noised_model(base, 0.1, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), again.parameters(), strict=True))


def test_stratified_truth_agrees_with_exact():
    tab = circuit_tables(checkpoint.load("default"))
    ts = bench.truth_sample("uniform", 64, 4, 40_000, seed=1)
    mu, se, var = bench.stratified_truth(tab, ts)
    exact = evaluate(tab, "uniform").soft_accuracy
    assert 0 < se < 0.01 and var > 0
    assert abs(mu - exact) < 5 * se


@pytest.mark.slow
def test_estimate_bench_quick(tmp_path):
    k10 = MaxKTransformer(ModelConfig(d_vocab=64, n_ctx=10, d_model=32, d_head=32))
    k10.init_weights(torch.Generator().manual_seed(0))
    base = tmp_path / "k10.safetensors"
    checkpoint.save(k10, base)
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["estimate-bench", "--quick", "--base", str(base), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "cumulant" in res.output and "RMSE" in res.output
    data = json.loads(out.read_text())
    fams = {f["name"]: f for f in data["families"]}
    assert set(fams) == {"k10", "k4"}
    k4 = fams["k4"]
    # exact truth for the k=4 family: recompute one model
    tab = circuit_tables(bench.noised_model(checkpoint.load("default"), k4["sigmas"][0], 0))
    assert k4["truth"][0] == pytest.approx(evaluate(tab, "uniform").soft_accuracy, abs=1e-9)
    for fam in fams.values():
        assert len(fam["truth"]) == 2
        for meth in ("systematic", "cumulant", "stratified", "sampling"):
            s = fam["summary"][meth]
            est = np.array([e["estimate"] for e in fam["estimates"][meth]])
            err = est - np.array(fam["truth"])
            assert s["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
            assert s["worst"] == pytest.approx(np.abs(err).max())
            assert s["flops"] > 0 and s["mse_ratio_vs_mc"] > 0
    assert all(se > 0 for se in fams["k10"]["truth_se"])


def test_summary_prices_monte_carlo_at_the_method_flops():
    """MSE ratio = mean over models of Var[p]/⌊FLOPs/f⌋ divided by the method's MSE; the corrected
    figures subtract the truth's mean squared standard error."""
    fam = bench.FamilyResult(
        "f",
        "uniform",
        4,
        [0.1, 0.2],
        truth=[0.9, 0.8],
        truth_se=[0.001, 0.003],
        var_pop=[0.04, 0.16],
        truth_samples=10,
        mc_flops_per_sample=100.0,
    )
    fam.estimates["m"] = [
        {"estimate": 0.91, "flops": 10_050, "seconds": 0.5},
        {"estimate": 0.77, "flops": 20_000, "seconds": 1.5},
    ]
    bench.summarize(fam)
    s = fam.summary["m"]
    mse = (0.01**2 + 0.03**2) / 2
    mc = (0.04 / 100 + 0.16 / 200) / 2
    assert s["mse"] == pytest.approx(mse) and s["mse_ratio_vs_mc"] == pytest.approx(mc / mse)
    se2 = (0.001**2 + 0.003**2) / 2
    assert s["mse_ratio_vs_mc_corrected"] == pytest.approx(mc / (mse - se2))
    assert s["bias"] == pytest.approx(-0.01) and s["worst"] == pytest.approx(0.03)
    assert s["seconds"] == pytest.approx(1.0) and s["max_seconds"] == pytest.approx(1.5)


def test_estimate_bench_rejects_unknown_method():
    res = CliRunner().invoke(main, ["estimate-bench", "--quick", "--methods", "nope"])
    assert res.exit_code == 2 and "unknown estimator" in res.output
