"""What a sweep runs: the (configuration, seed) jobs and the options that decide their results.

A ``Job`` is plain, picklable data (it travels to Dask workers); ``SweepOptions`` holds every
option that changes a seed's record (the recipe, the distribution, the extras, sample counts, the
cost budget), so that a re-run can tell whether a finished record answers the same question.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ..config import ModelConfig
from ..errors import MaxkError

EXTRAS = ("wick", "surprise", "frontier")  # what ``--with`` may add to each seed's record

# --with frontier: every budgeted estimator at each of these FLOP budgets (``estimators.frontier``)
FRONTIER_BUDGETS = (1e5, 1e6, 1e7, 1e8, 1e9)

# The paper's six configurations (DESIGN §5): (k, n), all with d_model = d_head = 32, one head.
PAPER_CONFIGS = ((4, 64), (5, 64), (10, 64), (10, 128), (20, 64), (20, 512))

# Wick summary: every input up to this many, else this many sampled (every one of the 1.7e7
# inputs at k = 4, n = 64 took 570 s of a seed's 650 s on the shared machine).
WICK_SAMPLES = 200_000

DEFAULT_MEMORY_GIB = 6.0  # address space a method may add to its process (``memory``); None: no cap

DEFAULT_BUDGET = 1000.0  # how many times its declared cost at k=4, n=64 a method may need (``budget``)


@dataclass(frozen=True)
class Recipe:
    """The training recipe of every seed (``maxk.train.train``'s arguments besides the seed)."""

    steps: int = 3000
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SweepOptions:
    """Everything besides (config, seed) that decides a seed's record.

    dist: the distribution evaluated, proved and estimated under; extras: a subset of ``EXTRAS``;
    eval_samples: stratified samples when exhaustive evaluation is out of reach; wick_samples:
    the Wick summary enumerates every input when there are at most this many, else samples this
    many; budget: how
    many times its declared cost at the paper's k = 4, n = 64 a method's declared cost may be
    (``budget.planned_refusal``); memory_gib: the address space one method may add to its
    process before its allocations fail and it is recorded as refused (``memory``; None: no cap);
    frontier_budgets: the FLOP budgets of ``--with frontier`` (recorded only with it)."""

    recipe: Recipe = field(default_factory=Recipe)
    dist: str = "uniform"
    extras: tuple[str, ...] = ()
    eval_samples: int = 1_000_000
    wick_samples: int = WICK_SAMPLES
    budget: float = DEFAULT_BUDGET
    memory_gib: float | None = DEFAULT_MEMORY_GIB
    frontier_budgets: tuple[float, ...] = FRONTIER_BUDGETS

    def __post_init__(self) -> None:
        bad = sorted(set(self.extras) - set(EXTRAS))
        if bad:
            raise MaxkError(f"unknown --with item(s) {', '.join(bad)}: choose from {', '.join(EXTRAS)}")
        object.__setattr__(self, "extras", tuple(x for x in EXTRAS if x in self.extras))
        if self.eval_samples < 2 or self.wick_samples < 2:
            raise MaxkError("eval and wick sample counts must be at least 2")
        if not self.budget > 0:
            raise MaxkError(f"the cost budget must be positive, got {self.budget!r}")
        if self.memory_gib is not None and not self.memory_gib > 0:
            raise MaxkError(f"the memory cap must be positive (GiB), got {self.memory_gib!r}")
        budgets = tuple(sorted({float(b) for b in self.frontier_budgets}))
        if not budgets or not all(math.isfinite(b) and b > 0 for b in budgets):
            raise MaxkError(f"frontier budgets must be positive finite FLOP counts, got {self.frontier_budgets!r}")
        object.__setattr__(self, "frontier_budgets", budgets)

    def to_dict(self) -> dict:
        """Plain JSON data (the manifest's and each record's ``options``)."""
        return {
            "recipe": self.recipe.to_dict(),
            "dist": self.dist,
            "with": list(self.extras),
            "eval_samples": self.eval_samples,
            "wick_samples": self.wick_samples,
            "budget": self.budget,
            "memory_gib": self.memory_gib,
        } | ({"frontier_budgets": list(self.frontier_budgets)} if "frontier" in self.extras else {})


@dataclass(frozen=True)
class Job:
    """One seed of one configuration, with the options of its sweep; ``threads``: torch intra-op
    threads while it runs (None: leave the process's setting)."""

    cfg: ModelConfig
    seed: int
    options: SweepOptions
    threads: int | None = None

    @property
    def config_dir(self) -> str:
        return config_dir(self.cfg)

    @property
    def stem(self) -> str:
        """File name stem of the seed: seed-0007."""
        return f"seed-{self.seed:04d}"


def config_dir(cfg: ModelConfig) -> str:
    """Directory name of a configuration: k4-n64-d32 (+ -h2 with two heads, + -dh16 when d_head
    differs from d_model)."""
    name = f"k{cfg.n_ctx}-n{cfg.d_vocab}-d{cfg.d_model}"
    if cfg.n_heads > 1:
        name += f"-h{cfg.n_heads}"
    if cfg.d_head != cfg.d_model:
        name += f"-dh{cfg.d_head}"
    return name


def parse_seeds(text: str | int | Iterable[int]) -> tuple[int, ...]:
    """Seeds from "0-150", "3", "0,2,5-9" (inclusive ranges), an int or an iterable of ints;
    sorted, without repeats. MaxkError for anything else."""
    if isinstance(text, bool):
        raise MaxkError(f"bad seeds {text!r}")
    if isinstance(text, int):
        items = [text]
    elif isinstance(text, str):
        items = []
        for part in text.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None:
                raise MaxkError(f"bad seeds {text!r}: use e.g. 0-150 or 0,2,5-9")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise MaxkError(f"bad seed range {part!r}: the end is below the start")
            items.extend(range(lo, hi + 1))
    else:
        items = list(text)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in items):
            raise MaxkError(f"seeds must be non-negative integers, got {items!r}")
    if not items:
        raise MaxkError("no seeds given")
    return tuple(sorted(set(items)))


def parse_ints(text: str | int | Iterable[int], what: str) -> tuple[int, ...]:
    """Positive integers from "4", "4,5,10", an int or an iterable (``what`` names them in errors)."""
    if isinstance(text, bool):
        raise MaxkError(f"bad {what} {text!r}: give positive integers")
    if isinstance(text, int):
        vals = [text]
    elif isinstance(text, str):
        try:
            vals = [int(x) for x in text.replace(" ", "").split(",")]
        except ValueError:
            raise MaxkError(f"bad {what} {text!r}: give an integer or a comma-separated list") from None
    else:
        vals = list(text)
    if not vals or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals):
        raise MaxkError(f"bad {what} {text!r}: give positive integers")
    return tuple(dict.fromkeys(vals))


def model_configs(
    k: str | int | Iterable[int] = 4,
    vocab: str | int | Iterable[int] = 64,
    d_model: int = 32,
    d_head: int | None = None,
    heads: int = 1,
    paper: bool = False,
) -> list[ModelConfig]:
    """The configurations of a sweep: every (k, n) pair from ``k`` × ``vocab``, or with ``paper``
    the paper's six (``PAPER_CONFIGS``); d_head defaults to d_model. Invalid ones: MaxkError."""
    pairs = PAPER_CONFIGS if paper else [(kk, n) for kk in parse_ints(k, "k") for n in parse_ints(vocab, "vocab")]
    dh = d_model if d_head is None else d_head
    return [ModelConfig(d_vocab=n, n_ctx=kk, d_model=d_model, d_head=dh, n_heads=heads) for kk, n in pairs]


def plan(
    configs: list[ModelConfig], seeds: tuple[int, ...], options: SweepOptions, threads: int | None = None
) -> list[Job]:
    """Every (config, seed) job, configuration by configuration, seeds in order."""
    return [Job(cfg, s, options, threads) for cfg in configs for s in seeds]
