"""The weights themselves as an explanation: the shortest description found of weights that behave
like the model, an upper bound on the bits of optimisation.

A description codes every weight matrix (biases that are zero, as the recipe freezes them, cost
nothing beyond a flag) with one of:
- uniform quantisation to ``bits`` bits per entry (levels -L..L, L = 2^(bits-1) - 1, a float32
  scale = max |W|), the levels written either densely (bits each) or entropy-coded (their
  empirical code length plus a header naming each used level and its count) — zeroed entries
  make the entropy code short;
- optionally low rank r first (per head slice: W ≈ A·B from the SVD, A = U_r·sqrt(S_r),
  B = sqrt(S_r)·V_r^T, each quantised as above);
- or the raw float32 entries (32 bits each: the weights exactly).
Each matrix also pays a header (its bits, rank and scheme: 16 bits). The search: a binary search
for one bit width shared by every matrix, then per matrix fewer bits while the behaviour holds,
then halving ranks while it holds; every candidate is checked by exact evaluation
(``maxk.exact.evaluate``), and accepted only if its correct count is within ``tol`` of the
model's (default: one binomial standard deviation sqrt(N·a·(1-a)), at least 1: the observed
count's noise). S(Y | description) = log2(2·tol + 1): naming the model's count within the window.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..circuits import circuit_tables
from ..distributions import Distribution
from ..exact import evaluate
from ..model import BIAS_NAMES, MaxKTransformer
from ..sampling import per_input_metrics

RAW = 32  # bits per entry of an uncoded float32
HEADER_BITS = 16  # per matrix: bit width, rank and scheme
MIN_BITS, MAX_BITS = 2, 16
SCREEN_SAMPLES = 1 << 16


def _levels_bits(levels: np.ndarray, bits: int) -> float:
    """Bits to write integer levels [size]: min(dense, entropy-coded with header) + 32 (scale)."""
    size = levels.size
    dense = size * bits
    _, counts = np.unique(levels, return_counts=True)
    entropy = float(-(counts * np.log2(counts / size)).sum())
    header = len(counts) * (bits + math.ceil(math.log2(size + 1)))
    return min(dense, entropy + header) + 32


def quantise(x: np.ndarray, bits: int) -> tuple[np.ndarray, float]:
    """(x quantised to ``bits`` bits per entry, as float32; the description's bits). Cost O(size)."""
    if bits >= RAW:
        return x.astype(np.float32), float(x.size * RAW)
    L = 2 ** (bits - 1) - 1
    scale = np.float32(np.abs(x).max())
    if scale == 0:
        return np.zeros_like(x, dtype=np.float32), 32.0
    levels = np.clip(np.rint(x / scale * L), -L, L).astype(np.int64)
    step = np.float32(scale / np.float32(L))
    return (levels.astype(np.float32) * step).astype(np.float32), _levels_bits(levels.ravel(), bits)


def encode(w: np.ndarray, bits: int, rank: int | None) -> tuple[np.ndarray, float]:
    """(decoded matrix, bits) of weight ``w`` ([a, b] or [h, a, b]) at ``bits`` bits per entry,
    rank ``rank`` per slice (None: full). Cost O(size·min(a, b)) for the SVD."""
    if rank is None or bits >= RAW:
        dec, b = quantise(w, bits)
        return dec, b + HEADER_BITS
    x = w.reshape((-1,) + w.shape[-2:]).astype(np.float64)
    out = np.empty_like(x, dtype=np.float32)
    total = HEADER_BITS
    for i, sl in enumerate(x):
        u, s, vt = np.linalg.svd(sl, full_matrices=False)
        r = min(rank, len(s))
        a = u[:, :r] * np.sqrt(s[:r])
        b = np.sqrt(s[:r])[:, None] * vt[:r]
        qa, ba = quantise(a, bits)
        qb, bb = quantise(b, bits)
        out[i] = qa @ qb
        total += ba + bb
    return out.reshape(w.shape), float(total)


@dataclass(frozen=True)
class MatrixCode:
    """How one parameter is described: ``bits`` per entry (32 = raw), ``rank`` (None = full)."""

    name: str
    shape: tuple[int, ...]
    bits: int
    rank: int | None
    length: float  # bits of its description

    def to_dict(self) -> dict:
        """Plain JSON data."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "bits": self.bits,
            "rank": self.rank,
            "length": self.length,
        }


@dataclass(frozen=True)
class WeightsDescription:
    """The description found: per matrix its code, total ``bits``, the described model's exact
    correct ``count`` beside the model's ``target`` (|count - target| <= ``tol``), the number of
    exact evaluations the search ran and its wall time."""

    codes: tuple[MatrixCode, ...]
    bits: float
    count: int
    target: int
    tol: int
    evaluations: int
    seconds: float
    raw_bits: float = field(default=0.0)

    @property
    def residual_bits(self) -> float:
        """S(Y | description) = log2(2·tol + 1)."""
        return math.log2(2 * self.tol + 1)

    def to_dict(self) -> dict:
        """Plain JSON data."""
        return {
            "codes": [c.to_dict() for c in self.codes],
            "bits": self.bits,
            "raw_bits": self.raw_bits,
            "count": self.count,
            "target": self.target,
            "tol": self.tol,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }


def _params(model: MaxKTransformer) -> dict[str, np.ndarray]:
    return {name: p.detach().cpu().numpy() for name, p in model.named_parameters()}


def described_model(
    model: MaxKTransformer, settings: dict[str, tuple[int, int | None]]
) -> tuple[MaxKTransformer, float]:
    """(the model the description ``settings`` (name -> (bits, rank)) decodes to, its bits).
    Parameters not named are kept raw; zero biases cost nothing. Cost O(parameters·d)."""
    out = copy.deepcopy(model)
    total = 0.0
    with torch.no_grad():
        for name, p in out.named_parameters():
            w = p.detach().cpu().numpy()
            if name in BIAS_NAMES and not w.any():
                total += 1  # the flag "zero"
                continue
            bits, rank = settings.get(name, (RAW, None))
            dec, length = encode(w, bits, rank)
            total += length
            p.copy_(torch.from_numpy(dec.astype(np.float32)))
    return out, total


def count_tolerance(N: int, correct: int) -> int:
    """One binomial standard deviation of the correct count, at least 1."""
    a = correct / N
    return max(1, math.ceil(math.sqrt(N * a * (1 - a))))


def describe_weights(
    model: MaxKTransformer,
    dist: Distribution,
    *,
    target: int | None = None,
    tol: int | None = None,
    evaluations: int = 12,
) -> WeightsDescription:
    """Search for a short description of ``model``'s weights whose exact correct count on ``dist``
    is within ``tol`` of ``target`` (default: the model's own count and one binomial standard
    deviation), with at most ``evaluations`` exact evaluations (see the module docstring). Cost:
    ``evaluations`` exact evaluations (~2 s each at n = 64, k = 4)."""
    t0 = time.perf_counter()
    N = dist.n_sequences(model.cfg.n, model.cfg.k)
    if target is None:
        target = evaluate(model, dist).correct
        assert target is not None
    tol = count_tolerance(N, target) if tol is None else tol
    names = [name for name, p in model.named_parameters() if name not in BIAS_NAMES or p.detach().any()]
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    used = [0]
    cache: dict = {}
    screen = _Screen(model, dist, tol)

    def try_(settings: dict) -> tuple[bool, int | None, float]:
        key = tuple(sorted(settings.items()))
        if key not in cache:
            m, bits = described_model(model, settings)
            if not screen.plausible(m):  # clearly outside the window on a shared sample
                cache[key] = (False, None, bits)
            else:
                used[0] += 1
                c = evaluate(m, dist).correct
                assert c is not None
                cache[key] = (abs(c - target) <= tol, c, bits)
        return cache[key]

    raw: dict[str, tuple[int, int | None]] = {n_: (RAW, None) for n_ in names}
    best: dict = raw
    best_count, best_bits = target, described_model(model, raw)[1]
    raw_bits = best_bits

    def accept(settings: dict) -> bool:
        nonlocal best, best_count, best_bits
        if used[0] >= evaluations:
            return False
        ok, c, bits = try_(settings)
        if ok and bits < best_bits:
            assert c is not None
            best, best_count, best_bits = settings, c, bits
        return ok

    lo, hi = MIN_BITS, MAX_BITS  # one shared width: the smallest that holds, by bisection
    if accept({n_: (hi, None) for n_ in names}):
        while lo < hi and used[0] < evaluations:
            mid = (lo + hi) // 2
            if accept({n_: (mid, None) for n_ in names}):
                hi = mid
            else:
                lo = mid + 1
        order = sorted(names, key=lambda n_: -math.prod(shapes[n_]))
        open_bits, open_rank = set(order), set(order)
        while (open_bits or open_rank) and used[0] < evaluations:  # round robin over the matrices
            for name in order:
                if name in open_bits and best[name][0] > MIN_BITS:
                    if not accept({**best, name: (best[name][0] - 1, best[name][1])}):
                        open_bits.discard(name)
                else:
                    open_bits.discard(name)
                if name in open_rank:
                    full = min(shapes[name][-2:])
                    r = (best[name][1] or full) // 2
                    if r < 1 or not accept({**best, name: (best[name][0], r)}):
                        open_rank.discard(name)
    codes = []
    for name, p in model.named_parameters():
        w = p.detach().cpu().numpy()
        if name in BIAS_NAMES and not w.any():
            codes.append(MatrixCode(name, tuple(w.shape), 0, None, 1.0))
            continue
        bits, rank = best.get(name, (RAW, None))
        codes.append(MatrixCode(name, tuple(w.shape), bits, rank, encode(w, bits, rank)[1]))
    return WeightsDescription(
        tuple(codes), best_bits, best_count, target, tol, used[0], time.perf_counter() - t0, raw_bits
    )


class _Screen:
    """A cheap first test of a candidate: on ``SCREEN_SAMPLES`` inputs drawn once from the
    distribution, the change in the number of correct inputs, scaled to N. A candidate whose
    scaled change exceeds tol by more than 4 standard errors (of the number of inputs on which
    the two models disagree) is rejected without an exact evaluation; every accepted candidate is
    still evaluated exactly."""

    def __init__(self, model: MaxKTransformer, dist: Distribution, tol: int) -> None:
        n, k = model.cfg.n, model.cfg.k
        self.tokens = dist.sample(n, k, SCREEN_SAMPLES, np.random.default_rng(12345))
        self.scale = dist.n_sequences(n, k) / SCREEN_SAMPLES
        self.base = per_input_metrics(circuit_tables(model), self.tokens)[0]
        self.tol = tol

    def plausible(self, candidate: MaxKTransformer) -> bool:
        correct = per_input_metrics(circuit_tables(candidate), self.tokens)[0]
        change = float(correct.sum()) - float(self.base.sum())
        se = math.sqrt(float((correct != self.base).sum()) + 1.0)
        return (abs(change) - 4.0 * se) * self.scale <= self.tol


def settings_of(desc: WeightsDescription) -> dict[str, tuple[int, int | None]]:
    """The (bits, rank) per parameter of a description, as ``described_model`` takes them."""
    return {c.name: (c.bits, c.rank) for c in desc.codes if c.bits}
