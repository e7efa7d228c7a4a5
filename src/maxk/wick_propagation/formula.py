"""Per input: the Wick value from the input's wires and its row's expansion pieces (torch).

Given, per head h, the input's attention output A_h = N_h/D_h [n] (head 0 plus EUPU[q], so the
logits are L = Σ_h A_h) and log D_h in raw-score units, and its row s: with ρ_h = D_h/μ_Dh and
v_h = A_h − R_sh, the linearised logits are u_h = ρ_h v_h (since N_h − r_h D_h = D_h (A_h − r_h)),
d_h = ρ_h − 1, and (``expansion``)

    a = Σ_h ρ_h (v_hm − p·v_h),  b = Σ_h ρ_h p·v_h,  c = Σ_o p_o u_o²,  dz = Σ_h d_h ρ_h (v_hm − p·v_h)
    first  = p_m a
    second = ½ (p_m (a² − c + b² − 2 dz) − tr(H_s Σ_s))          (0 in first-order rows)
    W  = est_s + first + second,   W1 = g(μ_s) + first.

The model's own probability on the max and its correctness come from the same logits:
soft = 1/Σ_o e^(L_o − L_m) and correct = L_m > max_{o≠m} L_o.
Cost per input: about (6h + 6)·n operations and n exponentials, after the wires."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..circuits import CircuitTables
from .expansion import RowPieces


@dataclass(frozen=True)
class TorchPieces:
    """The row pieces as torch tensors (float64), laid out for one gather per input and table:
    PR [S, h + 1, n] holds p and R_0, .., R_{h−1} of every row side by side, rows sorted by query
    (row s at slot[s]: the rows of one query are read together, from cache); scal [5 + 2h, S] its
    scalars (rows ``PM, EST, EST1, TRACE, SECOND``, then log μ_Dh from ``ELL`` and R_h[m] from
    ``ELL + h``); plus the fallback estimates of inputs without a row: per base stratum (the
    parent, [B]) and per max ([n])."""

    PR: torch.Tensor
    slot: torch.Tensor
    scal: torch.Tensor
    parent_est: torch.Tensor
    parent_est1: torch.Tensor
    max_est: torch.Tensor
    max_est1: torch.Tensor

    @staticmethod
    def of(
        pc: RowPieces,
        m: np.ndarray,
        q: np.ndarray,
        parent: tuple[np.ndarray, np.ndarray],
        per_max: tuple[np.ndarray, np.ndarray],
    ) -> TorchPieces:
        """From the numpy pieces, the rows' maxima m and queries q [S] and the fallbacks (estimate,
        first-order estimate) per parent and per max."""
        t = torch.as_tensor
        S = len(m)
        perm = np.argsort(q, kind="stable")
        slot = np.empty(S, dtype=np.int64)
        slot[perm] = np.arange(S)
        Rm = pc.R[:, np.arange(S), m]  # [H, S]
        cols = [pc.pm, pc.est, pc.est1, pc.trace, (pc.order == 2).astype(np.float64), *pc.ell, *Rm]
        return TorchPieces(
            PR=torch.cat([t(pc.p[perm])[:, None], t(pc.R[:, perm]).permute(1, 0, 2)], 1).contiguous(),
            slot=t(slot),
            scal=t(np.stack(cols, 0)).contiguous(),
            parent_est=t(parent[0]),
            parent_est1=t(parent[1]),
            max_est=t(per_max[0]),
            max_est1=t(per_max[1]),
        )


PM, EST, EST1, TRACE, SECOND, ELL = range(6)  # rows of TorchPieces.scal (ELL + h: head h)


@dataclass(frozen=True)
class TorchTables:
    """The circuit tables as float64 torch tensors (eqke [h, n, n], eqkp [h, n, k], evou [h, n, n],
    pvou [h, k, n], eupu [n, n])."""

    eqke: torch.Tensor
    eqkp: torch.Tensor
    evou: torch.Tensor
    pvou: torch.Tensor
    eupu: torch.Tensor

    @staticmethod
    def of(tab: CircuitTables) -> TorchTables:
        """The tables of ``tab`` as torch tensors (shared memory, no copy)."""
        t = torch.as_tensor
        return TorchTables(t(tab.eqke), t(tab.eqkp), t(tab.evou), t(tab.pvou), t(tab.eupu))


def wires(tt: TorchTables, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The wires of inputs tokens [b, k] (int64): per head the attention output A [h, b, n]
    (head 0 plus EUPU[q]) and log D [h, b] in raw-score units (log Σ_i e^score_i).
    Cost O(b·h·k·n), a forward pass through the tables."""
    q = tokens[:, -1]
    H = tt.eqke.shape[0]
    A = torch.empty((H, tokens.shape[0], tt.eupu.shape[1]), dtype=torch.float64)
    logD = torch.empty((H, tokens.shape[0]), dtype=torch.float64)
    for h in range(H):
        s = tt.eqke[h][q[:, None], tokens] + tt.eqkp[h][q]  # [b, k]
        logD[h] = torch.logsumexp(s, 1)
        att = torch.exp(s - logD[h][:, None])
        A[h] = F.embedding_bag(tokens, tt.evou[h], per_sample_weights=att, mode="sum")
        A[h].addmm_(att, tt.pvou[h])
    A[0] += tt.eupu[q]
    return A, logD


class Reductions:
    """Per-input reductions of the wires that the Wick values need, for a block of b inputs:
    pv [h, b] = p·v_h (v_h = A_h − R_sh), Am [h, b] = A_hm, logD [h, b], c [b] (Σ_o p_o u_o²; with
    one head Σ_o p_o v_o², to be scaled by ρ²), S [b] = Σ_o e^(L_o − L_m), correct [b]."""

    def __init__(self, H: int, b: int):
        f = torch.float64
        self.pv, self.Am, self.logD = (torch.empty((H, b), dtype=f) for _ in range(3))
        self.c, self.S = torch.empty(b, dtype=f), torch.empty(b, dtype=f)
        self.correct = torch.empty(b, dtype=torch.bool)


class Buffers:
    """Scratch space for ``reduce_wires`` on up to b inputs of n outputs (h heads)."""

    def __init__(self, H: int, b: int, n: int):
        self.G = torch.empty((b, H + 1, n), dtype=torch.float64)  # gathered p and R_h rows
        self.u = torch.empty((b, n), dtype=torch.float64) if H > 1 else None
        self.ones = torch.ones(n, dtype=torch.float64)  # row sums as matrix-vector products


def reduce_wires(
    tp: TorchPieces,
    A: torch.Tensor,
    rc: torch.Tensor,
    Lm: torch.Tensor | None,
    rho: torch.Tensor | None,
    red: Reductions,
    s0: int,
    buf: Buffers,
) -> None:
    """Fill red.pv, red.c and red.S at [s0, s0 + b) from the wires A [h, b, n] (overwritten), the
    rows' slots in ``tp.PR`` rc [b] (``tp.slot`` of rows ≥ 0), the logit of the max Lm [b, 1] and,
    with several heads, ρ_h [h, b]: with one head 6 passes over [b, n] (3 more a further head),
    one gather and three matrix-vector products (the row sums). ``Lm=None`` (the caller knows
    every logit lies within ±``UNSHIFTED_MAX``) leaves red.S = Σ_o e^(L_o) unshifted, one pass
    fewer, for the caller to scale by e^(−L_m). Cost O(b·h·n)."""
    H, b, n = A.shape
    sl = slice(s0, s0 + b)
    G = buf.G[:b]
    ones = buf.ones
    torch.index_select(tp.PR, 0, rc, out=G)  # [b, H + 1, n]: p, R_0, ..
    P = G[:, 0]
    if H == 1:
        L = A[0]
        v = torch.sub(L, G[:, 1], out=G[:, 1])
        torch.mv(P.mul_(v), ones, out=red.pv[0, sl])
        torch.mv(P.mul_(v), ones, out=red.c[sl])
    else:
        assert rho is not None and buf.u is not None
        u = buf.u[:b].zero_()
        for h in range(H):
            v = torch.sub(A[h], G[:, 1 + h], out=G[:, 1 + h])
            torch.linalg.vecdot(P, v, out=red.pv[h, sl])
            u.add_(v.mul_(rho[h, :, None]))
        torch.linalg.vecdot(P.mul_(u), u, out=red.c[sl])
        L = A[0]
        for h in range(1, H):
            L.add_(A[h])
    # the model's probability on the max is 1/S, S = Σ_o e^(L_o − L_m) (the max's own term is 1)
    if Lm is not None:
        L.sub_(Lm)
    torch.mv(L.exp_(), ones, out=red.S[sl])


UNSHIFTED_MAX = 340.0  # |logits| up to this: e^L, e^(−L_m) and n·e^680 (their largest product)
# stay finite in float64 for any n below 10^12, and Σ_o e^(L_o) ≥ e^(−340) stays normal


def fix_correct(red: Reductions, m: torch.Tensor, logits_of) -> None:
    """red.correct from red.S: S < 2 (every other term e^(L_o − L_m) below 1, up to a margin for
    rounding) says the max's logit is above every other; the rest are decided on their logits,
    ``logits_of(idx)`` -> [len(idx), n] (recomputed; rare for a good model). Cost O(b)."""
    torch.lt(red.S, 2.0 - 1e-9, out=red.correct)
    band = torch.nonzero(~red.correct).squeeze(1)
    if band.numel():
        L = logits_of(band)
        mb = m[band, None].long()
        Lm = L.gather(1, mb).squeeze(1)
        red.correct[band] = Lm > L.scatter_(1, mb, -torch.inf).amax(1)


def combine(
    tp: TorchPieces,
    red: Reductions,
    row: torch.Tensor,
    base: torch.Tensor,
    m: torch.Tensor,
    out: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Per input of a block: wick, wick_first, soft, correct, constant, first, second [b], from its
    reductions, row [b] (−1: none), base stratum [b] (−1: none) and max m [b]; written into the
    arrays [b] of ``out`` that it names (a copy pass fewer each), else new. Inputs without a
    row get the estimate of the group whose weights were renormalised over them: their base
    stratum's where they have one, else their max's (first = second = 0). Cost O(b·h)."""
    o = {} if out is None else out
    H = red.pv.shape[0]
    sc = tp.scal.index_select(1, row.clamp(min=0))  # [5 + 2H, b]
    rho = torch.sub(red.logD, sc[ELL : ELL + H]).exp_()  # [H, b]
    zt = torch.sub(red.Am, sc[ELL + H :]).sub_(red.pv)  # v_hm − p·v_h
    if H == 1:
        rho, zt, pv = rho[0], zt[0], red.pv[0]
        a = rho * zt
        b = rho * pv
        dz = (rho - 1.0).mul_(a)
        c = torch.mul(red.c, rho).mul_(rho)
    else:
        a = (rho * zt).sum(0)
        b = (rho * red.pv).sum(0)
        dz = ((rho - 1.0) * rho * zt).sum(0)
        c = red.c
    first = torch.mul(sc[PM], a, out=o.get("first"))
    quad = torch.mul(a, a).sub_(c).add_(b * b).sub_(dz, alpha=2.0).mul_(sc[PM])
    zero = torch.zeros((), dtype=torch.float64)
    second = torch.where(sc[SECOND] > 0, quad.sub_(sc[TRACE]).mul_(0.5), zero, out=o.get("second"))
    constant = o["constant"].copy_(sc[EST]) if "constant" in o else sc[EST]
    wick_first = torch.add(sc[EST1], first, out=o.get("wick_first"))
    uncovered = torch.nonzero(row < 0).squeeze(1)
    if uncovered.numel():  # (rare) their values are set one by one
        bu, mu = base.index_select(0, uncovered), m.index_select(0, uncovered)
        has, bc = bu >= 0, bu.clamp(min=0)
        fb = torch.where(has, tp.parent_est.index_select(0, bc), tp.max_est.index_select(0, mu))
        fb1 = torch.where(has, tp.parent_est1.index_select(0, bc), tp.max_est1.index_select(0, mu))
        first.index_fill_(0, uncovered, 0.0)
        second.index_fill_(0, uncovered, 0.0)
        constant.index_copy_(0, uncovered, fb)
        wick_first.index_copy_(0, uncovered, fb1)
    return dict(
        wick=torch.add(constant, first, out=o.get("wick")).add_(second),
        wick_first=wick_first,
        soft=torch.reciprocal(red.S, out=o.get("soft")),
        correct=o["correct"].copy_(red.correct) if "correct" in o else red.correct,
        constant=constant,
        first=first,
        second=second,
    )


def values_from_wires(
    tp: TorchPieces, A: torch.Tensor, logD: torch.Tensor, row: torch.Tensor, base: torch.Tensor, m: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per input (b of them): wick, wick_first, soft, correct, constant, first, second [b], from
    the wires A [h, b, n] (overwritten), logD [h, b], the row [b] (−1: none), the base stratum
    [b] (−1: none) and the max m [b] (``reduce_wires``, ``fix_correct``, ``combine``).
    Cost O(b·h·n)."""
    H, b, n = A.shape
    red = Reductions(H, b)
    rc = row.clamp(min=0)
    m1 = m[:, None]
    red.logD.copy_(logD)
    for h in range(H):
        torch.gather(A[h], 1, m1, out=red.Am[h, :, None])
    rho = torch.exp(logD - tp.scal[ELL : ELL + H].index_select(1, rc)) if H > 1 else None
    L = A.sum(0)  # kept for the inputs whose correctness needs their logits
    reduce_wires(tp, A, tp.slot[rc], red.Am.sum(0)[:, None], rho, red, 0, Buffers(H, b, n))
    fix_correct(red, m, lambda idx: L[idx])
    return combine(tp, red, row, base, m)


def flops_per_input(H: int, n: int, k: int, forward: bool = True) -> int:
    """Operations per input of ``wires`` (with ``forward``; else the shared-prefix blend,
    3 a logit and head) and of the Wick values (``reduce_wires``, ``fix_correct``, ``combine``)."""
    fwd = H * (k * (4 * n + 6) + 2 * n) if forward else H * (3 * n + 8)
    return fwd + 7 * n + H * 4 * n + 40 + H * 12
