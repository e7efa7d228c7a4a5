"""The circuit tables of one head as float products of the weights, each enclosed by an a-priori
rounding bound instead of interval products: one float matmul chain per table, a scalar radius.

For real matrices X_1..X_j given by floats X̂_i with |X_i − X̂_i| <= ε_i |X̂_i| entrywise (ε = 0 for
weights read exactly from float32), a float product of X̂_1..X̂_j in any parenthesisation, each
matmul of inner dimension p accurate to |fl(AB) − AB| <= γ_p |A||B| + p·η, satisfies

    |Ĉ − X_1···X_j| <= Γ · |X̂_1|···|X̂_j| + τ,   Γ >= Π(1 + ε_i) Π(1 + γ_p) − 1,

by induction over the products (an operand off by a relative α in abs-product terms leaves the
product off by (1 + α)(1 + β)(1 + γ) − 1). Every entry of |X̂_1|···|X̂_j| is at most
Π max|X̂_i| · Π p over the inner dimensions, so one scalar radius ρ = Γ · that + τ serves the
whole table (looser than row and column norms by about sqrt(p) per product, on a radius of
~1e-13 relative, at a sixth of their cost); τ bounds the underflow terms p·η carried through
the later factors (each row or column abs-sum at most its length times the largest entry). Γ is
taken as 1.01·(Σε + Σγ), valid while that sum is below 0.01 (``gamma`` refuses larger inner
dimensions).

Biases enter by augmentation (a column of ones against a bias row; none for a bias that is
exactly zero, as in the paper's models), so each table is one chain:

    EQKE | EQKP = [R, 1] · [s W_Q; s b_Q] · [W_K; b_K]ᵀ · [[E, 0]; [P, 1]]ᵀ      [n, n + k]
    EVOU ; PVOU = [[E, 1]; [P, 0]] · [W_V; b_V] · W_O · W_U                      [n + k, n]
    EUPU        = R · W_U + (b_O W_U + b_U)                                        [n, n]

with R = fl(E + P[last]) (off by at most u relatively) and s the attention scale (its float
enclosure and the rounding of s·W_Q counted in ε). Each chain is evaluated in its cheapest order
(only the last product is n-sized). Against ``maxk.proofs.lowrank.matmul_cs`` on interval
pieces (three n×n enclosures, each with a rank-two radius) this saves the interval bookkeeping:
the radius is ~1e-12 relative to the tables' scale instead of ~1e-14, which no decision feels.

Cost: the float products (O(n²·d) for the three n-sized ones, O(n·d²) for the rest), O((n + d)·d)
for the magnitudes, and 4 operations per table entry for the enclosure (lo = down(Ĉ − ρ), hi = up(Ĉ + ρ)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MaxkError
from ..flops import FlopCounter
from .enclose import ETA, Interval, U, add, attn_scale_interval, down, gamma, point, up
from .lowrank import matmul_cs

__all__ = ["HeadTables", "chain_enclosure", "head_tables"]


def _order(factors: list[np.ndarray]) -> dict[tuple[int, int], int]:
    """The cheapest parenthesisation of the chain (matrix-chain dynamic programme over the j ≤ 5
    factors; O(j³) integer work): split[(a, b)] = where the product of factors a..b splits."""
    dims = [factors[0].shape[0]] + [x.shape[1] for x in factors]
    cost: dict[tuple[int, int], int] = {(a, a): 0 for a in range(len(factors))}
    split: dict[tuple[int, int], int] = {}
    for span in range(1, len(factors)):
        for a in range(len(factors) - span):
            b = a + span
            opts = [
                (cost[a, c] + cost[c + 1, b] + dims[a] * dims[b + 1] * (2 * dims[c + 1] - 1), c) for c in range(a, b)
            ]
            cost[a, b], split[a, b] = min(opts)
    return split


def _evaluate(factors, split, a: int, b: int, counter: FlopCounter) -> np.ndarray:
    if a == b:
        return factors[a]
    c = split[a, b]
    left, right = _evaluate(factors, split, a, c, counter), _evaluate(factors, split, c + 1, b, counter)
    counter.matmul(left.shape[0], left.shape[1], right.shape[1], "matmul")
    return left @ right


def chain_enclosure(factors: list[np.ndarray], rel: list[float], counter: FlopCounter) -> Interval:
    """Enclosure of the exact product X_1···X_j of the real matrices the floats ``factors`` stand
    for, |X_i − factors[i]| <= rel[i]·|factors[i]| entrywise (module docstring): the float product
    evaluated in its cheapest order, widened by one scalar radius. Cost: the float matmuls, 2
    operations per factor entry, 4 per entry of the result."""
    if len(factors) < 2 or len(rel) != len(factors):
        raise MaxkError("a product chain needs at least two factors and one error per factor")
    with np.errstate(all="ignore"):  # an overflow is refused below
        return _chain_enclosure(factors, rel, counter)[0]


def _chain_enclosure(factors: list[np.ndarray], rel: list[float], counter: FlopCounter) -> tuple[Interval, float]:
    """The enclosure and an upper bound on |lo| and |hi| of every entry (Π max|X̂_i|·Π p, the
    exact product's bound, plus the radius twice and a rounding)."""
    dims = [x.shape[1] for x in factors[:-1]]
    acc = _evaluate(factors, _order(factors), 0, len(factors) - 1, counter)
    g = sum(rel) + sum(gamma(p) for p in dims)
    if not g < 0.01:
        raise MaxkError("the a-priori rounding bound needs a smaller product chain")
    big = 1.01 * g  # >= Π(1 + ε)Π(1 + γ) − 1 while g < 0.01
    # |X̂_1|···|X̂_j| <= Π max|X̂_i| · Π inner dimensions, entrywise
    mags = [float(np.max(np.abs(x), initial=0.0)) for x in factors]
    counter.add(2 * sum(x.size for x in factors), "abs")
    scale = 1.0
    for a in mags:
        scale = float(up(scale * a, counter))
    for p in dims:
        scale = float(up(scale * p, counter))
    rho = float(up(up(big * scale, counter) * (1.0 + 4 * U), counter))
    # underflow: p·η per entry of each product, carried through the factors multiplied on after
    # it (each row or column abs-sum <= its length · the largest entry)
    carry = [float(up(1.0 + up(max(x.shape) * a, counter), counter)) for x, a in zip(factors, mags, strict=True)]
    tau = 2.0 * sum(dims) * ETA
    for c in carry:
        tau = float(up(tau * c, counter))
    rad = float(up(rho + tau, counter))
    if not (np.isfinite(rad) and np.all(np.isfinite(acc))):
        raise MaxkError("a product chain overflows float64: cannot enclose it")
    counter.add(2 * acc.size, "chain enclosure")
    bound = float(up(scale + 3.0 * rad, counter))
    return Interval(down(acc - rad, counter), up(acc + rad, counter)), bound


@dataclass(frozen=True)
class HeadTables:
    """Enclosures of one head's tables (head 0): eqke [n, n], eqkp [n, k], evou [n, n],
    pvou [k, n], eupu [n, n]."""

    eqke: Interval
    eqkp: Interval
    evou: Interval
    pvou: Interval
    eupu: Interval
    value_bound: float  # >= max|EVOU| + max|PVOU| + max|EUPU| over the enclosures' endpoints


def _biased(blocks: list[tuple[np.ndarray, float]], W: np.ndarray, bias: np.ndarray, counter: FlopCounter):
    """Rows X_j · W + c_j · bias stacked, as one product L · M: L = [X_j, c_j] over the blocks
    and M = [W; bias] — or, when the bias is exactly zero, L = the stacked X_j and M = W (no
    column spent on it). Cost: one comparison per bias entry."""
    counter.add(bias.size, "compare")
    rows = np.concatenate([x for x, _ in blocks])
    if not np.any(bias):
        return rows, W
    col = np.concatenate([np.full((x.shape[0], 1), v) for x, v in blocks])
    return np.concatenate([rows, col], axis=1), np.concatenate([W, bias[None]], axis=0)


def _f64(model) -> dict[str, np.ndarray]:
    return {name: p.detach().to("cpu").double().numpy() for name, p in model.named_parameters()}


def head_tables(model, counter: FlopCounter | None = None) -> HeadTables:
    """Every table of head 0 by ``chain_enclosure`` (module docstring). Cost: O(n²·d + n·d²)
    in the float products plus O(n²) for the enclosures."""
    c = counter if counter is not None else FlopCounter()
    with np.errstate(all="ignore"):  # an overflow is refused by chain_enclosure
        return _head_tables(model, c)


def _head_tables(model, c: FlopCounter) -> HeadTables:
    w = _f64(model)
    for name, x in w.items():
        if not np.all(np.isfinite(x)):
            raise MaxkError(f"weight {name} has NaN or Inf entries: cannot enclose the circuit tables")
    E, P = w["embed.W_E"], w["pos_embed.W_pos"]
    WQ, WK, WV, WO = (w[f"blocks.0.attn.W_{x}"][0] for x in "QKVO")
    bQ, bK, bV = (w[f"blocks.0.attn.b_{x}"][0] for x in "QKV")
    bO, WU, bU = w["blocks.0.attn.b_O"], w["unembed.W_U"], w["unembed.b_U"]
    n, k = E.shape[0], P.shape[0]
    R = E + P[k - 1]  # |E + P[last] − R| <= u |R|
    c.add(R.size, "residual")
    s = attn_scale_interval(model.cfg)
    s_hi = float(s.hi)
    # |s·w − fl(s_hi·w)| <= ((s_hi − s_lo)/s_lo·(1 + u) + u)·|fl(s_hi·w)|
    eps_s = float(up(up((s_hi - float(s.lo)) / float(s.lo), c) * (1.0 + 2 * U) + U, c))
    query, wq = _biased([(R, 1.0)], WQ, bQ, c)  # [n, d (+ 1)], [d (+ 1), dh]
    wq = wq * s_hi
    c.add(wq.size, "scale")
    keys, wk = _biased([(E, 0.0), (P, 1.0)], WK, bK, c)  # [n + k, d (+ 1)]
    qk, _ = _chain_enclosure([query, wq, wk.T, keys.T], [U, eps_s, 0.0, 0.0], c)
    vals, wv = _biased([(E, 1.0), (P, 0.0)], WV, bV, c)  # [n + k, d (+ 1)]
    ov, ov_bound = _chain_enclosure([vals, wv, WO, WU], [0.0, 0.0, 0.0, 0.0], c)
    direct, d_bound = _chain_enclosure([R, WU], [U, 0.0], c)
    row = add(matmul_cs(point(bO[None]), point(WU), c), point(bU[None]), c)  # [1, n]
    eupu = add(direct, row, c)
    row_bound = float(np.max(np.maximum(np.abs(row.lo), np.abs(row.hi)), initial=0.0))
    c.add(3 * row.lo.size, "abs")
    bound = float(up(up(2.0 * ov_bound + d_bound, c) + 2.0 * row_bound, c))
    return HeadTables(qk[:, :n], qk[:, n:], ov[:n], ov[n:], eupu, bound)
