"""One registry mechanism for the extension points: proof strategies and estimators.

A registered ``Method`` has a name, the function that runs it, its asymptotic cost, a one-line
summary, its declared options (the function's keyword-only parameters with their defaults) and
the inputs it refuses (``Refusal``s: a description and a test on the model's config and the
distribution). A new strategy or estimator is one module plus one ``register`` call; the shared
test suites iterate over the registry, so they pick it up unedited.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .config import ModelConfig
from .distributions import Distribution
from .errors import MaxkError

F = TypeVar("F", bound=Callable[..., Any])

_RESERVED = {"counter", "rng"}  # keyword parameters the runner supplies, not options


@dataclass(frozen=True)
class Refusal:
    """An input a method declines, and why. ``applies(cfg, dist)`` tells in advance; a refusal
    without it is decided while running (the method raises ``Refused(refusal)``)."""

    reason: str
    applies: Callable[[ModelConfig, Distribution], bool] | None = None


class Refused(MaxkError):
    """A method met an input it declared it refuses (a ``Refusal`` without ``applies``)."""

    def __init__(self, refusal: Refusal, detail: str = "") -> None:
        super().__init__(refusal.reason + (f": {detail}" if detail else ""))
        self.refusal = refusal


@dataclass(frozen=True)
class Method(Generic[F]):
    """A registered strategy or estimator (see the module docstring)."""

    name: str
    run: F
    cost: str
    summary: str
    options: dict[str, Any] = field(default_factory=dict)
    refuses: tuple[Refusal, ...] = ()

    def refusal(self, cfg: ModelConfig, dist: Distribution) -> str | None:
        """The declared reason this method refuses (cfg, dist), or None if it accepts them."""
        for r in self.refuses:
            if r.applies is not None and r.applies(cfg, dist):
                return r.reason
        return None

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` without the ones set to None; MaxkError for one the method does not declare."""
        options = {k: v for k, v in options.items() if v is not None}
        bad = set(options) - set(self.options)
        if bad:
            raise MaxkError(
                f"{self.name!r} does not take option(s) {', '.join(sorted(bad))}"
                + (f" (it takes {', '.join(sorted(self.options))})" if self.options else "")
            )
        return options


def declared_options(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword-only parameters of ``fn`` and their defaults, less the runner's own (counter, rng)."""
    params = inspect.signature(fn).parameters.values()
    return {
        p.name: (None if p.default is p.empty else p.default)
        for p in params
        if p.kind is p.KEYWORD_ONLY and p.name not in _RESERVED
    }


class Registry(Generic[F]):
    """Methods of one kind ("proof strategy", "estimator") by name, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._methods: dict[str, Method[F]] = {}

    def register(
        self,
        name: str,
        run: F,
        *,
        cost: str,
        summary: str,
        refuses: tuple[Refusal, ...] = (),
        options: dict[str, Any] | None = None,
    ) -> Method[F]:
        """Add a method (names are unique); its options default to ``declared_options(run)``."""
        if name in self._methods:
            raise ValueError(f"{self.kind} {name!r} already registered")
        method = Method(name, run, cost, summary, declared_options(run) if options is None else options, refuses)
        self._methods[name] = method
        return method

    def get(self, name: str) -> Method[F]:
        """The method called ``name``; MaxkError naming the choices otherwise."""
        if name not in self._methods:
            raise MaxkError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self._methods)}")
        return self._methods[name]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)

    def __getitem__(self, name: str) -> Method[F]:
        return self.get(name)

    def items(self) -> Iterator[tuple[str, Method[F]]]:
        """(name, method) pairs in registration order."""
        return iter(self._methods.items())


def multi_head(reason: str) -> Refusal:
    """The refusal of methods that handle single-head models only."""
    return Refusal(reason, lambda cfg, dist: cfg.n_heads != 1)
