"""Input distributions (DESIGN §3): one kernel that owns every exact count and law.

``get_distribution(name)`` (what the CLI passes) and ``resolve(dist, n, k)`` (what every analysis
calls with a name or a ``Distribution``) are the ways in; ``register_distribution`` adds a new one
(see docs/distributions.md for what it must provide).
"""

from __future__ import annotations

from ..errors import MaxkError
from .base import Distribution
from .distinct import Distinct
from .query_unique import QueryUnique
from .uniform import Uniform

UNIFORM = Uniform()
DISTINCT = Distinct()
QUERY_UNIQUE = QueryUnique()

_REGISTRY: dict[str, Distribution] = {}


def register_distribution(dist: Distribution) -> Distribution:
    """Make ``dist`` available by its name (names are unique); return it."""
    if dist.name in _REGISTRY:
        raise ValueError(f"distribution {dist.name!r} already registered")
    _REGISTRY[dist.name] = dist
    return dist


register_distribution(UNIFORM)
register_distribution(DISTINCT)
register_distribution(QUERY_UNIQUE)


def distribution_names() -> tuple[str, ...]:
    """Names of the registered distributions, in registration order."""
    return tuple(_REGISTRY)


DISTRIBUTIONS = distribution_names()


def get_distribution(name: str | Distribution) -> Distribution:
    """The registered distribution called ``name`` (a ``Distribution`` is returned as it is)."""
    if isinstance(name, Distribution):
        return name
    if name not in _REGISTRY:
        raise MaxkError(f"unknown distribution {name!r}: choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def resolve(dist: str | Distribution, n: int, k: int) -> Distribution:
    """``get_distribution(dist)``, checked for sequences of k tokens in [0, n)."""
    return get_distribution(dist).check(n, k)


__all__ = [
    "DISTINCT",
    "DISTRIBUTIONS",
    "Distribution",
    "QUERY_UNIQUE",
    "UNIFORM",
    "distribution_names",
    "get_distribution",
    "register_distribution",
    "resolve",
]
