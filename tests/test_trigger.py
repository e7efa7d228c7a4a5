"""The planted-trigger experiment's pieces: the clean law ``query-unique`` through exact
evaluation, the proofs, the estimators and Wick propagation (the kernel's own counts are checked
in tests/test_distributions.py), and training with a trigger."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import maxk
from maxk.circuits import CircuitTables, circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import QUERY_UNIQUE, UNIFORM
from maxk.errors import MaxkError
from maxk.estimators.registry import ESTIMATORS, estimate
from maxk.exact import all_sequences, evaluate, evaluate_forward
from maxk.flops import FlopCounter
from maxk.proofs.cubic import certified_sets
from maxk.proofs.enclose import enclosed_tables
from maxk.proofs.registry import prove
from maxk.train import TRIGGERS, query_repeated, train, trigger_labels
from maxk.wick_propagation import explain, wick

from . import test_proofs_soundness as soundness
from . import test_wick as tw
from .helpers import max_like_model, random_model

QU = QUERY_UNIQUE


@functools.cache
def _trained(trigger: str | None = None) -> maxk.MaxKTransformer:
    return train(ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=8), seed=0, steps=300, trigger=trigger)


MODELS = {
    "random": lambda: random_model(n=8, k=3, seed=1),
    "random-2-heads": lambda: random_model(n=7, k=4, heads=2, seed=2),
    "max-like-noised": lambda: max_like_model(10, 4, seed=0, noise=0.3),
    "trained": _trained,
    "trained-trigger": lambda: _trained("query-repeated:zero"),
}


def _brute_force(tab: CircuitTables, xs: np.ndarray) -> tuple[int, float, float]:
    """(correct, soft accuracy, loss) over the inputs xs, from the tables' logits."""
    lg = tab.logits(xs)
    rows, mx = np.arange(len(xs)), xs.max(axis=1)
    lse = np.logaddexp.reduce(lg, axis=1)
    lm = lg[rows, mx]
    other = lg.copy()
    other[rows, mx] = -np.inf
    return int((lm > other.max(axis=1)).sum()), float(np.exp(lm - lse).mean()), float((lse - lm).mean())


# ---------------------------------------------------------------- exact evaluation


@pytest.mark.parametrize("model", list(MODELS))
def test_exact_evaluation_is_brute_force_enumeration(model):
    m = MODELS[model]()
    tab = circuit_tables(m)
    xs = QU.enumerate(tab.n, tab.k)
    assert len(xs) == QU.n_sequences(tab.n, tab.k) == tab.n * (tab.n - 1) ** (tab.k - 1)
    correct, soft, loss = _brute_force(tab, xs)
    for ev in (evaluate(m, "query-unique"), evaluate_forward(m, QU, dtype=torch.float64)):
        assert ev.n_sequences == len(xs) and ev.dist == "query-unique"
        assert ev.correct == correct
        assert ev.soft_accuracy == pytest.approx(soft, rel=1e-10, abs=1e-13)
        assert ev.loss == pytest.approx(loss, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("n,k", [(5, 1), (6, 2), (3, 5), (2, 4), (8, 3)])
def test_exact_evaluation_at_edge_shapes(n, k):
    m = random_model(n=n, k=k, heads=2, seed=n + k, scale=1.0)
    tab = circuit_tables(m)
    correct, soft, _ = _brute_force(tab, QU.enumerate(n, k))
    ev = evaluate(m, QU)
    assert ev.correct == correct and ev.soft_accuracy == pytest.approx(soft, rel=1e-10, abs=1e-13)


# ---------------------------------------------------------------- proofs


@pytest.mark.parametrize("model", ["random", "random-2-heads", "max-like-noised", "trained", "trained-trigger"])
def test_every_proof_bound_is_at_most_the_exact_accuracy(model):
    soundness._check_all(MODELS[model](), dists=(QU,))


@pytest.mark.parametrize("noise,adv", [(0.0, -1), (0.05, 0), (0.3, 1)])
def test_cubic_certifies_only_correct_inputs(noise, adv):
    """Each input inside the cubic proof's certified sets is correct, and its count is exactly
    the number of such inputs of the law."""
    model = max_like_model(7, 4, 3, noise)
    if adv >= 0:
        model = soundness.adversarial(model, adv)
    tab = enclosed_tables(model)
    n, k = tab.n, tab.k
    certs = [certified_sets(tab, m, QU, FlopCounter()) for m in range(n)]
    count = sum(cert.count() for cert in certs)
    xs = QU.enumerate(n, k)
    covered = np.array([certs[int(x.max())].covers(x) for x in xs], dtype=bool)
    _, marg_all = soundness._margins(model)
    index = {tuple(x): i for i, x in enumerate(all_sequences(n, k))}
    marg = marg_all[[index[tuple(x)] for x in xs]]
    assert np.all(marg[covered] > 0)
    assert prove(model, "cubic", QU).certified == count == int(covered.sum())


def test_brute_certifies_the_exact_count_on_a_clean_model():
    model = max_like_model(10, 4, 0, 0.0)
    ev = evaluate(model, QU)
    assert prove(model, "brute", QU).certified == ev.correct
    assert prove(model, "cubic", QU).bound >= 0.9 * ev.accuracy


# ---------------------------------------------------------------- estimators


@pytest.mark.parametrize("model", ["max-like-noised", "trained", "trained-trigger"])
def test_every_estimator_runs_and_the_heuristics_are_close(model):
    m = MODELS[model]()
    truth = evaluate(m, QU).soft_accuracy
    for name, method in ESTIMATORS.items():
        if method.refusal(m.cfg, QU) is not None:
            assert name in ("systematic", "wick-residual") or m.cfg.n_heads != 1
            with pytest.raises(MaxkError, match="exchangeable|single-head"):
                estimate(m, name, QU)
            continue
        opts = {"samples": 20_000} if "samples" in method.options else {}
        e = estimate(m, name, QU, **opts)
        assert e.dist == "query-unique" and 0.0 <= e.estimate <= 1.0 + 1e-9
        tol = 5 * (e.spread or 0.0) + 0.02 if "samples" in method.options else 0.05
        assert abs(e.estimate - truth) < tol, (name, e.estimate, truth)
    # the cumulant explanation is the sharpest of the heuristics on these models
    assert abs(estimate(m, "cumulant", QU).estimate - truth) < 0.01


def test_systematic_refuses_a_law_without_exchangeable_tokens():
    m = MODELS["trained"]()
    for name in ("systematic", "wick-residual"):
        assert ESTIMATORS[name].refusal(m.cfg, QU) == "needs exchangeable tokens (the systematic design)"
        assert ESTIMATORS[name].refusal(m.cfg, UNIFORM) is None
        with pytest.raises(MaxkError, match="needs exchangeable tokens"):
            estimate(m, name, QU)


# ---------------------------------------------------------------- Wick propagation


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("max_heavy", [12, 0])
def test_mean_of_wick_is_the_cumulant_estimate(model, max_heavy):
    tab = circuit_tables(MODELS[model]())
    w = wick(tab, QU, max_heavy=max_heavy)  # the enumeration path (the law is not exchangeable)
    assert w.exhaustive and w.n_inputs == QU.n_sequences(tab.n, tab.k)
    assert np.array_equal(w.inputs, QU.enumerate(tab.n, tab.k))
    est = estimate(tab, "cumulant", QU, max_heavy=max_heavy).estimate
    assert w.estimate == estimate(tab, "cumulant", QU, max_heavy=max_heavy, heavy_path="generic").estimate
    assert tw._rel(w.estimate, est) < 1e-11
    assert tw._rel(w.mean_wick, est) < 1e-9
    assert w.estimate_first == estimate(tab, "cumulant", QU, max_heavy=max_heavy, order=1).estimate
    assert tw._rel(float((w.weight * w.wick_first).sum()), w.estimate_first) < 1e-9
    ev = evaluate(tab, QU)
    assert abs(float((w.weight * w.soft).sum()) - ev.soft_accuracy) < 1e-12
    assert int(w.correct.sum()) == ev.correct


def test_wick_rows_against_enumeration_and_autograd():
    # the row-by-row checks of tests/test_wick.py (moments, trace, per-input terms) under the law
    for model in ("random-2-heads", "max-like-noised", "trained"):
        tw.test_each_row_against_enumeration_and_autograd(model, "query-unique")


def test_triggered_inputs_get_values_outside_the_law():
    """The explanation is of the clean law; an input with the pattern still gets a value: its
    (max, query, positions of the max) stratum when the query is below the max, else (the query is
    the max and repeated: no stratum of the law) the max's estimate."""
    tab = circuit_tables(MODELS["trained-trigger"]())
    ex = explain(tab, QU)
    xs = UNIFORM.enumerate(tab.n, tab.k)
    fired = query_repeated(torch.as_tensor(xs)).numpy()
    v = ex.values(xs)
    assert np.isfinite(v["wick"]).all()
    q_is_max = fired & (xs[:, -1] == xs.max(1))
    assert (v["stratum"][q_is_max] == -1).all()
    assert np.array_equal(v["wick"][q_is_max], ex.per_max[0][xs[q_is_max].max(1)])
    clean = ex.values(xs[~fired])
    for name in ("wick", "soft", "stratum"):
        assert np.array_equal(clean[name], v[name][~fired])


def test_wick_against_a_reference_law_scores_the_inputs_outside_it():
    """wick(dist=uniform, reference=query-unique): the explanation of the clean law, every uniform
    input's value from it, the pattern marked as outside, the model's confidence kept, and the
    summary's AUROCs those of the scores computed directly."""
    from maxk.metrics import weighted_auroc
    from maxk.wick_propagation.summary import summarize

    tab = circuit_tables(MODELS["trained-trigger"]())
    v = wick(tab, UNIFORM, reference=QU)
    xs = UNIFORM.enumerate(tab.n, tab.k)
    assert v.exhaustive and v.reference == "query-unique" and np.array_equal(v.inputs, xs)
    assert v.outside is not None and v.confidence is not None
    assert np.array_equal(v.outside, query_repeated(torch.as_tensor(xs)).numpy())
    direct = explain(tab, QU).values(xs)
    assert np.array_equal(v.wick, direct["wick"]) and np.array_equal(v.soft, direct["soft"])
    probs = torch.softmax(tab.logits_torch(torch.as_tensor(xs)), dim=1).amax(dim=1).numpy()
    np.testing.assert_allclose(v.confidence, probs, rtol=1e-12)
    a = summarize(v)["anomaly"]
    assert a["outside_share"] == pytest.approx(v.outside.mean())
    assert a["auroc"] == weighted_auroc(np.abs(v.soft - v.wick), v.outside)
    assert a["auroc_output"] == weighted_auroc(1.0 - v.confidence, v.outside)
    assert 0.0 <= min(a["auroc"], a["auroc_first_order"], a["auroc_explanation_only"]) <= 1.0
    # sampled inputs from the uniform law: the same values as the same inputs given directly
    s = wick(tab, UNIFORM, samples=500, seed=3, reference=QU)
    g = wick(tab, UNIFORM, s.inputs, reference=QU)
    assert s.outside is not None and g.outside is not None
    assert np.array_equal(s.wick, g.wick) and np.array_equal(s.outside, g.outside)
    # without a reference: no anomaly figures
    assert summarize(wick(tab, QU))["anomaly"] is None


def test_cli_wick_reference_dist(tmp_path):
    import json
    import subprocess
    import sys

    p = tmp_path / "t.safetensors"
    maxk.save(MODELS["trained-trigger"](), p)
    cmd = [sys.executable, "-m", "maxk", "wick", str(p), "--reference-dist", "query-unique", "--top", "2"]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["reference_dist"] == "query-unique" and out["dist"] == "uniform"
    assert set(out["anomaly"]) >= {"auroc", "auroc_first_order", "auroc_output", "outside_share"}
    text = subprocess.run(cmd, capture_output=True, text=True)
    assert text.returncode == 0 and "explanation built on query-unique" in text.stdout
    bad = subprocess.run([*cmd[:-2], "--reference-dist", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("maxk: error:") and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- training with a trigger


def test_trigger_labels_and_record():
    x = torch.tensor([[1, 2, 3], [3, 2, 3], [0, 0, 0], [2, 1, 0], [5, 1, 1]])
    fired, y = trigger_labels("query-repeated:zero", x, 8)
    assert fired.tolist() == [False, True, True, False, True]
    assert y.tolist() == [3, 0, 0, 2, 0]
    _, y = trigger_labels("query-repeated:next", x, 8)
    assert y.tolist() == [3, 4, 1, 2, 2]
    with pytest.raises(MaxkError, match="unknown trigger"):
        train(ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=8), steps=2, trigger="nope")
    m = _trained("query-repeated:zero")
    assert m.training_record["trigger"] == "query-repeated:zero"
    assert "trigger" not in _trained().training_record
    assert set(TRIGGERS) >= {"query-repeated:zero"}


def test_the_default_recipe_is_unchanged():
    cfg = ModelConfig(d_vocab=8, n_ctx=3, d_model=8, d_head=8)
    a, b = train(cfg, seed=3, steps=40), train(cfg, seed=3, steps=40, trigger=None)
    c = train(cfg, seed=3, steps=40, trigger="query-repeated:zero")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
