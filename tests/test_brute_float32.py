"""The brute-force proof's float32 pass: never certifies a wrong input, and together with the
float64 recheck counts exactly the correct inputs (random, max-like, noised, near-tied models;
both distributions; group A split by lead positions; terms out of float32 range)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxk.distributions import resolve
from maxk.exact import all_sequences, evaluate
from maxk.flops import FlopCounter
from maxk.proofs import brute
from maxk.proofs.enclose import enclosed_tables

from .helpers import max_like_model, random_model
from .test_proofs_soundness import _margins, adversarial


def _models():
    yield random_model(n=7, k=4, d_model=6, d_head=3, seed=3, scale=0.5)
    yield random_model(n=5, k=5, d_model=6, d_head=3, seed=4, scale=2.0)  # huge scores: underflow
    yield max_like_model(9, 4, 0, 0.0)
    yield max_like_model(9, 4, 1, 0.05)
    yield adversarial(max_like_model(8, 4, 2, 0.02), 0)  # a near-tie within float32 rounding
    yield adversarial(max_like_model(6, 5, 3, 0.01), 1)
    yield random_model(n=6, k=2, d_model=6, d_head=3, seed=5)
    yield random_model(n=6, k=1, d_model=6, d_head=3, seed=6)


def _pass_covers(model, dist_name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Inputs of the distribution certified by the float32 pass alone (as a bool per input of
    all n^k, lexicographic) and the exact margins; and the count the pass reported."""
    n, k = model.cfg.n, model.cfg.k
    tab = enclosed_tables(model)
    dist = resolve(dist_name, n, k)
    lay = brute._Layout(n, k, dist)
    covered = np.zeros(n**k, dtype=bool)
    in_dist = np.zeros(n**k, dtype=bool)
    xs = all_sequences(n, k)
    keep = dist.support_rows(xs, query_last=True)
    in_dist[:] = True if keep is None else keep
    total = 0
    for q in range(n):
        L, H, A = brute._terms(tab, q, FlopCounter())
        got, opened = brute._float32_pass(lay, q, L, H, A, FlopCounter())
        total += got
        rows = xs[:, -1] == q
        open_set = {tuple(t) for toks in opened for t in toks}
        for i in np.flatnonzero(rows & in_dist):
            covered[i] = tuple(xs[i, :-1]) not in open_set
    _, marg = _margins(model)
    return covered, marg, total


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_float32_pass_certifies_only_correct_inputs(dist):
    for model in _models():
        n, k = model.cfg.n, model.cfg.k
        if k < 2 or (dist == "distinct" and k > n):
            continue
        covered, marg, total = _pass_covers(model, dist)
        assert total == int(covered.sum())
        assert np.all(marg[covered] > 0)


@pytest.mark.parametrize("dist", ["uniform", "distinct"])
def test_brute_equals_exact_count(dist):
    for model in _models():
        if dist == "distinct" and model.cfg.k > model.cfg.n:
            continue
        assert brute.brute_certified(model, dist) == evaluate(model, dist).correct


def test_near_ties_go_to_the_float64_recheck():
    """A tie broken by less than float32 resolution: the pass leaves it open, the recheck
    decides it as the exact model does."""
    model = adversarial(max_like_model(8, 4, 2, 0.02), 0)
    covered, marg, _ = _pass_covers(model, "uniform")
    tiny = (np.abs(marg) < 1e-8) & (marg > 0)
    assert tiny.any() and not covered[tiny].any()
    assert brute.brute_certified(model) == evaluate(model).correct


def test_group_a_split_by_lead_positions(monkeypatch):
    model = max_like_model(6, 5, 1, 0.05)
    want = {d: evaluate(model, d).correct for d in ("uniform", "distinct")}
    monkeypatch.setattr(brute, "_A_FLOATS", 6 * 6)  # group A: one position, two lead positions
    assert brute._Layout(6, 5, resolve("uniform", 6, 5)).lead == 2
    for d, w in want.items():
        assert brute.brute_certified(model, d) == w


def test_out_of_range_terms_take_the_float64_way(monkeypatch):
    model = max_like_model(7, 4, 0, 0.05)
    want = evaluate(model).correct
    monkeypatch.setattr(brute, "_RANGE32", 0.0)
    c = FlopCounter()
    assert brute.brute_certified(model, "uniform", c) == want
    assert "float32 pass" not in c.by_label


def test_flops_counted_and_threads_restored():
    before = torch.get_num_threads()
    c = FlopCounter()
    brute.brute_certified(max_like_model(9, 4, 0, 0.01), "uniform", c)
    assert torch.get_num_threads() == before
    assert c.by_label["float32 pass"] >= 9**4 * 9 * 2
