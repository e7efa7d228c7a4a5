"""``hybrid`` on a budgeted coupled base and with the cubic proof where that base loses most
(``cubic_pick="loss"``): the budgeted base is exactly the budgeted ``subcubic-coupled`` proof,
the picked sets are nested (more max tokens never certify less), every max token picked gives
the "top" count, and covered counts stay at most the correct ones."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxk.errors import MaxkError
from maxk.exact import evaluate
from maxk.proofs.registry import prove

from .helpers import max_like_model
from .test_proofs_soundness import drawn_model


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4, 9),
    k=st.integers(2, 4),
    seed=st.integers(0, 10**6),
    noise=st.sampled_from([0.05, 0.2, 0.5]),
    adv=st.integers(-1, 1),
    dist=st.sampled_from(["uniform", "distinct"]),
)
def test_loss_pick_is_nested_sound_and_the_top_pick_when_every_token_is_picked(n, k, seed, noise, adv, dist):
    model = drawn_model(n, k, seed, noise, adv)
    correct = evaluate(model, dist).correct
    assert correct is not None
    for budget in (0, 4 * n**3 * k**2):
        opts = {"base_budget": budget, "base_near_tokens": 1 if budget else 0}
        counts = [prove(model, "hybrid", dist, cubic_top=t, cubic_pick="loss", **opts).certified for t in range(n + 1)]
        assert counts == sorted(counts) and counts[-1] <= correct, counts
        assert counts[0] == prove(model, "hybrid", dist, cubic_top=0, **opts).certified
        assert counts[-1] == prove(model, "hybrid", dist, cubic_top=n, **opts).certified


@pytest.mark.parametrize("noise", [0.1, 0.3])
def test_the_budgeted_base_is_the_budgeted_coupled_proof(noise):
    model = max_like_model(10, 3, 1, noise)
    for budget in (10**4, 10**5, 10**6):
        base = prove(model, "hybrid", cubic_top=0, base_budget=budget, base_near_tokens=1)
        coupled = prove(model, "subcubic-coupled", refine_outputs=9, refine_top=10, near_tokens=1, flop_budget=budget)
        assert (base.certified, base.flops) == (coupled.certified, coupled.flops), budget
    assert (
        prove(model, "hybrid", cubic_top=0, base_budget=10**6).certified > prove(model, "hybrid", cubic_top=0).certified
    )


def test_bad_hybrid_options_are_refused_clearly():
    model = max_like_model(6, 3, 0, 0.05)
    with pytest.raises(MaxkError, match="cubic_pick"):
        prove(model, "hybrid", cubic_pick="middle")
    with pytest.raises(MaxkError, match="subcubic-coupled base only"):
        prove(model, "hybrid", base="subcubic", base_budget=10**5)
    with pytest.raises(MaxkError, match="base_budget must be"):
        prove(model, "hybrid", base_budget=-1)
