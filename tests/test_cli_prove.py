"""``maxk prove`` through click's test runner, on small models saved to tmp_path."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from click.testing import CliRunner

from maxk import checkpoint
from maxk.cli import main
from maxk.exact import evaluate
from maxk.proofs.registry import STRATEGIES, prove

from .helpers import max_like_model, random_model

KEYS = {"method", "bound", "certified", "n_sequences", "flops", "seconds", "cost"}


@pytest.fixture()
def model_file(tmp_path):
    model = max_like_model(8, 3, 0, 0.02)
    path = tmp_path / "m.safetensors"
    checkpoint.save(model, path)
    return model, str(path)


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_prove_one_strategy_json(model_file):
    model, path = model_file
    res = _run("prove", path, "--strategy", "cubic", "--json")
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert KEYS <= set(obj)
    assert obj["method"] == "cubic" and obj["n_sequences"] == 8**3
    ev = evaluate(model)
    assert 0 < obj["certified"] <= ev.correct
    assert Fraction(obj["bound"]) <= Fraction(obj["certified"], obj["n_sequences"])
    assert obj["bound"] == pytest.approx(obj["certified"] / obj["n_sequences"], rel=1e-15)
    assert obj["flops"] > 0 and obj["seconds"] >= 0 and obj["cost"].startswith("O(")


def test_prove_distinct_and_text_output(model_file):
    _, path = model_file
    res = _run("prove", path, "--strategy", "brute", "--dist", "distinct")
    assert res.exit_code == 0, res.output
    assert "brute: accuracy >=" in res.stdout and "distinct" in res.stdout


def test_prove_all_json_and_table_and_plot(model_file, tmp_path):
    _, path = model_file
    res = _run("prove", path, "--strategy", "all", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["method"] for r in rows] == list(STRATEGIES)
    assert all(KEYS <= set(r) for r in rows)
    brute = next(r for r in rows if r["method"] == "brute")
    assert all(r["certified"] <= brute["certified"] or r["method"] == "brute" for r in rows)
    png = tmp_path / "sub" / "frontier.png"
    res = _run("prove", path, "--strategy", "all", "--plot", str(png))
    assert res.exit_code == 0, res.output
    assert "cubic" in res.stdout and "brute" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in png.parent.iterdir() if p.name.endswith(".tmp")]


def test_prove_errors_are_one_line(model_file, tmp_path):
    _, path = model_file
    res = _run("prove", path, "--strategy", "nope")
    assert res.exit_code == 2 and "unknown proof strategy" in res.stderr
    multi = tmp_path / "multi.safetensors"
    checkpoint.save(random_model(n=5, k=3, d_model=6, d_head=2, heads=3), multi)
    res = _run("prove", str(multi), "--strategy", "subcubic")  # per-head thresholds need 2^j heads
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "power-of-two" in res.stderr
    assert _run("prove", str(multi), "--strategy", "cubic").exit_code == 0  # cubic handles any number
    res = _run("prove", str(tmp_path / "missing.safetensors"))
    assert res.exit_code == 2 and "no such file" in res.stderr
    res = _run("prove")
    assert res.exit_code == 2


def test_prove_list():
    res = _run("prove", "--list")
    assert res.exit_code == 0
    for name, st in STRATEGIES.items():
        assert f"{name:24s} {st.cost:16s} {st.summary}" in res.stdout
        for r in st.refuses:
            assert f"    refuses: {r.reason}" in res.stdout


def test_prove_frontier_traces_knobs_and_plots(model_file, tmp_path):
    model, path = model_file
    png = tmp_path / "front.png"
    res = _run("prove", path, "--strategy", "all", "--frontier", "--json", "--plot", str(png))
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert png.stat().st_size > 0
    hybrid = [r["options"] for r in rows if r["method"] == "hybrid" and r["options"]]
    tops = [o["cubic_top"] for o in hybrid if "base_budget" not in o]
    assert tops == [1, 1, 2, 3, 4, 6]  # n = 8: the cheapest cubic options first, then 1, 2, 3, 4, 6 < n
    on_budget = [(o["cubic_top"], o["cubic_pick"]) for o in hybrid if "base_budget" in o]
    assert on_budget == [(t, "loss") for t in (1, 2, 3, 4, 6)] * 2  # on each budgeted base
    assert any(r["method"] == "cubic" and r["options"] for r in rows)
    correct = evaluate(model).correct
    assert all(r["certified"] <= correct for r in rows)


def test_frontier_needs_strategy_all(model_file):
    _, path = model_file
    res = _run("prove", path, "--frontier")
    assert res.exit_code == 2 and "--frontier needs --strategy all" in res.output


def test_prove_takes_the_strategy_options_typed(model_file):
    model, path = model_file
    res = _run("prove", path, "--strategy", "subcubic-coupled", "-o", "exact_outputs=2", "--option", "rival_order=evou")
    assert res.exit_code == 0, res.output
    want = prove(model, "subcubic-coupled", exact_outputs=2, rival_order="evou")
    assert res.stdout.startswith("subcubic-coupled exact_outputs=2 rival_order=evou: ")
    assert f"({want.certified:,} of" in res.stdout
    res = _run("prove", path, "--strategy", "hybrid", "-o", "base_budget=2e4", "-o", "cubic_top=1", "--json")
    obj = json.loads(res.stdout)
    assert obj["options"] == {"base_budget": 20000.0, "cubic_top": 1}
    assert obj["certified"] == prove(model, "hybrid", base_budget=2e4, cubic_top=1).certified


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "exact_outputs=2.5"], "option exact_outputs wants an integer, not '2.5'"),
        (["-o", "flop_budget=lots"], "option flop_budget wants a number, not 'lots'"),
        (["-o", "exact_outputs"], "--option wants KEY=VALUE, not 'exact_outputs'"),
        (["-o", "budget=3"], "'subcubic-coupled' does not take option budget (it takes attention,"),
        (["-o", "rival_order=best"], "unknown rival order 'best'"),
        (["--strategy", "all", "-o", "exact_outputs=2"], "--option needs one --strategy, not 'all'"),
    ],
)
def test_bad_options_are_one_line_errors(model_file, args, message):
    _, path = model_file
    strategy = [] if "--strategy" in args else ["--strategy", "subcubic-coupled"]
    res = _run("prove", path, *strategy, *args)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
