"""The Wick terms of a few inputs, split by what they come from.

In a row, the wires are the fixed tokens' part plus one term per random position i, each a
function of that position's token only: y(x) − μ_s = Σ_i δ_i(x_i), δ_i(t) = y_i(t) − E_S[y_i]
(per head δD_hi = α_hi (β_h(t) − E_S β_h), δN_hi = α_hi (β_h(t)(EVOU_h[t] + PVOU_h[i]) − E_S[β_h EVOU_h]
− E_S[β_h] PVOU_h[i])). So

* the first-order term ∇g·δ = Σ_i Σ_h [p_m (e_m − p)·δN_hi − p_m ((e_m − p)·r_h) δD_hi] / μ_Dh
  splits into "pos i token t → N_h" and "pos i token t → D_h";
* the second-order term ½(δᵀHδ − tr(HΣ)) = Σ_i ½(B_ii − E B_ii) + Σ_{i<j} (B_ij − E B_ij) splits over
  pairs of positions ("pos i × pos j"), B_ij = δ_iᵀ H δ_j, with E B_ii = E_S[B(δ_i(T), δ_i(T))] and
  E B_ij = −γ E_S[B(δ_i(T), δ_j(T))] (γ the pair covariance factor: 0 for independent draws).

The pair expectations sum to tr(H_s Σ_s) exactly (a check on the explanation's trace). Inputs
that no row covers have no terms (their value is a stratum's or a max's estimate). Everything here
is recomputed directly from the row's population, token by token: O(|S|·k²·h·n) per input."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from ..circuits import CircuitTables
from ..distributions import Distribution
from ..estimators.cumulant.populations import _population_mask
from .expansion import RowPieces
from .rows import RowIndex, Rows, assign


class Explained(Protocol):
    """What the split reads of an explanation (``WickExplanation`` has these)."""

    @property
    def tables(self) -> CircuitTables: ...

    @property
    def dist(self) -> Distribution: ...

    @property
    def rows(self) -> Rows: ...

    @property
    def pieces(self) -> RowPieces: ...


def _bilinear(d1, d2, ctx) -> np.ndarray:
    """B(δ, δ') = δᵀHδ' for batches of wire deviations d = (dD [.., H], dN [.., H, n])."""
    p, pm, m, r, muD = ctx["p"], ctx["pm"], ctx["m"], ctx["r"], ctx["muD"]
    out = []
    for dD, dN in (d1, d2):
        uh = (dN - r * dD[..., None]) / muD[:, None]  # [.., H, n]
        zh = uh[..., m] - uh @ p  # (e_m − p)·u_h  [.., H]
        dh = dD / muD
        u = uh.sum(-2)
        out.append((u, zh, dh))
    (u1, z1, h1), (u2, z2, h2) = out
    a1, a2 = z1.sum(-1), z2.sum(-1)
    b1, b2 = u1 @ p, u2 @ p
    return pm * (a1 * a2 - (u1 * u2) @ p + b1 * b2 - (h1 * z2 + h2 * z1).sum(-1))


def _context(ex: Explained, x: np.ndarray, s: int) -> dict:
    """Row s's population, positions and moments (recomputed from the tables) for input x [k]."""
    tab, rows = ex.tables, ex.rows
    st = rows.st
    n, k = tab.n, tab.k
    q, m = int(x[k - 1]), int(st["m"][s])
    rand = np.nonzero(st["rest"][s] > 0)[0]
    fixed = np.setdiff1d(np.arange(k), rand)
    pop = np.nonzero(_population_mask(n, np.array([m]), st["removed"][s : s + 1])[0])[0]
    alpha = np.exp(tab.eqkp[:, q] - tab.eqkp[:, q].max(axis=1, keepdims=True))  # [H, k]
    beta = np.exp(tab.eqke[:, q] - tab.eqke[:, q].max(axis=1, keepdims=True))  # [H, n]
    size = max(len(pop), 1)  # (an empty population has no random position to draw for)
    Eb = beta[:, pop].sum(1) / size  # [H]
    Ebe = np.einsum("ht,hto->ho", beta[:, pop], tab.evou[:, pop]) / size  # [H, n]
    muD = (alpha[:, fixed] * beta[:, x[fixed]]).sum(1) + alpha[:, rand].sum(1) * Eb
    muN = np.einsum("hi,hi,hio->ho", alpha[:, fixed], beta[:, x[fixed]], tab.evou[:, x[fixed]] + tab.pvou[:, fixed])
    muN += alpha[:, rand].sum(1)[:, None] * Ebe + Eb[:, None] * np.einsum(
        "hi,hio->ho", alpha[:, rand], tab.pvou[:, rand]
    )
    r = muN / muD[:, None]
    L0 = tab.eupu[q] + r.sum(0)
    p = np.exp(L0 - L0.max())
    p /= p.sum()
    gamma = float(ex.dist.pair_covariance_factor(np.array([float(len(pop))]))[0])
    return dict(
        p=p,
        pm=p[m],
        m=m,
        r=r,
        muD=muD,
        rand=rand,
        pop=pop,
        alpha=alpha,
        beta=beta,
        Eb=Eb,
        Ebe=Ebe,
        gamma=gamma,
        tab=tab,
    )


def _delta(ctx: dict, i: int, t: np.ndarray):
    """δ_i(t) for tokens t [T] at position i: (dD [T, H], dN [T, H, n])."""
    tab, al, be = ctx["tab"], ctx["alpha"][:, i], ctx["beta"][:, t].T  # [H], [T, H]
    dD = al * (be - ctx["Eb"])
    vals = tab.evou[:, t].transpose(1, 0, 2) + tab.pvou[:, i][None]  # [T, H, n]
    dN = al[:, None] * (be[..., None] * vals - ctx["Ebe"] - ctx["Eb"][:, None] * tab.pvou[:, i])
    return dD, dN


def split_terms(ex: Explained, inputs: np.ndarray) -> list[list[tuple[str, float]]]:
    """For each input [N, k]: [(name, value), ...], largest |value| first — the first-order terms
    ("pos i token t → N_h", "pos i token t → D_h"; they sum to ``first``) and, in rows expanded to
    second order, the second-order terms ("pos i × pos j", i ≤ j; they sum to ``second``).
    Empty for inputs that no row covers. Cost O(|S|·k²·h·n) per input."""
    x = np.asarray(inputs, dtype=np.int64)
    row, _ = assign(RowIndex.of(ex.rows), torch.from_numpy(x))
    out = []
    for xi, s in zip(x, row.numpy(), strict=True):
        if s < 0:
            out.append([])
            continue
        ctx = _context(ex, xi, int(s))
        p, pm, m, r, muD = ctx["p"], ctx["pm"], ctx["m"], ctx["r"], ctx["muD"]
        terms = []
        deltas = {}
        for i in ctx["rand"]:
            t = int(xi[i])
            dD, dN = _delta(ctx, int(i), np.array([t]))
            deltas[int(i)] = (dD[0], dN[0])
            for h in range(len(muD)):
                gN = pm * (dN[0, h, m] - dN[0, h] @ p) / muD[h]
                gD = -pm * (r[h, m] - r[h] @ p) * dD[0, h] / muD[h]
                terms.append((f"pos {i} token {t} → N_{h}", float(gN)))
                terms.append((f"pos {i} token {t} → D_{h}", float(gD)))
        if ex.pieces.order[s] == 2:
            pos = [int(i) for i in ctx["rand"]]
            pop = ctx["pop"]
            full = {i: _delta(ctx, i, pop) for i in pos}
            for a_, i in enumerate(pos):
                for j in pos[a_:]:
                    val = float(_bilinear(deltas[i], deltas[j], ctx))
                    mean = float(_bilinear(full[i], full[j], ctx).mean())
                    if i == j:
                        terms.append((f"pos {i} × pos {j}", 0.5 * (val - mean)))
                    else:
                        terms.append((f"pos {i} × pos {j}", val + ctx["gamma"] * mean))
        terms.sort(key=lambda nv: -abs(nv[1]))
        out.append(terms)
    return out


def pair_expectations(ex: Explained, x: np.ndarray, s: int) -> float:
    """Σ_{i,j} E[δ_iᵀ H δ_j] over the random positions of row s (input x [k] of that row): equal
    to tr(H_s Σ_s) (for tests). Cost O(|S|·k²·h·n)."""
    ctx = _context(ex, np.asarray(x, dtype=np.int64), s)
    pos = [int(i) for i in ctx["rand"]]
    full = {i: _delta(ctx, i, ctx["pop"]) for i in pos}
    tot = 0.0
    for i in pos:
        for j in pos:
            e = float(_bilinear(full[i], full[j], ctx).mean())
            tot += e if i == j else -ctx["gamma"] * e
    return tot
