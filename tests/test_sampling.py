import numpy as np
import pytest

from maxk.circuits import circuit_tables
from maxk.exact import evaluate
from maxk.sampling import evaluate_sampled, per_input_metrics

from .helpers import random_model


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_stratified_interval_covers_exact(dist):
    m = random_model(n=10, k=3, seed=4, scale=1.0)
    exact = evaluate(m, dist)
    hits = 0
    for seed in range(10):
        s = evaluate_sampled(m, dist, 20000, seed=seed)
        for name in ("accuracy", "soft_accuracy", "loss"):
            lo, hi = s.ci95[name]
            hits += lo <= getattr(exact, name) <= hi
    assert hits >= 25  # 30 intervals at 95%; < 25 covering would be very unlikely


def test_per_input_metrics_match_exact():
    m = random_model(n=6, k=3, heads=2)
    from maxk.exact import all_sequences

    toks = all_sequences(6, 3)
    correct, prob, loss = per_input_metrics(circuit_tables(m), toks)
    ex = evaluate(m)
    assert int(correct.sum()) == ex.correct
    assert np.isclose(prob.mean(), ex.soft_accuracy) and np.isclose(loss.mean(), ex.loss)
