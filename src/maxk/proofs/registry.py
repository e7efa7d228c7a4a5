"""Proof strategies by name, and ``prove`` / ``prove_all``.

A strategy is a callable ``(model, dist, counter) -> certified`` returning the exact number of
inputs of ``dist`` it certifies correct, adding every floating-point operation it performs to
``counter`` (a ``maxk.flops.FlopCounter``; enclosing the tables is part of the proof and is
counted). ``prove`` times it and wraps the result in a ``ProofResult``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from ..distributions import check_distribution, n_sequences
from ..errors import MaxkError
from ..flops import FlopCounter
from .base import ProofResult
from .brute import COST as BRUTE_COST
from .brute import prove_brute
from .cubic import COST as CUBIC_COST
from .cubic import prove_cubic


@dataclass(frozen=True)
class Strategy:
    """A registered proof strategy: ``run(model, dist, counter) -> certified count``."""

    name: str
    run: Callable[..., int]
    cost: str
    summary: str


STRATEGIES: dict[str, Strategy] = {}


def register(name: str, run: Callable[..., int], cost: str, summary: str) -> None:
    """Add a strategy under ``name`` (names are unique)."""
    if name in STRATEGIES:
        raise ValueError(f"strategy {name!r} already registered")
    STRATEGIES[name] = Strategy(name, run, cost, summary)


register("brute", prove_brute, BRUTE_COST, "every input certified by its own enclosed margin")
register("cubic", prove_cubic, CUBIC_COST, "per (max, query, copies, token): worst arrangement, exact over outputs")

# ---- subcubic strategies (owned by the subcubic work; names start with "subcubic", plus
# ---- "direct-quadratic" / "attention-quadratic" variants). Register them here, e.g.
# ---- from .subcubic import ...; register("subcubic-svd", prove_subcubic_svd, "O(...)", "...")
from .subcubic import COSTS as _SUBCUBIC_COSTS  # noqa: E402
from .subcubic import STRATEGIES as _SUBCUBIC  # noqa: E402
from .subcubic import SUMMARIES as _SUBCUBIC_SUMMARIES  # noqa: E402

for _name, _run in _SUBCUBIC.items():
    register(_name, _run, _SUBCUBIC_COSTS[_name], _SUBCUBIC_SUMMARIES[_name])
# ---- end of subcubic strategies


def strategy_names() -> list[str]:
    """Registered strategy names, in registration order."""
    return list(STRATEGIES)


def prove(model, strategy: str, dist: str = "uniform") -> ProofResult:
    """Run one proof strategy on ``model`` for input distribution ``dist``.

    Returns a ``ProofResult`` whose ``bound`` = certified / n_sequences (rounded down to a float)
    is a lower bound on the
    exact real-number model's accuracy, with the FLOPs the verification performed (counted as it
    ran) and its wall time. Raises MaxkError for an unknown strategy or a model it cannot handle."""
    if strategy not in STRATEGIES:
        raise MaxkError(f"unknown proof strategy {strategy!r}: choose one of {', '.join(STRATEGIES)} or 'all'")
    cfg = model.cfg
    check_distribution(dist, cfg.n, cfg.k)
    st = STRATEGIES[strategy]
    counter = FlopCounter()
    t0 = time.perf_counter()
    certified = int(st.run(model, dist, counter))
    seconds = time.perf_counter() - t0
    total = n_sequences(dist, cfg.n, cfg.k)
    if not 0 <= certified <= total:
        raise AssertionError(f"strategy {strategy} certified {certified} of {total} inputs")
    bound = fraction_down(certified, total)
    return ProofResult(strategy, bound, certified, total, counter.total, seconds, st.cost, dist)


def fraction_down(num: int, den: int) -> float:
    """The largest float <= num/den (exact rational comparison), so a bound never rounds up."""
    x = num / den
    if Fraction(x) > Fraction(num, den):
        x = math.nextafter(x, 0.0)
    return x


def prove_all(model, dist: str = "uniform", strategies: list[str] | None = None,
              skip_unsupported: bool = True) -> list[ProofResult]:
    """Run several strategies (default: all registered) in order. With ``skip_unsupported``, a
    strategy that raises MaxkError for this model (e.g. too many inputs for brute force) is
    left out rather than failing the whole run (a bad distribution still raises)."""
    check_distribution(dist, model.cfg.n, model.cfg.k)
    out = []
    for name in strategies if strategies is not None else strategy_names():
        try:
            out.append(prove(model, name, dist))
        except MaxkError:
            if not skip_unsupported:
                raise
    return out
