"""Deciding before running whether a method can run at a configuration: its declared refusals,
then its declared cost against the sweep's budget.

Every registered proof strategy and estimator declares its asymptotic cost as a string such as
"O(n^3 k^2)" or "O(h^2 n^3 + strata·h^2·n·(n + k))" (``maxk.registry.Method.cost``).
``declared_cost`` evaluates that expression at a configuration: n, k, d (d_model), d_head and h
(heads) from the config; b (``n_bins``), samples, levels and the like from the method's
declared option defaults; ``cases`` and ``strata`` at the bounds their methods state (bins: at most n³k² cases;
cumulant: n²k strata, one per max, query and number of copies of the max); the name of another
registered method at that method's own cost (wick-residual: "O(cumulant + ...)"); any other
name at the default of the numeric option so named, or whose name ends in "_" + it
(hybrid's ``top`` is its ``cubic_top``). Logarithms are
base 2 and at least 1. The constant factors are unknown, so the figure is in "cost units", not
FLOPs or seconds.

The sweep's budget is a growth factor: a method runs where its declared cost is at most
``budget`` times its declared cost at the paper's main configuration (``REFERENCE``: k = 4,
n = 64, d = 32, one head), where every method runs in seconds. The ratio cancels the unknown
constant of each method (they differ by ~1000x between methods at equal cost units), so one
number serves all: the default 1000 keeps every method at k = 4 .. 20, n = 64 and at k = 10,
n = 128, and refuses at k = 20, n = 512 the ones that would take hours per seed (docs/sweep.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from ..config import ModelConfig
from ..distributions import Distribution
from ..estimators.registry import ESTIMATORS
from ..proofs.registry import STRATEGIES
from ..registry import Method, Registry

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z_0-9]*)|(\S))")


class CostSyntaxError(ValueError):
    """A declared cost this module cannot read."""


def _tokens(text: str) -> list[str]:
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            break
        out.append(m.group(0).strip())
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over sums, products (``·``, ``*``, ``×`` or juxtaposition), powers
    (``^``), ``log x`` and parentheses; names are looked up with ``value(name)``."""

    def __init__(self, text: str, value: Callable[[str], float]) -> None:
        body = text.strip()
        if body.startswith("O(") and body.endswith(")"):
            body = body[2:-1]
        self.toks = _tokens(body)
        self.i = 0
        self.value = value
        self.text = text

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise CostSyntaxError(f"unexpected end of {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> float:
        v = self.sum()
        if self.peek() is not None:
            raise CostSyntaxError(f"unexpected {self.peek()!r} in {self.text!r}")
        return v

    def sum(self) -> float:
        v = self.product()
        while self.peek() == "+":
            self.take()
            v += self.product()
        return v

    def product(self) -> float:
        v = self.power()
        while True:
            tok = self.peek()
            if tok in ("·", "*", "×"):
                self.take()
                v *= self.power()
            elif tok is not None and (tok == "(" or tok[0].isalnum() or tok[0] == "_"):
                v *= self.power()
            else:
                return v

    def power(self) -> float:
        v = self.atom()
        if self.peek() == "^":
            self.take()
            v = v ** self.atom()
        return v

    def atom(self) -> float:
        tok = self.take()
        if tok == "(":
            v = self.sum()
            if self.take() != ")":
                raise CostSyntaxError(f"unbalanced parentheses in {self.text!r}")
            return v
        if tok == "log":
            return max(1.0, math.log2(max(self.power(), 1.0)))
        if tok[0].isdigit():
            return float(tok)
        if tok[0].isalpha() or tok[0] == "_":
            return self.value(tok)
        raise CostSyntaxError(f"unexpected {tok!r} in {self.text!r}")


def _registries() -> tuple[Registry, ...]:
    return (STRATEGIES, ESTIMATORS)


def _method_named(name: str) -> Method | None:
    for reg in _registries():
        if name in reg:
            return reg.get(name)
    return None


def declared_cost(method: Method, cfg: ModelConfig, _depth: int = 0) -> float:
    """The value of ``method.cost`` at ``cfg`` (see the module docstring for the symbols).
    CostSyntaxError when the expression cannot be read or names an unknown symbol. Cost O(len)."""
    n, k, h = float(cfg.d_vocab), float(cfg.n_ctx), float(cfg.n_heads)
    opts = method.options
    symbols = {
        "n": n,
        "k": k,
        "d": float(cfg.d_model),
        "d_model": float(cfg.d_model),
        "d_head": float(cfg.d_head),
        "h": h,
        "cases": n**3 * k**2,
        "strata": n**2 * k,
    }
    numeric = {o: float(v) for o, v in opts.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tails: dict[str, list[float]] = {}
    for o, v in numeric.items():
        tails.setdefault(o.rsplit("_", 1)[-1], []).append(v)
    symbols.update({t: vs[0] for t, vs in tails.items() if len(vs) == 1 and t not in symbols})
    symbols.update(numeric)
    if "n_bins" in numeric:
        symbols["b"] = numeric["n_bins"]

    def value(name: str) -> float:
        if name in symbols:
            return symbols[name]
        other = _method_named(name)
        if other is not None and other is not method and _depth < 4:
            return declared_cost(other, cfg, _depth + 1)
        raise CostSyntaxError(f"unknown symbol {name!r} in the declared cost {method.cost!r} of {method.name!r}")

    return _Parser(method.cost, value).parse()


REFERENCE = ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32)


def growth(method: Method, cfg: ModelConfig) -> float:
    """How many times its declared cost at ``REFERENCE`` the method's declared cost at ``cfg`` is.
    CostSyntaxError as ``declared_cost``."""
    return declared_cost(method, cfg) / declared_cost(method, REFERENCE)


def planned_refusal(method: Method, cfg: ModelConfig, dist: Distribution, budget: float) -> str | None:
    """Why ``method`` will not be run at (cfg, dist), decided before running it: its own declared
    refusal, or a declared cost more than ``budget`` times its cost at ``REFERENCE``; None if it is
    to run. A cost that cannot be read does not stop the method (a newly registered one runs)."""
    reason = method.refusal(cfg, dist)
    if reason is not None:
        return reason
    try:
        factor = growth(method, cfg)
    except CostSyntaxError:
        return None
    if factor > budget:
        return (
            f"declared cost {method.cost} at n={cfg.d_vocab}, k={cfg.n_ctx} is {factor:.3g} times its cost at "
            f"the paper's k={REFERENCE.n_ctx}, n={REFERENCE.d_vocab}, above the sweep's budget of {budget:g} (--budget)"
        )
    return None
