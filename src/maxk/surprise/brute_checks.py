"""The brute-force proof's checks: one margin check per input, priced per equality pattern.

Brute force certifies input x when its enclosed logit margin is positive; the fact it relies on
for each certified x is "the model gets x right". Under the initialisation prior that fact's
probability depends only on x's pattern (``maxk.surprise.patterns``), so each pattern's pass rate
is estimated from ``PATTERN_SAMPLES`` inputs of it per initialisation (every input of a pattern
with fewer, so small configs are counted exactly; the model's exact float64
decision through the circuit tables; the enclosure's too-close calls change a rate by less than
its sampling error). The certified inputs' patterns are known in aggregate only: the N - B
uncertified ones are presumed spread over the patterns in proportion to their sizes, and the
spread of the patterns' bits over those N - B inputs is added to the error.
"""

from __future__ import annotations

import numpy as np

from ..circuits import circuit_tables
from ..distributions import Distribution
from ..sampling import per_input_metrics
from .checks import Check, rate_check
from .patterns import support_patterns
from .prior import Prior

PATTERN_SAMPLES = 512  # inputs per pattern and initialisation


def pattern_rates(prior: Prior, dist: Distribution, samples: int = PATTERN_SAMPLES) -> dict:
    """The prior section of per-pattern pass counts: {key: {"passes": [M], "trials": [M]}}, plus
    ``"mean_accuracy"``: the prior's expected accuracy (pattern rates weighted by their sizes).
    Cost per initialisation O(patterns·samples·k·n)."""
    n, k = prior.cfg.n, prior.cfg.k
    pats = support_patterns(dist, n, k)

    def compute(models) -> dict:
        out: dict = {p.key: {"passes": [], "trials": []} for p, _ in pats}
        for j, model in enumerate(models):
            tab = circuit_tables(model)
            rng = np.random.default_rng([prior.seeds[j], 17])
            for p, _size in pats:
                correct = per_input_metrics(tab, p.draw(n, samples, rng))[0]
                out[p.key]["passes"].append(int(correct.sum()))
                out[p.key]["trials"].append(int(correct.size))
        N = sum(s for _, s in pats)
        out["mean_accuracy"] = sum(s * sum(out[p.key]["passes"]) / sum(out[p.key]["trials"]) for p, s in pats) / N
        return out

    return prior.section(f"patterns:{dist.name}:s{samples}", compute)


def brute_checks(prior: Prior, dist: Distribution, certified: int) -> tuple[list[Check], float]:
    """(one ``Check`` per pattern: its certified inputs, priced by its prior pass rate; the extra
    error in bits from not knowing the uncertified inputs' patterns). Cost: the prior section."""
    n, k = prior.cfg.n, prior.cfg.k
    pats = support_patterns(dist, n, k)
    stats = pattern_rates(prior, dist)
    N = sum(s for _, s in pats)
    missing = N - certified
    # the uncertified inputs, shared out in proportion to pattern size (largest remainders)
    share = np.array([s * missing / N for _, s in pats])
    take = np.floor(share).astype(np.int64)
    for i in np.argsort(-(share - take))[: missing - int(take.sum())]:
        take[i] += 1
    checks = []
    for (p, size), drop in zip(pats, take, strict=True):
        st = stats[p.key]
        checks.append(rate_check(f"correct on pattern {p.key}", int(size - drop), st["passes"], st["trials"]))
    per = [c.bits / c.count for c in checks if c.count > 0]
    spread = 0.5 * (max(per) - min(per)) * missing if per else 0.0
    return checks, spread
