"""Weighted AUROC and variance against their definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.metrics import weighted_auroc, weighted_variance


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30), st.integers(0, 10**6), st.booleans(), st.sampled_from([0.15, 0.5, 0.85]), st.booleans())
def test_auroc_is_the_pairwise_probability(n, seed, ties, share, weighted):
    """Both branches: the positives the smaller class (sorted) or the larger (looked up)."""
    rng = np.random.default_rng(seed)
    score = rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n)
    pos = rng.random(n) < share
    w = rng.random(n) + 0.1 if weighted else np.ones(n)
    if pos.all() or not pos.any():
        assert np.isnan(weighted_auroc(score, pos, w))
        return
    num = den = 0.0
    for i, j in itertools.product(range(n), repeat=2):
        if pos[i] and not pos[j]:
            den += w[i] * w[j]
            num += w[i] * w[j] * (1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0)
    assert weighted_auroc(score, pos, w if weighted else None) == pytest.approx(num / den, rel=1e-12, abs=1e-15)


def test_auroc_extremes_and_variance():
    assert weighted_auroc(np.array([0.0, 1.0]), np.array([False, True])) == 1.0
    assert weighted_auroc(np.array([1.0, 0.0]), np.array([False, True])) == 0.0
    assert weighted_auroc(np.zeros(4), np.array([True, False, True, False])) == 0.5
    x = np.array([1.0, 2.0, 4.0])
    assert weighted_variance(x) == pytest.approx(np.var(x))
    assert weighted_variance(x, np.array([1.0, 1.0, 0.0])) == pytest.approx(0.25)
