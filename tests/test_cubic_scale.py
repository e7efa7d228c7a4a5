"""The cubic proof's partial stage and its options: every (exact_outputs, exact_budget) certifies
only correct inputs, counts them exactly, and more exact work never lowers the bound."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxk.errors import MaxkError
from maxk.proofs import cubic
from maxk.proofs.cubic import cubic_certified
from maxk.proofs.enclose import enclosed_tables
from maxk.proofs.registry import prove

from .helpers import max_like_model, random_model
from .test_proofs_soundness import adversarial, assert_covers_only_correct


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 9),
    k=st.integers(2, 4),
    seed=st.integers(0, 10**6),
    noise=st.sampled_from([0.0, 0.02, 0.1]),
    adv=st.integers(-1, 1),
    r=st.integers(1, 3),
    budget=st.sampled_from([None, 0.0, 0.5]),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_options_certify_only_correct_inputs(n, k, seed, noise, adv, r, budget, dist):
    if dist == "distinct" and k > n:
        return
    model = max_like_model(n, k, seed, noise) if seed % 3 else random_model(n=n, k=k, seed=seed, d_model=6, d_head=3)
    if adv >= 0:
        model = adversarial(model, adv)
    assert_covers_only_correct(model, enclosed_tables(model), dist, exact_outputs=r, exact_budget=budget)


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_more_exact_work_never_lowers_the_bound(noise):
    model = max_like_model(12, 4, 1, noise)
    tab = enclosed_tables(model)
    full = cubic_certified(tab, exact_budget=-1)
    for r in (1, 2, 4):
        counts = [cubic_certified(tab, exact_outputs=r, exact_budget=b) for b in (0, 0.2, 1, -1)]
        assert counts == sorted(counts) and counts[-1] == full


def test_query_blocks_give_the_same_count(monkeypatch):
    model = adversarial(max_like_model(10, 4, 2, 0.05), 0)
    want = cubic_certified(model)
    monkeypatch.setattr(cubic, "_BLOCK_FLOATS", 1)  # one query per block
    assert cubic_certified(model) == want


def test_bad_option_is_a_clear_error():
    with pytest.raises(MaxkError, match="exact_outputs"):
        prove(max_like_model(6, 3, 0, 0.0), "cubic", exact_outputs=0)
    with pytest.raises(MaxkError, match="does not take"):
        prove(max_like_model(6, 3, 0, 0.0), "cubic", budget=3)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(3, 9), k=st.integers(2, 4), seed=st.integers(0, 10**6), noise=st.sampled_from([0.0, 0.05, 0.3]))
def test_every_frontier_point_is_sound(n, k, seed, noise):
    """Every (strategy, options) point that ``--frontier`` runs, on noised and near-tied models."""
    from maxk.exact import evaluate
    from maxk.proofs.frontier import frontier_runs
    from maxk.proofs.registry import STRATEGIES

    model = adversarial(max_like_model(n, k, seed, noise), seed % 2)
    for dist in ("uniform", "distinct"):
        if dist == "distinct" and k > n:
            continue
        correct = evaluate(model, dist).correct
        assert correct is not None
        for name, options in frontier_runs(model.cfg, STRATEGIES.names()):
            if name in ("brute",):
                continue
            assert prove(model, name, dist, **options).certified <= correct, (name, options)
