"""Surprise accounting on small models: the prior against direct counting, the cache, the weights
search, the hand-worked n = 4, k = 2 rows, registry coverage, the command's JSON and errors."""

from __future__ import annotations

import json
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from maxk import ModelConfig, checkpoint, evaluate, prove, trained_model
from maxk.circuits import circuit_tables
from maxk.distributions import resolve
from maxk.errors import MaxkError
from maxk.estimators.registry import ESTIMATORS
from maxk.exact import all_sequences
from maxk.flops import FlopCounter
from maxk.proofs.enclose import enclosed_tables
from maxk.proofs.registry import STRATEGIES
from maxk.results import Result
from maxk.surprise import Prior, SurpriseTable, explanation_names, surprise
from maxk.surprise.brute_checks import pattern_rates
from maxk.surprise.cubic_checks import candidate_settings, certificates, cubic_facts, cubic_prior
from maxk.surprise.patterns import pattern_keys, patterns, support_patterns
from maxk.surprise.prior import init_model, weights_hash
from maxk.surprise.weights import describe_weights, described_model, settings_of

from .test_cli import assert_one_line_error, maxk_cli
from .test_surprise_tails import exact_tail_bits

SMALL = ModelConfig(d_vocab=6, n_ctx=3, d_model=8, d_head=8)


def quick_table(model, **kw) -> SurpriseTable:
    """A table with small calibration, prior and weights-search budgets, no cache."""
    kw.setdefault("prior", 2)
    return surprise(model, "uniform", calibration_models=2, weights_evaluations=4, cache=False, **kw)


@pytest.fixture(scope="module")
def small_trained():
    return trained_model(SMALL, seed=0, steps=400)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MAXK_CACHE", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------- patterns


@pytest.mark.parametrize("n, k", [(5, 3), (4, 4), (6, 2)])
def test_patterns_partition_every_input(n, k):
    toks = all_sequences(n, k)
    counts = Counter(pattern_keys(toks))
    sizes = {p.key: p.size(n) for p in patterns(k)}
    assert {key: s for key, s in sizes.items() if s} == dict(counts)
    rng = np.random.default_rng(0)
    for p in patterns(k):
        if p.size(n) == 0:
            continue
        assert set(pattern_keys(p.sample(n, 50, rng))) == {p.key}
        listed = p.inputs(n)
        assert len(listed) == p.size(n) == len({tuple(r) for r in listed})


@pytest.mark.parametrize("dist", ["uniform", "distinct", "query-unique"])
def test_support_patterns_cover_the_support(dist):
    n, k = 6, 3
    d = resolve(dist, n, k)
    pats = dict((p.key, s) for p, s in support_patterns(d, n, k))
    toks = all_sequences(n, k)
    keep = d.support_rows(toks, query_last=True)
    inside = toks if keep is None else toks[keep]
    assert dict(Counter(pattern_keys(inside))) == pats


# ---------------------------------------------------------------- the prior


def test_pattern_rates_equal_direct_counting():
    """With every pattern smaller than the sample size, the prior's pass counts are exact: they
    equal a direct count of correct inputs over every input of each initialisation."""
    d = resolve("uniform", SMALL.n, SMALL.k)
    prior = Prior(SMALL, d.name, 3, cache=False)
    stats = pattern_rates(prior, d, samples=10_000)
    toks = all_sequences(SMALL.n, SMALL.k)
    keys = pattern_keys(toks)
    for j, model in enumerate(prior.models()):
        logits = circuit_tables(model).logits(toks)
        label = toks.max(axis=1)
        right = logits[np.arange(len(toks)), label]
        others = logits.copy()
        others[np.arange(len(toks)), label] = -np.inf
        correct = right > others.max(axis=1)
        direct = Counter(k for k, c in zip(keys, correct, strict=True) if c)
        trials = Counter(keys)
        for key in trials:
            assert stats[key]["passes"][j] == direct.get(key, 0)
            assert stats[key]["trials"][j] == trials[key]
    per_model = [sum(st["passes"][j] for key, st in stats.items() if key != "mean_accuracy") for j in range(3)]
    assert stats["mean_accuracy"] == pytest.approx(np.mean(per_model) / SMALL.n**SMALL.k, rel=1e-12)


def test_cubic_prior_equals_direct_counting():
    d = resolve("uniform", SMALL.n, SMALL.k)
    prior = Prior(SMALL, d.name, 2, cache=False)
    settings = candidate_settings()[0]
    sec = cubic_prior(prior, d, settings)
    for j, model in enumerate(prior.models()):
        c = FlopCounter()
        tab = enclosed_tables(model, c)
        passes, trials, total = Counter(), Counter(), 0
        for m in range(SMALL.n):
            cert = certificates(tab, m, d, c, settings)
            total += cert.count(c)
            assert cert.ok is not None or m == 0
            for q in range(m + 1):
                key = f"cert0:{'eq' if q == m else 'ne'}"
                passes[key] += int(cert.cert0[q])
                trials[key] += 1
                # uniform: (q, cc) occurs iff the max appears (q = m, or a free copy: cc <= k-2)
                for cc in range(1, SMALL.k if q == m else SMALL.k - 1):
                    for t in range(m):
                        cls = "eq" if q == m else ("tq" if t == q else "ne")
                        assert cert.ok is not None
                        passes[f"ok:{cls}:c{cc}"] += int(cert.ok[q, cc - 1, t])
                        trials[f"ok:{cls}:c{cc}"] += 1
        assert sec["certified"][j] == total == prove(model, "cubic", d).certified
        for key in trials:
            assert sec["classes"][key]["passes"][j] == passes[key]
            assert sec["classes"][key]["trials"][j] == trials[key]


def test_cubic_facts_match_the_proof(small_trained):
    d = resolve("uniform", SMALL.n, SMALL.k)
    found = cubic_facts(small_trained, d, prove(small_trained, "cubic", d).certified)
    assert found is not None  # the itemisation reproduces the registry's count
    assert sum(found[0].values()) > 0


def test_prior_is_the_training_init_and_reproducible_from_the_cache(cache_dir):
    import torch

    from maxk.model import MaxKTransformer

    ref = MaxKTransformer(SMALL)
    ref.init_weights(torch.Generator().manual_seed(1_000_000))
    assert weights_hash(init_model(SMALL, 1_000_000)) == weights_hash(ref)
    d = resolve("uniform", SMALL.n, SMALL.k)
    first = Prior(SMALL, d.name, 3)
    sec = pattern_rates(first, d, samples=64)
    assert first.path.exists() and str(cache_dir) in str(first.path)
    again = Prior(SMALL, d.name, 3)  # read back from disk
    assert again.sections == first.sections and again.hashes == first.hashes
    fresh = pattern_rates(Prior(SMALL, d.name, 3, cache=False), d, samples=64)  # recomputed from the seeds
    assert fresh == sec
    data = json.loads(first.path.read_text())
    data["hashes"][0] = "0" * 16
    first.path.write_text(json.dumps(data))
    with pytest.raises(MaxkError, match="initialises other weights"):
        Prior(SMALL, d.name, 3).models()
    first.path.write_text("{not json")
    with pytest.raises(MaxkError, match="unreadable cache"):
        Prior(SMALL, d.name, 3)


# ---------------------------------------------------------------- the weights


def test_weights_description_reproduces_behaviour(small_trained):
    d = resolve("uniform", SMALL.n, SMALL.k)
    target = evaluate(small_trained, d).correct
    desc = describe_weights(small_trained, d, evaluations=10)
    model, bits = described_model(small_trained, settings_of(desc))
    count = evaluate(model, d).correct
    assert count is not None and target is not None
    assert count == desc.count and abs(count - target) <= desc.tol
    assert bits == pytest.approx(desc.bits) and desc.bits < desc.raw_bits
    assert desc.evaluations <= 10


# ---------------------------------------------------------------- the table


def test_hand_worked_n4_k2(cache_dir):
    """n = 4, k = 2 (N = 16): the none row is the exact tail P(Bin(16, 1/4) >= c); each proof
    leaves the tail of its N - B uncertified inputs."""
    cfg = ModelConfig(d_vocab=4, n_ctx=2, d_model=8, d_head=8)
    model = trained_model(cfg, seed=0, steps=300)
    ev = evaluate(model, "uniform")
    assert ev.correct is not None
    table = quick_table(model)
    none = table.row("none")
    assert none.s_y_given_pi == pytest.approx(exact_tail_bits(16, ev.correct, Fraction(1, 4)), abs=1e-9)
    assert none.s_pi == 0 and none.total == none.s_y_given_pi
    for name in ("brute", "cubic"):
        row = table.row(name)
        B = row.details["certified"]
        assert row.s_y_given_pi == pytest.approx(exact_tail_bits(16 - B, ev.correct - B, Fraction(1, 4)), abs=1e-9)
        assert row.total == pytest.approx(row.s_pi + row.s_y_given_pi)
    assert table.row("brute").s_y_given_pi == 0.0
    assert Result.from_dict(json.loads(json.dumps(table.to_dict()))) == table


def test_every_registered_method_gets_a_row(small_trained):
    def dummy_strategy(model, dist, *, counter):
        counter.add(1)
        return 0

    def dummy_estimator(tables, dist, *, counter, rng):
        return 0.5

    STRATEGIES.register("dummy-proof", dummy_strategy, cost="O(1)", summary="certifies nothing")
    ESTIMATORS.register("dummy-estimator", dummy_estimator, cost="O(1)", summary="always one half")
    try:
        assert {"dummy-proof", "dummy-estimator"} <= set(explanation_names())
        table = quick_table(small_trained, explanations=["none", "dummy-proof", "dummy-estimator"])
        proof, est = table.row("dummy-proof"), table.row("dummy-estimator")
        assert proof.details["certified"] == 0 and proof.s_y_given_pi == pytest.approx(table.row("none").total)
        assert est.details["estimate"] == 0.5 and est.observed == "soft_accuracy"
    finally:
        STRATEGIES._methods.pop("dummy-proof")
        ESTIMATORS._methods.pop("dummy-estimator")


def test_full_table_and_family(small_trained):
    table = quick_table(small_trained)
    names = table.names()
    assert names[:3] == ["none", "none-soft", "weights"]
    assert set(STRATEGIES.names()) | set(ESTIMATORS.names()) <= set(names) | set(table.refused)
    for r in table.rows:
        assert r["total"] == pytest.approx(r["s_pi"] + r["s_y_given_pi"])
        assert r["kind"] in ("exact", "estimate", "bound") and r["s_pi"] >= 0 and r["s_y_given_pi"] >= 0
    assert table.row("cubic").dimensionality == 3 * 36 + 2 * 6 * 3
    assert table.row("brute").dimensionality == 6**4
    fam = quick_table(small_trained, family=2, explanations=["none", "cubic", "mean"])
    assert fam.family is not None and len(fam.family["observed"]) == 2
    members = fam.row("cubic").details["members"]
    assert fam.row("cubic").total == pytest.approx(np.mean([m["total"] for m in members]))


def test_bad_arguments_raise_maxk_errors(small_trained):
    with pytest.raises(MaxkError, match="unknown explanation"):
        quick_table(small_trained, explanations=["nope"])
    with pytest.raises(MaxkError, match="at least 2 initialisations"):
        quick_table(small_trained, prior=1)
    with pytest.raises(MaxkError, match="family"):
        quick_table(small_trained, family=0)


# ---------------------------------------------------------------- the command


@pytest.fixture
def small_file(tmp_path, small_trained):
    p = tmp_path / "small.safetensors"
    checkpoint.save(small_trained, p, {"seed": 0})
    return p


def test_cli_json_schema(small_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MAXK_CACHE", str(tmp_path / "cache"))
    proc = maxk_cli("surprise", small_file, "--json", "--prior-samples", 2, "--calibration", 2, "--weights-evals", 3)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out["rows"], list) and out["kind"] == "surprise"
    names = [r["explanation"] for r in out["rows"]]
    assert names[:3] == ["none", "none-soft", "weights"] and "brute" in names and "wick-residual" in names
    for r in out["rows"]:
        for key in ("s_pi", "s_y_given_pi", "total", "observed_value"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (r["explanation"], key)
        assert r["observed"] in ("accuracy", "soft_accuracy")
        assert r["kind"] in ("exact", "estimate", "bound")
        assert isinstance(r["checks"], list)
    assert (tmp_path / "cache" / "surprise").is_dir()  # the prior was cached
    text = maxk_cli(
        "surprise", small_file, "--prior-samples", 2, "--calibration", 2, "--weights-evals", 3, "--checks", "cubic"
    )
    assert text.returncode == 0, text.stderr
    assert "ranked (accuracy" in text.stdout and "Checks behind" in text.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--family", "0"),
        ("--prior-samples", "1"),
        ("--explanations", "bogus"),
        ("--dist", "nope"),
        ("--checks", "bogus", "--explanations", "none"),
    ],
)
def test_cli_bad_input_one_line(small_file, args, tmp_path, monkeypatch):
    monkeypatch.setenv("MAXK_CACHE", str(tmp_path / "cache"))
    assert_one_line_error(maxk_cli("surprise", small_file, *args))


def test_cli_missing_model_one_line(tmp_path):
    assert_one_line_error(maxk_cli("surprise", tmp_path / "missing.safetensors"))
