"""The one distribution kernel's interface (DESIGN §3): every exact count, conditional law,
sampler and inverse-CDF step that maxk uses about an input distribution.

An input is k tokens in [0, n); its label is the max m, its query the last token q = x[k-1], and
its k-1 other positions are its *free* positions. Every analysis asks a ``Distribution`` — exact
evaluation its support, the proofs their counts (a proof's counts *are* its bound), the
estimators their strata, case laws and draw laws, the samplers their conditional laws — so that
they agree by construction and one test (tests/test_distributions.py) checks every count against
enumeration. The two distributions are ``Uniform`` (k i.i.d. uniform tokens) and ``Distinct``
(k distinct tokens, every order equally likely); docs/distributions.md says what a new one must
provide.

Counts are exact Python integers (number of inputs; every input of a distribution here is equally
likely, so a count over ``n_sequences`` is a probability); laws are float64 arrays computed from
exact integers where the old code did so, so figures stay bit-identical.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import torch

from ..errors import MaxkError
from ..flops import FlopCounter


class Distribution(ABC):
    """An input distribution over sequences of k tokens in [0, n), for any n and k it supports.

    Instances are stateless; ``name`` is what the CLI and the result records call it.
    ``allows_repeats``: whether a token can occur twice in one input (the laws of copies, of
    draws with or without replacement and of the exact evaluator's support depend on it).
    ``exchangeable``: whether the k tokens are exchangeable (every order of an input equally
    likely); the systematic design's order-statistic steps (``top_law``, ``copies_law``,
    ``draw_rest``) presume it, and a law without it raises MaxkError there."""

    name: str
    allows_repeats: bool
    exchangeable: bool

    def __repr__(self) -> str:
        return f"<distribution {self.name}>"

    # ------------------------------------------------------------ support and totals

    def check(self, n: int, k: int) -> Distribution:
        """Raise MaxkError unless sequences of k tokens in [0, n) can be drawn; return self."""
        return self

    @abstractmethod
    def n_sequences(self, n: int, k: int) -> int:
        """Number of inputs with nonzero probability, N (exact; each has probability 1/N)."""

    @abstractmethod
    def count_with_max(self, n: int, k: int, m: int) -> int:
        """Number of inputs whose maximum is m (exact)."""

    def max_weights(self, n: int, k: int) -> np.ndarray:
        """P[max = m] for m in [0, n): [n] float64, each rounded once from an exact fraction."""
        total = self.n_sequences(n, k)
        return np.array([float(Fraction(self.count_with_max(n, k, m), total)) for m in range(n)])

    @abstractmethod
    def max_query_counts(self, k: int, m: int) -> tuple[int, int]:
        """(inputs with max m and query m, inputs with max m and query q, for each one q < m)."""

    def max_query_weights(self, n: int, k: int) -> np.ndarray:
        """P[max = m, query = q]: [n_max, n_query] float64 (zero for q > m), from exact counts."""
        total = self.n_sequences(n, k)
        w = np.zeros((n, n))
        for m in range(n):
            top, below = self.max_query_counts(k, m)
            w[m, m] = float(Fraction(top, total))
            if m > 0 and k >= 2:
                w[m, :m] = float(Fraction(below, total))
        return w

    @abstractmethod
    def count_below(self, k: int, m: int, q: int, t: int) -> int:
        """Number of inputs with max m, query q <= m and every non-max token at a free position
        <= t (t < m; t = -1: every free position holds m). Cost O(1)."""

    def enumerate(self, n: int, k: int) -> np.ndarray:
        """Every input with nonzero probability, in lexicographic order: [N, k] int64 (small n, k
        only: the statement of the law every other count is tested against). Cost O(n^k·k)."""
        if n**k > 1 << 24:
            raise MaxkError(f"enumeration of {n}^{k} inputs is too large")
        grid = np.indices((n,) * k).reshape(k, -1).T.astype(np.int64) if k else np.zeros((1, 0), np.int64)
        keep = self.support_rows(grid, query_last=True)
        return grid if keep is None else grid[keep]

    @abstractmethod
    def support_rows(self, tokens: np.ndarray, *, query_last: bool = False) -> np.ndarray | None:
        """Which rows of ``tokens`` [b, p] (some positions of an input) can occur together in one
        input: bool [b], or None when every row can. ``query_last``: the last column is the
        query; else every column is a free position, and a row is kept when its tokens are
        allowed together at free positions (whether some query completes it is for
        ``support_with_query`` and ``part_keys`` to say)."""

    @abstractmethod
    def support_with_query(self, support: np.ndarray | None, free: np.ndarray, q: int) -> np.ndarray | None:
        """Rows of free tokens ``free`` [b, k-1] (with ``support = support_rows(free)``) that can
        occur beside the query token q: bool [b], or None when every row can."""

    @abstractmethod
    def part_keys(self, tokens: np.ndarray, n: int, *, query_last: bool = False) -> np.ndarray | None:
        """Keys [b, words] int64 of the rows of ``tokens`` (one part of an input's positions, each
        row in ``support_rows`` with the same ``query_last``) such that two parts — one of them
        holding the query (``query_last``: its last column), the other free positions only — can
        form one input iff ``parts_compatible`` of their keys; None when any two parts can (then
        no key is needed)."""

    @staticmethod
    def parts_compatible(keys_a: torch.Tensor, keys_b: torch.Tensor) -> torch.Tensor:
        """[a, words], [b, words] -> bool [a·b] (row-major): which pairs of parts form an input."""
        return ((keys_a[:, None, :] & keys_b[None, :, :]) == 0).all(-1).view(-1)

    # ------------------------------------------------------------ counts for the cubic proof

    @abstractmethod
    def max_only_occurs(self, k: int, m: int, q: int) -> bool:
        """Whether the input with query q <= m and every free position holding m occurs."""

    @abstractmethod
    def nonmax_groups(self, k: int, m: int) -> Iterator[tuple[int, int, int]]:
        """Groups of inputs with max m by (query q, number cc >= 1 of free positions holding a
        non-max token): yields (q, cc, arrangements), arrangements = number of ways to choose
        which free positions hold the non-max tokens (the others hold m)."""

    def group_ways(self, k: int, m: int) -> np.ndarray:
        """``nonmax_groups(k, m)`` as a table: [m+1, k-1], entry (q, cc-1) the group's
        arrangements, 0 for a group that does not occur (int64, or Python ints where int64
        could overflow). Cost O(m·k)."""
        f = k - 1
        ways = np.zeros((m + 1, f), dtype=np.int64 if f <= 60 else object)
        for q, cc, arrangements in self.nonmax_groups(k, m):
            ways[q, cc - 1] = arrangements
        return ways

    @abstractmethod
    def count_tokens(self, allowed: np.ndarray, q: int, cc: int) -> int:
        """Number of ordered cc-tuples of non-max tokens, all in ``allowed`` (bool [m], tokens
        below the max m), that fill a group's cc non-max positions beside query q."""

    def count_token_groups(self, allowed: np.ndarray, qs: np.ndarray, m: int, k: int) -> np.ndarray:
        """``count_tokens`` of every group at once: [b, k-1] exact ints (object or int64), entry
        (i, cc-1) the count for query qs[i] with tokens ``allowed[i, cc-1]`` (allowed [b, k-1, m]
        bool), 0 for a group that ``nonmax_groups`` does not yield. Cost O(b·k·m)."""
        out = np.zeros(allowed.shape[:2], dtype=object)
        row = {int(q): i for i, q in enumerate(qs)}
        for q, cc, _ways in self.nonmax_groups(k, m):
            i = row.get(q)
            if i is not None:
                out[i, cc - 1] = self.count_tokens(allowed[i, cc - 1], q, cc)
        return out

    @abstractmethod
    def count_bucketed(
        self, bucket: np.ndarray, K: int, m: int, k: int, counter: FlopCounter, memo: dict | None = None
    ) -> np.ndarray:
        """[nq, k-1] counts: for query q and group size cc, the ordered cc-tuples of non-max
        tokens t < m (as in ``count_tokens``) whose ``bucket[q, cc-1, t]`` sum to less than K
        (bucket [nq, k-1, m] ints in [0, K]; only groups of ``nonmax_groups`` are filled).
        ``memo``: a dict the caller keeps across calls (one proof's), in which the counts of
        groups already met are looked up instead of recomputed; the same counts either way."""

    # ------------------------------------------------------------ samplers

    @abstractmethod
    def sample(self, n: int, k: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` inputs from the distribution: [size, k] int64."""

    @abstractmethod
    def sample_given(self, n: int, k: int, m: np.ndarray, q: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """Inputs conditioned per row on max = m[i] (and query = q[i] if given): m, q [b] -> [b, k].
        Every (m, q) must have positive probability."""

    def sample_with_max(self, n: int, k: int, m: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` inputs conditioned on max = m: [size, k] int64."""
        if self.count_with_max(n, k, m) == 0:
            raise ValueError(f"no sequence has maximum {m}")
        return self.sample_given(n, k, np.full(size, m, dtype=np.int64), None, rng)

    # ------------------------------------------------------------ the order-statistic hierarchy

    @abstractmethod
    def top_law(self, r: np.ndarray, A: np.ndarray, n: int) -> np.ndarray:
        """Law of the largest of r remaining tokens that all lie below A: weights [U, n] (column
        t; unnormalised where the formula is, as the systematic design normalises)."""

    @abstractmethod
    def copies_law(self, r: np.ndarray, t: np.ndarray, k: int) -> np.ndarray | None:
        """Law of the number of copies c = 1..r of the largest value t among r remaining tokens
        (all <= t): weights [U, k] (column c-1), or None when a value cannot repeat (c = 1)."""

    @abstractmethod
    def draw_rest(
        self, A: np.ndarray, count: int, q: np.ndarray, has_q: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The last ``count`` tokens of rows whose other tokens are placed: each below A [g],
        beside query q [g] where ``has_q`` [g] (drawn after the query). -> [g, count] int64."""

    @abstractmethod
    def cases(self, n: int, k: int) -> dict[str, np.ndarray]:
        """Every case (m, q, c, t2, c2, r2) with its exact probability ``prob``: max m, query q, c
        copies of m among the free positions, the largest remaining token t2 < m (-1: none) with
        c2 copies, and r2 low tokens below t2. Probabilities sum to 1."""

    @abstractmethod
    def low_token_mask(self, n: int) -> np.ndarray:
        """member[q, tl, t]: bool [n, n, n], whether a low token below tl can be t beside query q."""

    # ------------------------------------------------------------ strata of the max's positions

    @abstractmethod
    def fixed_max_strata(self, n: int, k: int, max_copies: int | None) -> tuple[dict[str, np.ndarray], float]:
        """Strata by (max m, query q, which free positions hold m), as arrays: m, q [S]; fixm
        [S, k] (free positions holding m), rest [S, k] (positions holding a token drawn from the
        population [0, m) minus ``removed``), size [S] (population size), gamma [S]
        (``pair_covariance_factor``), removed [S, 1] (-1: none), weight [S] exact probabilities;
        and the probability mass left out (when only sets of at most ``max_copies`` positions
        are enumerated)."""

    # ------------------------------------------------------------ draws from a population

    @abstractmethod
    def pair_covariance_factor(self, size: np.ndarray) -> np.ndarray:
        """gamma with Cov(f(X_i), g(X_j)) = -gamma·Cov(f, g) for two positions i != j drawn from a
        population of ``size`` tokens (0 when drawn independently)."""

    @abstractmethod
    def p_none_drawn(self, size: np.ndarray, heavy: np.ndarray, r: np.ndarray) -> np.ndarray:
        """P[none of ``heavy`` given tokens is among r draws from a population of ``size``]."""

    @abstractmethod
    def p_heaviest_at(self, size: np.ndarray, j: int | np.ndarray, r: np.ndarray) -> np.ndarray:
        """P[a given one of r draws is the population's j-th heaviest token and every other draw is
        lighter] (population of ``size``)."""

    @abstractmethod
    def p_heaviest_any(self, size: np.ndarray, j: int | np.ndarray, r: np.ndarray) -> np.ndarray:
        """``p_heaviest_at`` summed over the r draws."""
