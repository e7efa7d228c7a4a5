"""The hybrid proof: the cubic proof for the top max tokens, a subcubic proof for the others.

Inputs are partitioned by their max m. For each m a subcubic proof's thresholds (``base``:
``subcubic-coupled``'s by default, or a ``maxk.proofs.subcubic`` variant's; computed once for
every (q, m)) give a certified
count; for the ``cubic_top`` largest m (they hold most inputs: P[max = m] grows like m^(k-1)
under ``uniform``) the cubic proof's certificate for m (``maxk.proofs.cubic.certified_sets``) is
computed too and the larger of the two counts is kept. Each count is exact and sound for the
inputs with max m, so their sum is a sound certified count.

With ``base_budget`` = B > 0 the coupled base is its budgeted form (``subcubic-coupled`` with
``flop_budget`` = B, every output a possible rival, ``refine_top`` = n; ``base_near_tokens`` its
near tokens): the cubic proof then starts from a base near that argument's ceiling instead of
its cheapest proof, so the frontier runs on from where the budgeted pass flattens.

With ``cubic_pick`` = "loss" the cubic proof goes instead to the ``cubic_top`` max tokens where
the base leaves the most inputs uncertified per unit of the cubic proof's cost there ((m + 1):
its work for max m grows like m + 1), computed from the base's own counts: where a strong base
loses is not at the top (any choice of max tokens is sound; the choice is not counted).

The knob ``cubic_top`` traces the frontier between the subcubic proof (0) and the cubic proof
(n): FLOPs grow about as the sum of (m+1)·n·k² over the top m, so doubling it roughly doubles
the cubic part.

Cost: the subcubic proof's, plus for cubic_top > 0 the enclosed tables (O(n²·d·dh); one head:
``maxk.proofs.chain.chain_interval_tables``, or with the coupled base its own tables, no extra
cost) and
O(n·k²·(m+1)·(r + budget + log n)) per top max token m.
"""

from __future__ import annotations

from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from ..registry import Refused
from .chain import as_interval_tables, chain_interval_tables, head_tables
from .cubic import EXACT_BUDGET, EXACT_OUTPUTS, certified_sets, multi_head_sets
from .enclose import enclosed_tables
from .head_split import split_thresholds
from .subcubic import FINITE, SUBCUBIC_VARIANTS, subcubic_thresholds
from .subcubic_coupled import EQKE_CUT, coupled_thresholds

COST = "O(n^2 d + n^2 k log n + top·n^2 k^2)"
CUBIC_TOP = 8  # default number of max tokens (from the top) done by the cubic proof
CUBIC_PICKS = ("top", "loss")  # which max tokens get the cubic proof, the default first
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
    base_budget: float = 0.0,
    base_near_tokens: int = 0,
    cubic_pick: str = CUBIC_PICKS[0],
) -> int:
    """Certified count for ``dist``: per max token m, the subcubic variant ``base``'s count, or
    for the ``cubic_top`` largest m the larger of it and the cubic proof's (options
    ``exact_outputs``, ``exact_budget`` as ``maxk.proofs.cubic.cubic_certified``); the coupled
    base within ``base_budget`` FLOPs (0: its default proof; the FLOPs counted so far included)
    with ``base_near_tokens`` near tokens; ``cubic_pick`` "top" or "loss" (module docstring)."""
    c = counter if counter is not None else FlopCounter()
    variants = {v.name: v for v in SUBCUBIC_VARIANTS}
    if base not in (*variants, COUPLED):
        raise MaxkError(f"unknown subcubic base {base!r}: choose one of {', '.join((*variants, COUPLED))}")
    if (base_budget or base_near_tokens) and base != COUPLED:
        raise MaxkError(f"base_budget and base_near_tokens apply to the {COUPLED} base only, not {base!r}")
    if cubic_pick not in CUBIC_PICKS:
        raise MaxkError(f"unknown cubic_pick {cubic_pick!r}: choose one of {', '.join(CUBIC_PICKS)}")
    if base_budget < 0:
        raise MaxkError(f"base_budget must be >= 0, not {base_budget}")
    if cubic_top < 0:
        raise MaxkError(f"cubic_top must be at least 0, not {cubic_top}")
    n, k = model.cfg.n, model.cfg.k
    d = resolve(dist, n, k)
    shared = None  # one head, coupled base: its tables serve the cubic part too (same counts measured)
    if base == COUPLED and model.cfg.n_heads == 1:
        try:
            shared = head_tables(model, c, eqke_cut=EQKE_CUT)
        except MaxkError as e:
            raise Refused(FINITE, str(e)) from e
    if base == COUPLED:
        T = split_thresholds(
            model,
            lambda v, o, b: coupled_thresholds(
                v,
                c,
                tables=shared,
                near_tokens=base_near_tokens,
                refine_outputs=n - 1 if base_budget else 0,
                refine_top=n,
                flop_budget=base_budget,
                strategy="hybrid",
                direct_offset=o,
                max_offset=b,
            ),
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
    # one head: the chain tables (a third of enclosed_tables' FLOPs; the same cubic counts measured),
    # the coupled base's own when it has them
    if not top:
        tab = None
    elif shared is not None:
        tab = as_interval_tables(model.cfg, shared)
    else:
        tab = chain_interval_tables(model, c) if model.cfg.n_heads == 1 else enclosed_tables(model, c)
    budget = None if exact_budget < 0 else exact_budget
    subs = [sum(d.count_below(k, m, q, int(T[q, m])) for q in range(m + 1) if T[q, m] >= -1) for m in range(n)]
    if cubic_pick == "top":
        picked = set(range(n - top, n))
    else:  # the base's loss per unit of cubic cost, largest first (ties: the larger m)
        lost = [d.count_with_max(n, k, m) - subs[m] for m in range(n)]
        picked = set(sorted(range(n), key=lambda m: (-lost[m] / (m + 1), -m))[:top])
    total = 0
    for m in range(n):
        sub = subs[m]
        if tab is not None and m in picked:
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
    base_budget: float = 0.0,
    base_near_tokens: int = 0,
    cubic_pick: str = CUBIC_PICKS[0],
) -> int:
    """Strategy entry point (see ``maxk.proofs.registry``): certified count for ``dist``."""
    if exact_outputs < 1:
        raise MaxkError(f"exact_outputs must be at least 1, not {exact_outputs}")
    return hybrid_certified(
        model,
        dist,
        counter,
        cubic_top=cubic_top,
        base=base,
        exact_outputs=exact_outputs,
        exact_budget=exact_budget,
        base_budget=base_budget,
        base_near_tokens=base_near_tokens,
        cubic_pick=cubic_pick,
    )
