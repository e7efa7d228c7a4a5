"""The subcubic family's checks, itemised from its public pieces (``maxk.proofs.subcubic``).

A subcubic proof certifies, per (query q, max m), every input whose non-max tokens are all at
most a threshold T(q, m) (``certify_gaps``); the fact it relies on for each pair it counts is
"the gap check passes at T(q, m)". The thresholds are recomputed here exactly as
``subcubic_certified`` does (same pieces, same settings as the registered variant), and used
only if they reproduce the registry's certified count.

Prior. A pair's check at T involves tokens q, m and the a = T + 1 tokens below T. maxk presumes
its pass probability under the initialisation depends only on (whether q = m, a, whether q <= T)
— exact if the bound were equivariant under relabelling tokens (the i.i.d. prior is), which
it is only approximately (the key direction and prefix maxima follow the token order) — and
pools it over every pair (q', m') of that class in each initialisation: passes are the pairs
with m' >= a and T'(q', m') >= a - 1.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..distributions import Distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from ..proofs.per_head import per_head_thresholds
from ..proofs.registry import STRATEGIES
from ..proofs.subcubic import SubcubicVariant, count_certified, subcubic_thresholds
from ..registry import Refused
from .checks import Check, rate_check
from .prior import Prior


def variant_settings(name: str) -> dict | None:
    """The settings of registered strategy ``name`` if it is a subcubic variant, else None."""
    owner = getattr(STRATEGIES.get(name).run, "__self__", None)
    return dict(owner.settings) if isinstance(owner, SubcubicVariant) else None


def thresholds(model, settings: dict) -> np.ndarray | None:
    """T [n, n] as ``subcubic_certified(model, **settings)`` computes it (through each head's view
    on several heads); None if the enclosures are not finite (the proof refuses). Cost: the
    proof's, O(n²·d + n²·k·log n) per head."""
    c = FlopCounter()
    try:
        return per_head_thresholds(model, lambda v: subcubic_thresholds(v, c, **settings))
    except Refused:
        return None


def _key(eq: bool, a: int, q_in: bool) -> str:
    return f"gap:{'eq' if eq else 'ne'}:a{a}:{'q<=T' if q_in else 'q>T'}"


def subcubic_facts(model, dist: Distribution, settings: dict, certified: int) -> dict[str, int] | None:
    """{class: number of (q, m) pairs relied on}, or None if the thresholds do not reproduce
    ``certified`` (then the caller falls back to the whole-proof check)."""
    T = thresholds(model, settings)
    if T is None or count_certified(T, model.cfg.k, dist) != certified:
        return None
    facts: dict[str, int] = defaultdict(int)
    n = T.shape[0]
    for q in range(n):
        for m in range(q, n):
            t = int(T[q, m])
            if t >= -1 and dist.count_below(model.cfg.k, m, q, t) > 0:
                facts[_key(q == m, t + 1, q <= t)] += 1
    return dict(facts)


def subcubic_prior(prior: Prior, dist: Distribution, name: str, settings: dict) -> dict:
    """The prior section: per initialisation and class, passes and trials (module docstring)."""

    def compute(models) -> dict:
        out: dict = defaultdict(lambda: {"passes": [], "trials": []})
        for model in models:
            try:
                T = thresholds(model, settings)
            except MaxkError:
                T = None
            n = model.cfg.n
            if T is None:
                T = np.full((n, n), -2)
            q, m = np.nonzero(np.triu(np.ones((n, n), dtype=bool)))
            tq = T[q, m]
            for a in range(n):
                for eq in (True, False):
                    for q_in in (False, True) if not eq else (False,):
                        sel = (m >= a) & ((q == m) == eq) & ((q <= a - 1) == q_in)
                        entry = out[_key(eq, a, q_in)]
                        entry["trials"].append(int(sel.sum()))
                        entry["passes"].append(int((sel & (tq >= a - 1)).sum()))
        return dict(out)

    return prior.section(f"subcubic:{name}:{dist.name}", compute)


def subcubic_checks(prior: Prior, dist: Distribution, name: str, settings: dict, facts: dict[str, int]) -> list[Check]:
    """Price the subcubic facts with the pooled prior rates."""
    stats = subcubic_prior(prior, dist, name, settings)
    return [
        rate_check(f"{name} {key}", count, stats[key]["passes"], stats[key]["trials"])
        for key, count in sorted(facts.items())
    ]
