"""Suites every registered estimator passes unedited, and the result records' contract.

A new estimator registered in ``maxk.estimators.registry`` is picked up here (the proof
strategies' suite is tests/test_proofs_soundness.py): it must be near-exact on a model with a
closed-form soft accuracy, close to exhaustive evaluation on small random models, and refuse a
model only as it declared.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import maxk
from maxk.circuits import CircuitTables, circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import DISTINCT, UNIFORM
from maxk.errors import MaxkError
from maxk.estimators.registry import ESTIMATORS, estimate
from maxk.exact import evaluate
from maxk.proofs.registry import STRATEGIES, prove
from maxk.registry import Registry, declared_options
from maxk.results import Estimate, EvalResult, ProofResult, Result

from .helpers import max_like_model, random_model

DISTS = [UNIFORM, DISTINCT]
SAMPLES = {"samples": 4000}


def _options(name: str) -> dict:
    return {k: v for k, v in SAMPLES.items() if k in ESTIMATORS.get(name).options}


def _attend_to_max(n: int, k: int, alpha: float) -> CircuitTables:
    """All attention on the copies of the max, EVOU = alpha·I: every input has soft accuracy
    e^α / (e^α + n − 1)."""
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=4, d_head=4)
    eqke = np.tile(30.0 * np.arange(n, dtype=np.float64), (n, 1))  # the next token down gets e^-30
    z = np.zeros
    return CircuitTables(cfg, eqke[None], z((1, n, k)), alpha * np.eye(n)[None], z((1, k, n)), z((n, n)))


@pytest.mark.parametrize("dist", DISTS, ids=lambda d: d.name)
@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_is_exact_on_a_closed_form_model(name, dist):
    n, k, alpha = 10, 4, 3.0
    truth = np.exp(alpha) / (np.exp(alpha) + n - 1)
    e = estimate(_attend_to_max(n, k, alpha), name, dist, **_options(name))
    assert e.estimate == pytest.approx(truth, abs=1e-6), name
    assert e.method == name and e.dist == dist.name and e.flops > 0


@pytest.mark.parametrize("dist", DISTS, ids=lambda d: d.name)
@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_is_close_on_small_models(name, dist):
    for model in (random_model(n=7, k=3, seed=3, scale=0.3), max_like_model(8, 3, 1, 0.05)):
        tab = circuit_tables(model)
        truth = evaluate(tab, dist).soft_accuracy
        e = estimate(tab, name, dist, seed=1, **_options(name))
        tol = 0.03 + (5 * e.spread if e.spread is not None else 0.0)
        assert abs(e.estimate - truth) < tol, (name, e.estimate, truth)


@pytest.mark.parametrize("name", ESTIMATORS.names())
def test_every_estimator_refuses_only_what_it_declares(name):
    tab = circuit_tables(random_model(n=6, k=3, heads=2, seed=2))
    method = ESTIMATORS.get(name)
    if method.refusal(tab.cfg, UNIFORM) is not None:
        with pytest.raises(MaxkError, match="single-head"):
            estimate(tab, name)
    else:
        truth = evaluate(tab).soft_accuracy
        e = estimate(tab, name, **_options(name))
        assert abs(e.estimate - truth) < 0.03 + 5 * (e.spread or 0.0)


def test_declared_options_come_from_the_signature():
    def fn(tables, dist, *, counter, rng, samples: int = 5, levels=None):
        return 0.0

    assert declared_options(fn) == {"samples": 5, "levels": None}
    reg: Registry = Registry("thing")
    m = reg.register("x", fn, cost="O(1)", summary="a thing")
    assert reg.names() == ["x"] and "x" in reg and len(reg) == 1
    assert m.check_options({"samples": 3, "levels": None}) == {"samples": 3}
    with pytest.raises(MaxkError, match="does not take"):
        m.check_options({"bins": 3})
    with pytest.raises(ValueError):
        reg.register("x", fn, cost="O(1)", summary="again")
    with pytest.raises(MaxkError, match="unknown thing 'y'"):
        reg.get("y")
    assert set(ESTIMATORS.get("systematic").options) == {"samples", "levels"}


def _roundtrip(r: Result) -> None:
    again = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert type(again) is type(r) and again == r
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.method = "other"  # type: ignore[misc]


def test_result_records_round_trip_through_json():
    model = max_like_model(8, 3, 0, 0.02)
    ev = evaluate(model, "distinct")
    _roundtrip(ev)
    sampled = maxk.evaluate_sampled(model, "uniform", 1000, seed=3)
    _roundtrip(sampled)
    assert sampled.ci95 is not None and ev.ci95 is None
    lo, hi = sampled.ci95["accuracy"]
    assert lo <= sampled.accuracy <= hi
    for name in STRATEGIES:
        _roundtrip(prove(model, name))
    for name in ESTIMATORS:
        _roundtrip(estimate(model, name, **_options(name)))
    big = ProofResult(
        method="cubic",
        dist="uniform",
        n_sequences=512**20,
        seconds=1.0,
        flops=10,
        bound=0.5,
        certified=512**20 // 2,
        cost="O(1)",
    )
    _roundtrip(big)
    assert {EvalResult.kind, ProofResult.kind, Estimate.kind} == {"evaluation", "proof", "estimate"}
    e = Estimate(
        method="m",
        dist="uniform",
        n_sequences=4,
        seconds=0.0,
        estimate=0.5,
        details={"per_max": np.arange(3.0), "n": np.int64(2)},
    )
    assert e.details == {"per_max": [0.0, 1.0, 2.0], "n": 2}  # stored as plain data
    _roundtrip(e)
    with pytest.raises(ValueError, match="unknown result kind"):
        Result.from_dict({"kind": "nope"})


def test_records_share_field_names():
    shared = ("method", "dist", "n_sequences", "seconds", "flops", "options")
    for cls in (EvalResult, ProofResult, Estimate):
        names = [f.name for f in dataclasses.fields(cls)]
        assert names[: len(shared)] == list(shared)
