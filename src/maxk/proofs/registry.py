"""Proof strategies by name, and ``prove`` / ``prove_all``.

A strategy is registered with ``STRATEGIES.register(name, run, cost=..., summary=..., refuses=...)``
below; ``run(model_or_tables, dist, *, counter, **options) -> certified`` returns the exact
number of inputs of ``dist`` (a ``Distribution``) it certifies correct and adds every
floating-point operation it performs to ``counter`` (a ``maxk.flops.FlopCounter``; enclosing the
tables is part of the proof and is counted). Its options are its keyword-only parameters.
``prove`` checks the declared refusals, times the run and builds the ``ProofResult``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from fractions import Fraction

from ..circuits import CircuitTables
from ..distributions import Distribution, resolve
from ..errors import MaxkError
from ..exact import EXHAUSTIVE_LIMIT
from ..flops import FlopCounter
from ..registry import Refusal, Refused, Registry
from ..results import ProofResult
from .brute import COST as BRUTE_COST
from .brute import prove_brute
from .cubic import COST as CUBIC_COST
from .cubic import prove_cubic
from .enclose import IntervalTables
from .hybrid import COST as HYBRID_COST
from .hybrid import prove_hybrid
from .per_head import POWER_OF_TWO_HEADS
from .subcubic import FINITE, SUBCUBIC_VARIANTS
from .subcubic_coupled import COST as COUPLED_COST
from .subcubic_coupled import prove_coupled

StrategyFn = Callable[..., int]

STRATEGIES: Registry[StrategyFn] = Registry("proof strategy")


STRATEGIES.register(
    "brute",
    prove_brute,
    cost=BRUTE_COST,
    summary="every input certified by its own enclosed margin",
    refuses=(
        Refusal(
            f"needs at most {EXHAUSTIVE_LIMIT:.0e} inputs (n^k); use --strategy cubic",
            lambda cfg, dist: cfg.d_vocab**cfg.n_ctx > EXHAUSTIVE_LIMIT,
        ),
    ),
)
STRATEGIES.register(
    "cubic",
    prove_cubic,
    cost=CUBIC_COST,
    summary="per (max, query, copies, token): worst arrangement, exact over outputs; any number of heads",
)
for _v in SUBCUBIC_VARIANTS:
    STRATEGIES.register(_v.name, _v.run, cost=_v.cost, summary=_v.summary, refuses=(POWER_OF_TWO_HEADS, FINITE))
STRATEGIES.register(
    "subcubic-coupled",
    prove_coupled,
    cost=COUPLED_COST,
    summary=(
        "subcubic gaps, outputs per column (r rivals, two sides; R more on the top max tokens "
        "or the P pairs gaining most), token blocks"
    ),
    refuses=(POWER_OF_TWO_HEADS, FINITE),
)
STRATEGIES.register(
    "hybrid",
    prove_hybrid,
    cost=HYBRID_COST,
    summary="cubic for the cubic_top largest max tokens, subcubic for the rest (the frontier's knob)",
    refuses=(POWER_OF_TWO_HEADS, FINITE),
)


def strategy_names() -> list[str]:
    """Registered strategy names, in registration order."""
    return STRATEGIES.names()


def fraction_down(num: int, den: int) -> float:
    """The largest float <= num/den (exact rational comparison), so a bound never rounds up."""
    x = num / den
    if Fraction(x) > Fraction(num, den):
        x = math.nextafter(x, 0.0)
    return x


def prove(
    model_or_tables,
    strategy: str,
    dist: str | Distribution = "uniform",
    *,
    counter: FlopCounter | None = None,
    **options,
) -> ProofResult:
    """Run proof strategy ``strategy`` on a model (or its ``IntervalTables``) for ``dist``.

    The ``ProofResult``'s ``bound`` (certified / N, rounded down) is a lower bound on the exact
    real-number model's accuracy; ``flops`` is what the verification performed (added to
    ``counter`` too, if given) and ``seconds`` its wall time. ``options`` are the strategy's
    declared options (None values dropped). MaxkError for an unknown strategy or option, a bad
    distribution, or an input the strategy declares it refuses."""
    st = STRATEGIES.get(strategy)
    if isinstance(model_or_tables, CircuitTables):
        raise MaxkError(
            "proofs need the model (its tables are enclosed from the float32 weights), not float64 circuit tables"
        )
    cfg = model_or_tables.cfg
    d = resolve(dist, cfg.n, cfg.k)
    reason = st.refusal(cfg, d)
    if reason is not None:
        raise MaxkError(f"strategy {strategy!r} {reason}")
    if isinstance(model_or_tables, IntervalTables) and strategy not in ("brute", "cubic"):
        raise MaxkError(f"strategy {strategy!r} needs the model's weights, not enclosed tables")
    options = st.check_options(options)
    counter = FlopCounter() if counter is None else counter
    start = counter.total
    t0 = time.perf_counter()
    try:
        certified = int(st.run(model_or_tables, d, counter=counter, **options))
    except Refused as e:
        if e.refusal not in st.refuses:
            raise AssertionError(f"strategy {strategy!r} refused with an undeclared reason: {e}") from e
        e.args = (f"strategy {strategy!r} {e}",)
        raise
    seconds = time.perf_counter() - t0
    total = d.n_sequences(cfg.n, cfg.k)
    if not 0 <= certified <= total:
        raise AssertionError(f"strategy {strategy} certified {certified} of {total} inputs")
    return ProofResult(
        method=strategy,
        dist=d.name,
        n_sequences=total,
        seconds=seconds,
        flops=counter.total - start,
        options=options,
        bound=fraction_down(certified, total),
        certified=certified,
        cost=st.cost,
    )


def prove_all(
    model, dist: str | Distribution = "uniform", strategies: list[str] | None = None, skip_refused: bool = True
) -> list[ProofResult]:
    """Run several strategies (default: all registered) in order. With ``skip_refused``, a
    strategy that declares it refuses this model is left out rather than failing the run (a bad
    distribution or an unknown strategy still raises)."""
    d = resolve(dist, model.cfg.n, model.cfg.k)
    out = []
    for name in strategies if strategies is not None else strategy_names():
        if skip_refused and STRATEGIES.get(name).refusal(model.cfg, d) is not None:
            continue
        try:
            out.append(prove(model, name, d))
        except Refused:  # a declared refusal decided while running
            if not skip_refused:
                raise
    return out
