"""Proof strategies without an itemisation of their own: the one fact "certifies at least B".

For a strategy maxk cannot itemise from its public pieces (a newly registered one, or the
subcubic family, whose per-(max, query) gaps are not returned by the registry), the explanation
relies on one check: the proof, run on the weights, certifies at least B inputs. Its prior pass
probability is the share of initialisations on which the same strategy certifies at least B.

Every proof also gets a presumption-free lower bound on the joint surprise of its checks: all of
them passing makes the strategy certify at least B, and a certified input is a correct one, so
P(all pass) <= P(the initialisation gets >= B inputs right) <= E[correct] / B (Markov), with
E[correct] from the brute-force pattern rates.
"""

from __future__ import annotations

import math

from ..distributions import Distribution
from ..errors import MaxkError
from ..proofs.registry import prove
from .checks import Check, rate_check
from .prior import Prior


def strategy_prior(prior: Prior, dist: Distribution, name: str) -> list[int]:
    """The prior section: strategy ``name``'s certified count on every initialisation (0 where it
    refused). Cost: one proof per initialisation."""

    def compute(models) -> list[int]:
        out = []
        for m in models:
            try:
                out.append(prove(m, name, dist).certified)
            except MaxkError:
                out.append(0)
        return out

    return prior.section(f"strategy:{name}:{dist.name}", compute)


def headline_check(name: str, certified: int, init_counts: list[int]) -> Check:
    """The check "``name`` certifies >= ``certified``" priced by the initialisations' counts."""
    passes = [int(c >= certified) for c in init_counts]
    return rate_check(f"{name} certifies >= {certified}", 1, passes, [1] * len(init_counts))


def markov_bits(certified: int, n_sequences: int, mean_accuracy: float) -> float:
    """-log2 of Markov's bound E[correct] / B on P(an initialisation gets >= B inputs right):
    a lower bound on the joint surprise of any proof certifying B inputs (0 if not informative)."""
    if certified <= 0 or mean_accuracy <= 0:
        return 0.0
    return max(0.0, math.log2(certified / (mean_accuracy * n_sequences)))
