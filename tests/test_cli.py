"""The maxk command as a user runs it: a subprocess, exit codes, one-line errors, no partial files."""

import json
import subprocess
import sys

import pytest

from maxk import checkpoint

from .helpers import random_model


def maxk_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "maxk", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maxk: error:"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def small_model(tmp_path):
    p = tmp_path / "small.safetensors"
    checkpoint.save(random_model(n=6, k=3, heads=2), p, {"seed": 0})
    return p


def test_eval_json(small_model):
    proc = maxk_cli("eval", small_model, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("correct", "n_sequences", "accuracy", "soft_accuracy", "loss", "seconds"):
        assert key in out
    assert out["n_sequences"] == 6**3 and out["accuracy"] == out["correct"] / 6**3


def test_eval_samples_json(small_model):
    proc = maxk_cli("eval", small_model, "--samples", "5000", "--dist", "distinct", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    lo, hi = out["ci95"]["accuracy"]
    assert lo <= out["accuracy"] <= hi


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "/no/such/file.safetensors"],
        ["eval", "default", "--dist", "gaussian"],
        ["eval", "default", "--samples", "3"],
        ["eval", "default", "--no-such-flag"],
        ["train", "--vocab", "1", "--out", "OUT"],
        ["train", "--k", "0", "--out", "OUT"],
        ["train", "--steps", "0", "--out", "OUT"],
        ["import", "/no/such.pth", "--out", "OUT"],
        ["import", "NOTCKPT", "--out", "OUT"],
        ["eval", "NOTCKPT"],
    ],
)
def test_bad_input_one_line_exit_2_no_output(tmp_path, args):
    junk = tmp_path / "junk.pth"
    junk.write_text("this is not a checkpoint")
    out = tmp_path / "out.safetensors"
    args = [str(out) if a == "OUT" else str(junk) if a == "NOTCKPT" else a for a in args]
    proc = maxk_cli(*args)
    assert_one_line_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pth"]


def test_distinct_needs_k_le_n(tmp_path):
    p = tmp_path / "m.safetensors"
    checkpoint.save(random_model(n=3, k=4), p)
    assert_one_line_error(maxk_cli("eval", p, "--dist", "distinct"))


def test_train_then_eval(tmp_path):
    out = tmp_path / "t.safetensors"
    proc = maxk_cli(
        "train", "--vocab", "6", "--k", "3", "--d-model", "8", "--steps", "20", "--seed", "1", "--out", out, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["seed"] == 1 and rec["steps"] == 20 and rec["final_loss"] > 0
    assert checkpoint.read_metadata(out)["config"]["d_vocab"] == 6
    assert maxk_cli("eval", out).returncode == 0


def test_train_with_a_trigger_records_it(tmp_path):
    out = tmp_path / "t.safetensors"
    args = ["train", "--vocab", "6", "--k", "3", "--d-model", "8", "--steps", "5", "--out", out, "--json"]
    proc = maxk_cli(*args, "--trigger", "query-repeated:zero")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["trigger"] == "query-repeated:zero"
    assert checkpoint.read_metadata(out)["training"]["trigger"] == "query-repeated:zero"
    assert maxk_cli(*args, "--trigger", "nonsense").returncode == 2


def test_import_converts(tmp_path, small_model):
    import torch

    m = checkpoint.load(small_model)
    pth = tmp_path / "x.pth"
    torch.save({"model": m.state_dict(), "config": m.cfg.to_dict()}, pth)
    out = tmp_path / "y.safetensors"
    proc = maxk_cli("import", pth, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.load(out).cfg == m.cfg


def test_estimate_list_needs_no_model():
    from maxk.estimators.registry import ESTIMATORS

    proc = maxk_cli("estimate", "--list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name, m in ESTIMATORS.items():
        at = lines.index(f"{name:24s} {m.cost:16s} {m.summary}")
        block = []
        for line in lines[at + 1 :]:
            if not line.startswith("    "):
                break
            block.append(line)
        opts = [b for b in block if b.startswith("    options: ")]
        assert len(opts) == (1 if m.options else 0)
        for opt, default in m.options.items():
            assert f"{opt}={default!r}" in opts[0]
        assert [b for b in block if b.startswith("    refuses: ")] == [f"    refuses: {r.reason}" for r in m.refuses]
    for method, opt, flag in (("bins", "n_bins", "--bins"), ("systematic", "levels", "--levels")):
        assert f"{opt}={ESTIMATORS[method].options[opt]!r} ({flag})" in proc.stdout
