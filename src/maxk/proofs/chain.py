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

from ..circuits import CircuitTables
from ..config import ModelConfig
from ..errors import MaxkError
from ..flops import FlopCounter
from .enclose import ETA, Interval, IntervalTables, U, add, attn_scale_interval, down, gamma, point, up
from .lowrank import matmul_cs

__all__ = [
    "HeadTables",
    "as_interval_tables",
    "banded_qk",
    "chain_enclosure",
    "chain_interval_tables",
    "head_tables",
    "magnitude",
]


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


def _chain_enclosure(
    factors: list[np.ndarray], rel: list[float], counter: FlopCounter, mags: list[float] | None = None
) -> tuple[Interval, float]:
    """The enclosure and an upper bound on |lo| and |hi| of every entry (Π max|X̂_i|·Π p, the
    exact product's bound, plus the radius twice and a rounding). ``mags``: max|X̂_i| of each
    factor when the caller knows them (a factor shared by two chains is scanned once)."""
    acc = _evaluate(factors, _order(factors), 0, len(factors) - 1, counter)
    rad, scale = _chain_radius(factors, rel, counter, mags)
    if not (np.isfinite(rad) and np.all(np.isfinite(acc))):
        raise MaxkError("a product chain overflows float64: cannot enclose it")
    counter.add(2 * acc.size, "chain enclosure")
    bound = float(up(scale + 3.0 * rad, counter))
    return Interval(down(acc - rad, counter), up(acc + rad, counter)), bound


def magnitude(x: np.ndarray, counter: FlopCounter) -> float:
    """max|x| (0 for an empty array). Cost: 2 operations per entry."""
    counter.add(2 * x.size, "abs")
    return float(np.max(np.abs(x), initial=0.0))


def _chain_radius(
    factors: list[np.ndarray], rel: list[float], counter: FlopCounter, mags: list[float] | None = None
) -> tuple[float, float]:
    """(ρ, scale): one radius ρ with |Ĉ − X_1···X_j| <= ρ for every entry of the float product Ĉ
    of ``factors`` in any parenthesisation (module docstring), and scale = Π max|X̂_i|·Π p.
    Raises MaxkError when the chain is too long for the bound or it overflows. Cost O(j) after
    the magnitudes (2 operations per factor entry when not given)."""
    dims = [x.shape[1] for x in factors[:-1]]
    g = sum(rel) + sum(gamma(p) for p in dims)
    if not g < 0.01:
        raise MaxkError("the a-priori rounding bound needs a smaller product chain")
    big = 1.01 * g  # >= Π(1 + ε)Π(1 + γ) − 1 while g < 0.01
    # |X̂_1|···|X̂_j| <= Π max|X̂_i| · Π inner dimensions, entrywise
    if mags is None:
        mags = [magnitude(x, counter) for x in factors]
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
    if not np.isfinite(rad):
        raise MaxkError("a product chain overflows float64: cannot enclose it")
    return rad, scale


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


def head_tables(model, counter: FlopCounter | None = None, *, eqke_cut: float | None = None) -> HeadTables:
    """Every table of head 0 by ``chain_enclosure`` (module docstring); with ``eqke_cut``, EQKE
    by ``banded_qk`` (exact near and above the diagonal, a rank-one bound far below it).
    Cost: O(n²·d + n·d²) in the float products plus O(n²) for the enclosures."""
    c = counter if counter is not None else FlopCounter()
    with np.errstate(all="ignore"):  # an overflow is refused by chain_enclosure
        return _head_tables(model, c, eqke_cut)


def chain_interval_tables(model, counter: FlopCounter | None = None) -> IntervalTables:
    """The one-head model's circuit tables as ``IntervalTables`` from ``head_tables`` (full EQKE;
    one a-priori radius per product chain) instead of interval products: what the cubic proof
    reads, for about a third of ``enclosed_tables``' FLOPs (n = 64, k = 4: 1.3·10⁶ against
    4.2·10⁶). MaxkError for a model with several heads. Cost: ``head_tables``'."""
    if model.cfg.n_heads != 1:
        raise MaxkError(f"chain tables are one head's; this model has {model.cfg.n_heads}")
    return as_interval_tables(model.cfg, head_tables(model, counter))


def as_interval_tables(cfg: ModelConfig, t: HeadTables) -> IntervalTables:
    """One head's ``HeadTables`` (any EQKE bound) as the ``IntervalTables`` the cubic proof reads.
    Cost: none (views)."""
    lo = CircuitTables(cfg, t.eqke.lo[None], t.eqkp.lo[None], t.evou.lo[None], t.pvou.lo[None], t.eupu.lo)
    hi = CircuitTables(cfg, t.eqke.hi[None], t.eqkp.hi[None], t.evou.hi[None], t.pvou.hi[None], t.eupu.hi)
    return IntervalTables(cfg, lo, hi)


def _scan(x: np.ndarray, counter: FlopCounter) -> np.ndarray:
    """Upper bounds [r] on the Euclidean norms of the rows of the float matrix x [r, p]: the
    float sum of squares s (|fl(s) − s| <= γ_p·s + p·η), widened and square-rooted upward.
    Cost: 2 operations per entry, O(1) per row."""
    p = x.shape[1]
    ss = np.einsum("ij,ij->i", x, x)
    counter.add(2 * x.size, "norms")
    return up(np.sqrt(up(up(ss * (1.0 + gamma(p + 1)), counter) + (p + 1) * ETA, counter)), counter)


def banded_qk(
    factors: list[np.ndarray], rel: list[float], n: int, cut: float, counter: FlopCounter, mags: list[float]
) -> Interval:
    """Enclosure [n, n + k] of the chain query·wq·wkᵀ·keysᵀ (``factors``, errors ``rel``, as in
    ``chain_enclosure``; keys [n + k, d'] has the n token rows first) that computes the token
    entries exactly only where a proof needs them: from column t0(q) on in row q, where t0(q)
    <= q − 1 is where a rank-one bound of the row, far below the diagonal, falls ``cut`` below
    the row's lowest score at or above q (far tokens' weights are then e^−cut of a max token's
    or less, and their scores need not be tight); the positional columns always exactly.

    With Ŷ = fl(query·fl(wq·wkᵀ)) (|Ŷ − Y| <= ρ_Y entrywise, ``_chain_radius``) and float
    choices y = mean row of Ŷ, α_q = Ŷ[q]·y / y·y, κ = mean key row, Ẑ = fl(Ŷ − fl(α ⊗ y)),
    exactly Y[q]·K[t] = α_q (y·K[t]) + Ẑ[q]·κ + Ẑ[q]·(K[t] − κ) + (Y − α⊗y − Ẑ)[q]·K[t], so a
    far entry lies within fl(α_q ŝ_t) + ĉ_q ± (zn_q·kn_t + |α_q|·e_t + e_q + e₀): zn, kn the
    norms of Ẑ's rows and of K − κ (Cauchy–Schwarz), e_t, e_q the a-priori errors of the dot
    products ŝ_t = fl(y·K[t]), ĉ_q = fl(Ẑ[q]·κ), e₀ the scalar rest (ρ_Y·Σ|K[t]|, Ẑ's rounding,
    and the rounding of the centre), all rounded up. Any float choices are sound; t0 is the
    prover's choice, computed in float.

    Cost: the d×d and n×d products, the token entries from t0(q) on (n·(n − t0)·(2d − 1) in
    all, instead of n²·(2d − 1)), O(n·d) for the pieces and ~12 operations per far entry."""
    query, wq, wkT, keysT = factors
    rad, _ = _chain_radius(factors, rel, counter, mags)
    rad_y, _ = _chain_radius(factors[:3], rel[:3], counter, mags[:3])
    mq = wq @ wkT
    counter.matmul(wq.shape[0], wq.shape[1], wkT.shape[1], "matmul")
    Y = query @ mq  # [n, d']
    counter.matmul(query.shape[0], query.shape[1], mq.shape[1], "matmul")
    K = np.ascontiguousarray(keysT[:, :n].T)  # [n, d']: the token rows of keys
    dk = K.shape[1]
    # the float choices (any floats are sound), counted all the same
    y = Y.mean(axis=0)
    yy = float(y @ y)
    alpha = Y @ y / yy if yy > 0 and np.isfinite(yy) else np.zeros(n)
    kappa = K.mean(axis=0)
    counter.add(3 * Y.size + K.size, "band pieces")
    # the pieces: ŝ, Ẑ, ĉ and the norms
    s_hat = K @ y  # [n]
    ay = alpha[:, None] * y[None, :]
    Z = Y - ay
    c_hat = Z @ kappa  # [n]
    D = K - kappa[None, :]
    counter.add(2 * K.size + 2 * Z.size + 2 * Z.size + K.size, "band pieces")
    zn, kn = _scan(Z, counter), _scan(D, counter)
    g = gamma(dk)
    kap = float(_scan(kappa[None, :], counter)[0])
    knorm = up(up(kn * (1.0 + 4 * U), counter) + kap, counter)  # ||K[t]|| <= ||K[t] − κ|| + ||κ||
    e_t = up(up(g * float(_scan(y[None, :], counter)[0]), counter) * knorm + dk * ETA, counter)  # [n]: ŝ's error
    e_q = up(up(g * kap, counter) * zn + dk * ETA, counter)  # [n]: ĉ's error
    # ρ_Y·Σ_j|K[t, j]| and |Ŷ − α⊗y − Ẑ|·Σ|K[t, j]| (two roundings, each <= u·max(|αy|, |Ẑ|) + η;
    # |αy| <= max|α|·max|y|, |Ẑ| <= its row norm)
    kmax = mags[3]
    ymax = float(np.max(np.abs(y), initial=0.0))
    zmax = float(
        up(float(np.max(np.abs(alpha), initial=0.0)) * ymax * (1.0 + 4 * U) + float(zn.max(initial=0.0)), counter)
    )
    e0 = up(up(rad_y + up(2.02 * U * zmax, counter) + 2 * ETA, counter) * up(dk * kmax, counter), counter)
    # the centre's two roundings: |fl(α ŝ)| <= max|α|·max|ŝ|, |fl(fl(α ŝ) + ĉ)| <= that + max|ĉ|
    cen = up(float(np.max(np.abs(alpha), initial=0.0)) * float(np.max(np.abs(s_hat), initial=0.0)), counter)
    e0 = float(up(e0 + up(2.02 * U * up(2.0 * cen + float(np.max(np.abs(c_hat), initial=0.0)), counter), counter)))
    e0 = float(up(e0 + 4 * ETA, counter))
    counter.add(10 * n + 2 * dk, "band pieces")
    if not all(np.all(np.isfinite(x)) for x in (Y, zn, kn, e_t, e_q)) or not np.isfinite(e0):
        raise MaxkError("a product chain overflows float64: cannot enclose it")
    # the prover's choice of t0(q), in float: far entries' upper ends cut below the row's lowest
    # score at or above q (estimated from the same rank-one form)
    est = alpha[:, None] * s_hat[None, :] + c_hat[:, None]
    spread = zn[:, None] * kn[None, :]
    low = np.where(np.triu(np.ones((n, n), dtype=bool)), est - spread, np.inf).min(axis=1)  # [q]
    far = (est + spread <= (low - cut)[:, None]) & (np.arange(n)[None, :] < np.arange(n)[:, None])
    t0 = np.where(far.all(axis=1), n, np.argmin(far, axis=1))  # first column not far (a prefix)
    t0 = np.minimum(t0, np.maximum(np.arange(n) - 1, 0))
    lo = np.empty((n, keysT.shape[1]))
    hi = np.empty_like(lo)
    for q in range(n):  # the exact entries of row q: columns t0(q).. and the positional ones
        cols = np.r_[t0[q] : keysT.shape[1]]
        row = Y[q] @ keysT[:, cols]
        counter.matmul(1, dk, cols.size, "matmul")
        lo[q, cols], hi[q, cols] = row - rad, row + rad
    qi, ti = np.nonzero(np.arange(n)[None, :] < t0[:, None])
    centre = alpha[qi] * s_hat[ti] + c_hat[qi]
    err = (zn[qi] * kn[ti] + np.abs(alpha[qi]) * e_t[ti] + e_q[qi] + e0) * (1.0 + 2.0**-40)
    lo[qi, ti], hi[qi, ti] = centre - err, centre + err
    counter.add(2 * lo.size + 10 * qi.size, "chain enclosure")
    return Interval(down(lo, counter), up(hi, counter))


def _head_tables(model, c: FlopCounter, eqke_cut: float | None = None) -> HeadTables:
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
    vals, wv = _biased([(E, 1.0), (P, 0.0)], WV, bV, c)  # [n + k, d (+ 1)]
    # the magnitudes of the factors two chains share, scanned once (a bias column holds 0 and 1)
    m_e, m_r, m_u = max(magnitude(E, c), magnitude(P, c)), magnitude(R, c), magnitude(WU, c)
    qk_factors = [query, wq, wk.T, keys.T]
    qk_mags = [max(m_r, float(query.shape[1] > R.shape[1])), magnitude(wq, c), magnitude(wk, c)]
    qk_mags.append(max(m_e, float(keys.shape[1] > E.shape[1])))
    if eqke_cut is None:
        qk, _ = _chain_enclosure(qk_factors, [U, eps_s, 0.0, 0.0], c, qk_mags)
    else:
        qk = banded_qk(qk_factors, [U, eps_s, 0.0, 0.0], n, eqke_cut, c, qk_mags)
    ov_mags = [max(m_e, float(vals.shape[1] > E.shape[1])), magnitude(wv, c), magnitude(WO, c), m_u]
    ov, ov_bound = _chain_enclosure([vals, wv, WO, WU], [0.0, 0.0, 0.0, 0.0], c, ov_mags)
    direct, d_bound = _chain_enclosure([R, WU], [U, 0.0], c, [m_r, m_u])
    c.add(bO.size + bU.size, "compare")
    if np.any(bO) or np.any(bU):  # the direct path's bias row b_O W_U + b_U [1, n]
        row = add(matmul_cs(point(bO[None]), point(WU), c), point(bU[None]), c)
        eupu = add(direct, row, c)
        row_bound = float(np.max(np.maximum(np.abs(row.lo), np.abs(row.hi)), initial=0.0))
        c.add(3 * row.lo.size, "abs")
    else:  # exactly zero (the paper's models): nothing to add
        eupu, row_bound = direct, 0.0
    bound = float(up(up(2.0 * ov_bound + d_bound, c) + 2.0 * row_bound, c))
    return HeadTables(qk[:, :n], qk[:, n:], ov[:n], ov[n:], eupu, bound)
