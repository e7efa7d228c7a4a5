"""Equality-pattern classes of inputs: the symmetry the initialisation prior has.

The training recipe's initialisation draws every weight entry i.i.d. (``MaxKTransformer.
init_weights``), so relabelling the tokens (permuting the rows of W_E and the columns of W_U)
leaves the prior unchanged. The probability that a fresh model gets input x right therefore
depends only on x's *pattern*: which positions hold equal tokens and which of those groups holds
the max (k = 4: 37 patterns). Pass rates of the brute-force check are pooled per pattern.

A pattern's key is its restricted growth string (the block of each position, blocks numbered by
first occurrence) and the block of the max, e.g. ``"0102:1"``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..distributions import Distribution
from ..errors import MaxkError


@dataclass(frozen=True)
class Pattern:
    """Positions' blocks (``blocks[i]``: block of position i, numbered by first occurrence), the
    number of blocks and which one holds the max."""

    blocks: tuple[int, ...]
    max_block: int

    @property
    def n_blocks(self) -> int:
        return max(self.blocks) + 1

    @property
    def key(self) -> str:
        return "".join(map(str, self.blocks)) + f":{self.max_block}"

    def size(self, n: int) -> int:
        """Number of inputs of tokens in [0, n) with this pattern: C(n, r)·(r-1)! (the largest of r
        distinct tokens goes to the max block, the others to the other blocks in any order)."""
        r = self.n_blocks
        return math.comb(n, r) * math.factorial(r - 1) if r <= n else 0

    def inputs(self, n: int) -> np.ndarray:
        """Every input with this pattern, tokens [size(n), k]. Cost O(size·k)."""
        r = self.n_blocks
        rows = [t for t in itertools.permutations(range(n), r) if t[self.max_block] == max(t)]
        tok = np.array(rows, dtype=np.int64).reshape(-1, r)
        return tok[:, list(self.blocks)]

    def draw(self, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """Every input of the pattern if there are at most ``size`` of them (exact), else ``size``
        drawn uniformly (``sample``)."""
        return self.inputs(n) if self.size(n) <= size else self.sample(n, size, rng)

    def sample(self, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` inputs drawn uniformly from the pattern's inputs: tokens [size, k]. Cost
        O(size·n log n)."""
        r = self.n_blocks
        picks = np.argsort(rng.random((size, n)), axis=1)[:, :r]  # r distinct tokens per row
        top = picks.max(axis=1)
        others = np.where(picks == top[:, None], -1, picks)
        others = -np.sort(-others, axis=1)[:, : r - 1]  # the r-1 others; shuffled below
        for row in others:
            rng.shuffle(row)
        block_tok = np.empty((size, r), dtype=np.int64)
        rest = [b for b in range(r) if b != self.max_block]
        block_tok[:, self.max_block] = top
        block_tok[:, rest] = others
        return block_tok[:, list(self.blocks)]


@cache
def patterns(k: int) -> tuple[Pattern, ...]:
    """Every pattern of k positions (set partitions as restricted growth strings, times the block
    of the max), in a fixed order."""
    out: list[Pattern] = []

    def grow(prefix: list[int]) -> None:
        if len(prefix) == k:
            for b in range(max(prefix) + 1):
                out.append(Pattern(tuple(prefix), b))
            return
        for b in range(max(prefix, default=-1) + 2):
            grow(prefix + [b])

    grow([])
    return tuple(out)


def pattern_keys(tokens: np.ndarray) -> list[str]:
    """The pattern key of each input of tokens [b, k]. Cost O(b·k²)."""
    keys = []
    for row in np.asarray(tokens):
        first: dict[int, int] = {}
        blocks = tuple(first.setdefault(int(t), len(first)) for t in row)
        keys.append("".join(map(str, blocks)) + f":{first[int(row.max())]}")
    return keys


def support_patterns(dist: Distribution, n: int, k: int) -> list[tuple[Pattern, int]]:
    """The patterns whose inputs lie in ``dist``'s support, with their sizes. MaxkError unless the
    support is a union of whole patterns and they account for every input (true of every law here:
    each is uniform on a support defined by equalities)."""
    out = []
    for p in patterns(k):
        if p.size(n) == 0:
            continue
        one = p.sample(n, 1, np.random.default_rng(0))
        rows = dist.support_rows(one, query_last=True)
        keep = rows is None or bool(rows[0])
        if keep:
            out.append((p, p.size(n)))
    if sum(s for _, s in out) != dist.n_sequences(n, k):
        raise MaxkError(
            f"surprise accounting needs a law whose support is a union of equality patterns; {dist.name} is not"
        )
    return out
