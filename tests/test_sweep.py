"""maxk.sweep: the plan, declared-cost decisions, the on-disk layout, skip/redo, SIGKILL restarts."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import maxk
from maxk.config import ModelConfig
from maxk.distributions import resolve
from maxk.errors import MaxkError
from maxk.estimators.registry import ESTIMATORS
from maxk.proofs.registry import STRATEGIES
from maxk.results import EvalResult, Result
from maxk.sweep import parse_seeds, read_records, without_timings
from maxk.sweep.budget import CostSyntaxError, _Parser, declared_cost, growth, planned_refusal
from maxk.sweep.plan import DEFAULT_BUDGET, PAPER_CONFIGS, config_dir, model_configs
from maxk.sweep.seed import REFUSED, guarded, surprise_available, weights_sha256
from maxk.sweep.store import MANIFEST, locked

# A configuration small enough that a seed takes about a second (n^k = 216 inputs).
TINY: dict[str, Any] = dict(k=3, vocab=6, d_model=8, steps=20)
SEEDS = "0-3"


def comparable(out) -> list:
    """Every record under ``out`` without timings, with the weights of each model file."""
    from safetensors.torch import load_file, save

    recs = read_records(out)
    for r in recs:
        path = Path(out) / config_dir(ModelConfig.from_dict(r["config"])) / r["model"]
        r["weights_in_file"] = hashlib.sha256(save(load_file(str(path)))).hexdigest()
    return [without_timings(r) for r in recs]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted in-process sweep of the tiny configuration (with the Wick summary)."""
    out = tmp_path_factory.mktemp("reference")
    summary = maxk.sweep(out, seeds=SEEDS, extras=["wick"], **TINY)
    return out, summary


# ---------------------------------------------------------------- the plan


def test_parse_seeds():
    assert parse_seeds("0-3") == (0, 1, 2, 3)
    assert parse_seeds("5,0-2,2") == (0, 1, 2, 5)
    assert parse_seeds(7) == (7,)
    assert parse_seeds([3, 1]) == (1, 3)
    for bad in ("3-1", "a", "", "1-", [-1], True):
        with pytest.raises(MaxkError):
            parse_seeds(bad)


def test_config_dirs_and_paper_configs():
    assert config_dir(ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32)) == "k4-n64-d32"
    assert config_dir(ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=16, n_heads=2)) == "k4-n64-d32-h2-dh16"
    cfgs = model_configs(paper=True)
    assert [(c.n_ctx, c.d_vocab) for c in cfgs] == list(PAPER_CONFIGS)
    assert all(c.d_model == c.d_head == 32 for c in cfgs)
    assert [(c.n_ctx, c.d_vocab) for c in model_configs("4,5", "6,8", 8)] == [(4, 6), (4, 8), (5, 6), (5, 8)]
    with pytest.raises(MaxkError):
        model_configs("4,x", 8)


# ---------------------------------------------------------------- declared costs


def test_every_registered_cost_is_readable():
    cfg = ModelConfig(d_vocab=512, n_ctx=20, d_model=32, d_head=32)
    for reg in (STRATEGIES, ESTIMATORS):
        for _name, method in reg.items():
            assert declared_cost(method, cfg) > 0


def test_cost_expressions():
    vals = {"n": 4.0, "k": 3.0, "b": 8.0}
    ev = lambda s: _Parser(s, vals.__getitem__).parse()  # noqa: E731
    assert ev("O(n^3 k^2)") == 4**3 * 9
    assert ev("O(n^(k+1))") == 4**4
    assert ev("O(n·(n + k))") == 4 * 7
    assert ev("O(n^2 k log n + b^2 log b)") == 16 * 3 * 2 + 64 * 3
    assert ev("O(log k)") == pytest.approx(1.584962500721156)
    assert ev("O(log 1)") == 1.0  # logarithms are at least 1
    with pytest.raises(CostSyntaxError):
        ev("O(n^)")
    with pytest.raises(KeyError):
        ev("O(zeta)")
    assert declared_cost(STRATEGIES.get("cubic"), ModelConfig(d_vocab=4, n_ctx=3, d_model=8, d_head=8)) == 576


def test_planned_refusals_at_the_largest_paper_config():
    """At n = 512, k = 20 brute force refuses by its own declaration, and with the default budget
    the methods whose declared cost grows more than 1000-fold from k = 4, n = 64 are refused with
    that reason; the quadratic proofs and the sampling estimators are planned to run."""
    cfg = ModelConfig(d_vocab=512, n_ctx=20, d_model=32, d_head=32)
    d = resolve("uniform", 512, 20)
    brute = planned_refusal(STRATEGIES.get("brute"), cfg, d, 1e300)
    assert brute is not None and "4e+09" in brute
    refused = {}
    for reg in (STRATEGIES, ESTIMATORS):
        for name, m in reg.items():
            reason = planned_refusal(m, cfg, d, DEFAULT_BUDGET)
            if reason is not None:
                refused[name] = reason
            assert (reason is not None) == (name == "brute" or growth(m, cfg) > DEFAULT_BUDGET), name
    assert {"brute", "cubic", "mean", "bins", "cumulant", "wick-residual"} <= set(refused)
    assert {"subcubic", "sampling", "stratified", "systematic"}.isdisjoint(refused)
    assert "budget" in refused["cubic"] and "1.28e+04 times" in refused["cubic"]
    small = ModelConfig(d_vocab=64, n_ctx=10, d_model=32, d_head=32)
    assert all(
        planned_refusal(m, small, resolve("uniform", 64, 10), DEFAULT_BUDGET) is None
        for reg in (STRATEGIES, ESTIMATORS)
        for name, m in reg.items()
        if name != "brute"
    )


# ---------------------------------------------------------------- the memory cap


@pytest.mark.parametrize("allocate", ["numpy", "torch"])
def test_a_method_over_the_memory_cap_is_a_refusal(allocate):
    import resource

    import numpy as np
    import torch

    before = resource.getrlimit(resource.RLIMIT_AS)

    def greedy() -> dict:
        big = np.ones(1 << 31) if allocate == "numpy" else torch.ones(1 << 31, dtype=torch.float64)  # 16 GiB
        return {"kind": "estimate", "size": int(big.shape[0])}

    rec = guarded("greedy", greedy, 0.5)
    assert rec["kind"] == REFUSED and rec["method"] == "greedy" and "0.5 GiB" in rec["reason"]
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the cap is lifted after
    assert guarded("small", lambda: {"kind": "estimate", "n": int(np.ones(1000).sum())}, 0.5)["n"] == 1000
    with pytest.raises(RuntimeError, match="not memory"):  # other errors are not refusals
        guarded("bug", lambda: (_ for _ in ()).throw(RuntimeError("not memory")), 0.5)


# ---------------------------------------------------------------- one sweep, its layout and records


def test_layout_and_records(reference):
    out, summary = reference
    assert len(summary.written) == 4 and summary.skipped == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "maxk-sweep"
    for key in ("maxk", "torch", "numpy", "python", "created", "options"):
        assert key in manifest
    assert manifest["options"]["seeds"] == [0, 1, 2, 3]
    folder = out / "k3-n6-d8"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"seed-000{s}.{e}" for s in range(4) for e in ("json", "safetensors")
    ]
    for rec in read_records(out):
        assert rec["kind"] == "maxk-sweep-seed" and rec["dist"] == "uniform"
        assert rec["recipe"] == {"steps": 20, "batch": 128, "lr": 1e-3, "weight_decay": 0.01}
        model = maxk.load(folder / rec["model"])
        assert weights_sha256(model) == rec["model_sha256"]
        assert model.training_record is not None and model.training_record["seed"] == rec["seed"]
        ev = Result.from_dict(rec["eval"])
        assert isinstance(ev, EvalResult)
        assert ev.method == "exhaustive" and ev.accuracy == maxk.evaluate(model).accuracy
        assert [p["method"] for p in rec["proofs"]] == STRATEGIES.names()
        assert [e["method"] for e in rec["estimates"]] == ESTIMATORS.names()
        for r in rec["proofs"] + rec["estimates"]:
            if r["kind"] != REFUSED:
                assert Result.from_dict(r).to_dict() == r
        for p in rec["proofs"]:
            if p["kind"] != REFUSED:
                assert p["bound"] <= ev.accuracy  # a proof never exceeds the truth
        assert rec["wick"]["exhaustive"] is True and rec["wick"]["n_inputs"] == 216
        assert rec["surprise"] is None and rec["frontier"] is None
        assert set(rec["seconds"]) == {"train", "eval", "proofs", "estimates", "wick"}


def test_budget_refusals_are_recorded(tmp_path):
    """A budget below some methods' cost growth: exactly those appear as refusals, with reasons.
    (And a Wick summary over more inputs than --wick-samples is sampled.)"""
    cfg = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8)
    budget = 3e-3  # the tiny model's costs are far below the reference's: a small budget bites
    maxk.sweep(tmp_path, seeds=0, budget=budget, extras=["wick"], wick_samples=50, **TINY)
    (rec,) = read_records(tmp_path)
    assert rec["wick"]["exhaustive"] is False and rec["wick"]["n_inputs"] == 50  # 216 inputs > 50: sampled
    expected = {name for reg in (STRATEGIES, ESTIMATORS) for name, m in reg.items() if growth(m, cfg) > budget}
    assert expected and len(expected) < len(STRATEGIES) + len(ESTIMATORS)  # the budget bites, not on all
    refused = {r["method"] for r in rec["proofs"] + rec["estimates"] if r["kind"] == REFUSED}
    assert refused == expected
    assert all("budget" in r["reason"] for r in rec["proofs"] + rec["estimates"] if r["kind"] == REFUSED)


def test_with_frontier_runs_every_budgeted_estimator_within_each_budget(tmp_path):
    """--with frontier: each budgeted estimator at each budget spends at most the budget (or
    refuses a budget below its cheapest setting), the per-input variance matches the exact one,
    and a method over the sweep's cost budget is recorded refused at every budget, unrun."""
    from itertools import product

    import numpy as np

    from maxk.circuits import circuit_tables
    from maxk.estimators.bench import soft_probs_fast
    from maxk.estimators.frontier import FRONTIER_METHODS

    budgets = (3e4, 1e5, 1e6)
    maxk.sweep(tmp_path, seeds=0, extras=["frontier"], frontier_budgets=budgets, wick_samples=20_000, **TINY)
    (rec,) = read_records(tmp_path)
    fr = rec["frontier"]
    assert rec["options"]["frontier_budgets"] == list(budgets) and "frontier" in rec["seconds"]
    assert fr["methods"] == list(FRONTIER_METHODS) and fr["budgets"] == list(budgets)
    assert set(fr["runs"]) == {f"{m}@{b:g}" for m in FRONTIER_METHODS for b in budgets}
    ran = 0
    for key, run in fr["runs"].items():
        budget = float(key.split("@")[1])
        if "refused" in run:
            assert "too small" in run["refused"], run
            continue
        ran += 1
        assert 0 < run["flops"] <= budget, (key, run)
        assert 0.0 <= run["estimate"] <= 1.0
    assert ran >= len(FRONTIER_METHODS) * (len(budgets) - 1)
    model = maxk.load(tmp_path / "k3-n6-d8" / rec["model"])
    every = np.array(list(product(range(6), repeat=3)))
    exact_var = soft_probs_fast(circuit_tables(model), every).var()
    assert fr["var_pop"] == pytest.approx(exact_var, rel=0.1)

    cfg = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8)
    small = 3e-3
    maxk.sweep(tmp_path / "b", seeds=0, extras=["frontier"], frontier_budgets=budgets, budget=small, **TINY)
    (rec,) = read_records(tmp_path / "b")
    over = {m for m in FRONTIER_METHODS if growth(ESTIMATORS.get(m), cfg) > small}
    assert over and over != set(FRONTIER_METHODS)
    for key, run in rec["frontier"]["runs"].items():
        method = key.split("@")[0]
        if method in over:
            assert run == {"refused": planned_refusal(ESTIMATORS.get(method), cfg, resolve("uniform", 6, 3), small)}
        else:
            assert "estimate" in run or "too small" in run["refused"]


def test_rerun_skips_and_redoes_partial(reference, tmp_path):
    out, _ = reference
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = maxk.sweep(copy, seeds=SEEDS, extras=["wick"], **TINY)
    assert again.skipped == 4 and again.written == []
    # a partial seed: the model was written, the record not; and a stray temporary file
    (copy / "k3-n6-d8" / "seed-0002.json").unlink()
    (copy / "k3-n6-d8" / ".seed-0001.json.abc.tmp").write_text("{")
    redo = maxk.sweep(copy, seeds=SEEDS, extras=["wick"], **TINY)
    assert redo.skipped == 3 and [p.name for p in redo.written] == ["seed-0002.json"]
    assert not list((copy / "k3-n6-d8").glob(".*.tmp"))
    assert comparable(copy) == comparable(out)


def test_other_options_are_refused_unless_redo(reference, tmp_path):
    out, _ = reference
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(MaxkError, match="other options"):
        maxk.sweep(copy, seeds=SEEDS, **TINY)  # without the Wick summary
    done = maxk.sweep(copy, seeds=0, redo=True, **TINY)
    assert len(done.written) == 1
    assert read_records(copy)[0]["wick"] is None


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    with locked(tmp_path), pytest.raises(MaxkError, match="another sweep"):
        maxk.sweep(tmp_path, seeds=0, **TINY)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seeds="9-1"),
        dict(extras=["nope"]),
        dict(dist="gaussian"),
        dict(steps=0),
        dict(workers=0),
        dict(workers=2, scheduler="tcp://127.0.0.1:1"),
        dict(budget=0),
    ],
)
def test_bad_input(tmp_path, kwargs):
    args = {**TINY, "seeds": 0, **kwargs}
    with pytest.raises(MaxkError):
        maxk.sweep(tmp_path / "out", **args)
    assert not list((tmp_path / "out").glob("*/seed-*"))


# ---------------------------------------------------------------- the command


def maxk_cli(*args):
    return subprocess.run([sys.executable, "-m", "maxk", *map(str, args)], capture_output=True, text=True)


TINY_ARGS = ["--k", "3", "--vocab", "6", "--d-model", "8", "--steps", "20"]


def test_cli_sweep_json(tmp_path):
    proc = maxk_cli("sweep", "--seeds", "0", *TINY_ARGS, "--out", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["written"] == 1 and info["skipped"] == 0 and info["runner"] == "in-process"
    assert (tmp_path / "k3-n6-d8" / "seed-0000.json").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--seeds", "x"],
        ["--with", "nope"],
        ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
        ["--vocab", "1"],
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, args):
    proc = maxk_cli("sweep", *TINY_ARGS, "--out", tmp_path / "o", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maxk: error:"), proc.stderr


@pytest.mark.skipif(surprise_available(), reason="maxk.surprise is installed: --with surprise runs")
def test_with_surprise_needs_the_module(tmp_path):
    proc = maxk_cli("sweep", "--seeds", "0", *TINY_ARGS, "--out", tmp_path, "--with", "surprise")
    assert proc.returncode == 2 and "maxk.surprise" in proc.stderr
    assert not list(tmp_path.glob("*/seed-*"))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_finish(reference, tmp_path):
    """Killed (SIGKILL) at random moments several times and restarted, the sweep ends with every
    seed's record once, whole, and identical to the uninterrupted run's."""
    out = tmp_path / "killed"
    rng = random.Random(12)
    args = ["sweep", "--seeds", SEEDS, *TINY_ARGS, "--with", "wick", "--out", str(out)]
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "maxk", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(1.0, 6.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        for rec_path in out.glob("*/seed-*.json"):  # whatever is there is whole
            assert json.loads(rec_path.read_text())["kind"] == "maxk-sweep-seed"
    assert kills >= 2
    final = maxk_cli(*args)
    assert final.returncode == 0, final.stderr
    names = sorted(p.name for p in (out / "k3-n6-d8").glob("seed-*.json"))
    assert names == [f"seed-000{s}.json" for s in range(4)]
    assert not list(out.glob("*/.*.tmp"))
    assert comparable(out) == comparable(reference[0])


@pytest.mark.slow
@pytest.mark.skipif(not surprise_available(), reason="maxk.surprise is not installed")
def test_with_surprise_adds_the_table(tmp_path):
    maxk.sweep(tmp_path, seeds=0, extras=["surprise"], **TINY)
    (rec,) = read_records(tmp_path)
    assert isinstance(rec["surprise"]["rows"], list) and rec["surprise"]["rows"]
    assert "surprise" in rec["seconds"]
    json.dumps(rec, allow_nan=False)  # plain JSON, no NaN or infinity
