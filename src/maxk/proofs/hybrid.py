"""The hybrid proof: the cubic proof for the top max tokens, a subcubic proof for the others.

Inputs are partitioned by their max m. For each m a subcubic proof's thresholds (``base``:
``subcubic-coupled``'s by default, or a ``maxk.proofs.subcubic`` variant's; computed once for
every (q, m)) give a certified
count; for the ``cubic_top`` largest m (they hold most inputs: P[max = m] grows like m^(k-1)
under ``uniform``) the cubic proof's certificate for m (``maxk.proofs.cubic.certified_sets``) is
computed too and the larger of the two counts is kept. Each count is exact and sound for the
inputs with max m, so their sum is a sound certified count.

The knob ``cubic_top`` traces the frontier between the subcubic proof (0) and the cubic proof
(n): FLOPs grow about as the sum of (m+1)·n·k² over the top m, so doubling it roughly doubles
the cubic part.

Cost: the subcubic proof's, plus for cubic_top > 0 the enclosed tables (O(n²·d·dh)) and
O(n·k²·(m+1)·(r + budget + log n)) per top max token m.
"""

from __future__ import annotations

from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from .cubic import EXACT_BUDGET, EXACT_OUTPUTS, certified_sets, multi_head_sets
from .enclose import enclosed_tables
from .head_split import split_thresholds
from .subcubic import SUBCUBIC_VARIANTS, subcubic_thresholds
from .subcubic_coupled import coupled_thresholds

COST = "O(n^2 d + n^2 k log n + top·n^2 k^2)"
CUBIC_TOP = 8  # default number of max tokens (from the top) done by the cubic proof
COUPLED = "subcubic-coupled"  # the default base: the tightest subcubic thresholds (docs/proofs.md)


def hybrid_certified(
    model,
    dist: str | Distribution = "uniform",
    counter: FlopCounter | None = None,
    *,
    cubic_top: int = CUBIC_TOP,
    base: str = COUPLED,
    exact_outputs: int = EXACT_OUTPUTS,
    exact_budget: float = EXACT_BUDGET,
) -> int:
    """Certified count for ``dist``: per max token m, the subcubic variant ``base``'s count, or
    for the ``cubic_top`` largest m the larger of it and the cubic proof's (options
    ``exact_outputs``, ``exact_budget`` as ``maxk.proofs.cubic.cubic_certified``)."""
    c = counter if counter is not None else FlopCounter()
    variants = {v.name: v for v in SUBCUBIC_VARIANTS}
    if base not in (*variants, COUPLED):
        raise MaxkError(f"unknown subcubic base {base!r}: choose one of {', '.join((*variants, COUPLED))}")
    if cubic_top < 0:
        raise MaxkError(f"cubic_top must be at least 0, not {cubic_top}")
    n, k = model.cfg.n, model.cfg.k
    d = resolve(dist, n, k)
    if base == COUPLED:
        T = split_thresholds(
            model,
            lambda v, o, b: coupled_thresholds(v, c, strategy="hybrid", direct_offset=o, max_offset=b),
            c,
        )
    else:
        settings = variants[base].settings
        T = split_thresholds(
            model,
            lambda v, o, b: subcubic_thresholds(v, c, strategy="hybrid", direct_offset=o, max_offset=b, **settings),
            c,
        )
    top = min(cubic_top, n)
    tab = enclosed_tables(model, c) if top else None
    budget = None if exact_budget < 0 else exact_budget
    total = 0
    for m in range(n):
        sub = sum(d.count_below(k, m, q, int(T[q, m])) for q in range(m + 1) if T[q, m] >= -1)
        if tab is not None and m >= n - top:
            sets = certified_sets if tab.n_heads == 1 else multi_head_sets
            cert = sets(tab, m, d, c, exact_outputs=exact_outputs, exact_budget=budget)
            sub = max(sub, cert.count(c))
        total += sub
    return total


def prove_hybrid(
    model,
    dist: Distribution,
    *,
    counter: FlopCounter,
    cubic_top: int = CUBIC_TOP,
    base: str = COUPLED,
    exact_outputs: int = EXACT_OUTPUTS,
    exact_budget: float = EXACT_BUDGET,
) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
    if exact_outputs < 1:
        raise MaxkError(f"exact_outputs must be at least 1, not {exact_outputs}")
    return hybrid_certified(
        model, dist, counter, cubic_top=cubic_top, base=base, exact_outputs=exact_outputs, exact_budget=exact_budget
    )
