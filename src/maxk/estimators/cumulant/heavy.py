"""The heavy sub-strata of ``strata._refine`` and the two paths that evaluate them.

A stratum split on its heaviest drawn token has "token h at position J is the heaviest drawn"
sub-strata, one per (heavy token, random position); h is fixed there and dominates N/D, so they
are evaluated by mean propagation by default (``heavy_order=1``). Two paths (``heavy_path``):

* ``"vectorised"`` (default, used where it applies: ``order=2`` with ``heavy_order=1``): only the
  "none drawn" sub-strata become rows of the strata table; the heavy ones are evaluated in one
  pass vectorised over (base stratum, rank of h, position J) by ``_heavy_mean_field``, and
  ``_merge_heavy`` appends their per-base results as extra rows.
* ``"generic"``: every sub-stratum is a row of the strata table, and the driver's block loop
  evaluates the heavy ones like any other stratum, at order min(order, heavy_order). The two
  agree to rounding (tested); the generic path is the reference and handles ``heavy_order=2``.

``_split_heavy`` makes the split for the chosen path."""

from __future__ import annotations

import numpy as np
import torch

from ...distributions import Distribution, get_distribution
from ...flops import FlopCounter
from .matmul import _mm
from .populations import _DIRECT_TOL, _EPS, _population_mask, _Tables
from .strata import _refine

HEAVY_PATHS = ("vectorised", "generic")
_HEAVY_CHUNK = 4096  # heavy pairs per chunk of _heavy_mean_field
_HEAVY_SUB = 512  # heavy pairs per [pairs, positions, n] margin tensor (about cache-sized)


def _split_heavy(
    T: _Tables,
    st: dict,
    dist: str | Distribution,
    *,
    order: int,
    tau: float,
    max_heavy: int,
    heavy_order: int,
    prune_mass: float,
    heavy_path: str,
    counter: FlopCounter,
):
    """The strata ``st`` split on their heavy tokens (none with ``max_heavy=0``) for the path that
    evaluates them: (rows, parts, vec). ``rows`` is the strata table the block loop evaluates,
    ``parts`` its (row indices, propagation order) groups — the heavy sub-strata of the generic
    path at order min(order, heavy_order) —, and ``vec`` = (base strata, aux) for
    ``_heavy_mean_field`` on the vectorised path, else None. Cost that of ``_refine``."""
    vec = None
    if max_heavy > 0 and heavy_order == 1 and order == 2 and heavy_path == "vectorised":
        rows, aux = _refine(T, st, dist, tau, max_heavy, counter, heavy_rows=False, prune_mass=prune_mass)
        vec = (st, aux)
    elif max_heavy > 0:
        rows = _refine(T, st, dist, tau, max_heavy, counter, prune_mass=prune_mass)
    else:
        rows = st
    S = len(rows["m"])
    heavy = rows["fixh_tok"] >= 0 if "fixh_tok" in rows else np.zeros(S, bool)
    parts = [(np.nonzero(~heavy)[0], order), (np.nonzero(heavy)[0], min(order, heavy_order))]
    return rows, parts, vec


def _merge_heavy(
    m: np.ndarray,
    weight: np.ndarray,
    est2: np.ndarray,
    est1: np.ndarray,
    base: dict,
    h_est: np.ndarray,
    h_mass: np.ndarray,
):
    """The rows' (m, weight, second-order, first-order estimates) with one row appended per base
    stratum for its heavy sub-strata (``_heavy_mean_field``'s mass-weighted mean, weight
    P(base)·mass; bases without heavy mass dropped). Cost O(strata)."""
    keep = h_mass > 0
    extra_w = base["weight"][keep]
    m = np.concatenate([m, base["m"][keep]])
    est2 = np.concatenate([est2, h_est[keep] / h_mass[keep]])
    est1 = np.concatenate([est1, h_est[keep] / h_mass[keep]])
    weight = np.concatenate([weight, extra_w * h_mass[keep]])
    return m, weight, est2, est1


def _heavy_mean_field(
    T: _Tables, st: dict, aux: dict, dist: str | Distribution, readout: str, counter: FlopCounter
) -> tuple[np.ndarray, np.ndarray]:
    """Mean propagation over the heavy sub-strata of ``_refine`` ("token h at position J is the
    heaviest drawn"), vectorised over (base stratum, rank j of h, position J): per base stratum,
    Σ_{h, J} P(h, J) · softmax(μ_L)_m and the per-base probability mass covered, [S] each.

    In sub-stratum (s, h_j, J) the other random positions draw from the tokens lighter than h_j,
    whose population means b1 = E[β], e1 = E[β·EVOU] are the stratum's prefix sums minus the
    cumulative sums of the heavier tokens along the heavy axis (summed token by token where that
    difference would lose precision, as in ``_Population``). Per head, with A = Σ_{i∈rest} α_i,
    PR = Σ_{i∈rest} α_i P_i and c = β(h) − b1 (everything but α_J and P_J independent of J):
        D_J = D0 + α_J·c,  D0 = DF + A·b1,   N_J = X + α_J·(Y + c·P_J),
        X = NF + A·e1 + b1·PR,  Y = β(h)·EVOU[h] − e1,
    and the direct path folds into the first head as U + N/D = (X + D0·U + α_J·(Y + c·U + c·P_J))/D_J.
    So each logit row costs 5 operations a head (two multiply-adds and the 1/D_J scaling) plus
    the margin against L_m (formed per J from the m-th entries), exp and sum:
    softmax_m = 1/Σ_o exp(L_o − L_m) (an overflow gives exactly 0). Pairs are grouped by the
    stratum's set of random positions so that only those J are formed. (``readout`` is not
    needed: at first order both read-outs are this softmax of the mean logits.)
    Cost O(Σ_s n_heavy(s)·(h·|rest|·n + h·n) + h·n²) (the last only for strata summed directly)."""
    dist = get_distribution(dist)
    H, n, k = T.H, T.n, T.k
    heavy, nh, tot, r = aux["heavy"], aux["nh"], aux["tot"], aux["r"]
    S = len(st["m"])
    out = np.zeros(S)
    mass = np.zeros(S)
    last = k - 1
    MH = heavy.shape[1]
    bases = np.nonzero(nh > 0)[0]
    if len(bases) == 0 or MH == 0:
        return out, mass
    rest_b = st["rest"][bases] > 0
    key = rest_b.astype(np.int64) @ (np.int64(1) << np.arange(k, dtype=np.int64))
    buf = torch.empty((2, _HEAVY_SUB, k, n), dtype=torch.float64)
    buf_np = buf.numpy()
    for kv in np.unique(key):
        grp = bases[key == kv]
        Js = np.nonzero(rest_b[np.searchsorted(bases, grp[0])])[0]
        nJ = len(Js)
        # chunks of base strata holding about _HEAVY_CHUNK heavy pairs each
        cum = np.cumsum(nh[grp])
        cuts = np.searchsorted(cum, np.arange(_HEAVY_CHUNK, cum[-1], _HEAVY_CHUNK), side="right")
        for b in np.split(grp, cuts):
            if len(b) == 0:
                continue
            Bb = len(b)
            q, m = st["q"][b], st["m"][b]
            fixm = st["fixm"][b]
            rowsb = np.arange(Bb)
            pb, pr = np.nonzero(np.arange(MH)[None, :] < nh[b][:, None])  # pairs: base, rank − 1
            P_ = len(pb)
            rowsp = np.arange(P_)
            j = pr + 1
            size = st["size"][b][pb] - j
            rj = r[b][pb]
            sb = st["size"][b][pb]
            pj = dist.p_heaviest_at(sb, j, rj)
            pj = pj / tot[b][pb]
            hv = heavy[b]  # [Bb, MH]
            hvc = np.where(hv >= 0, hv, 0)
            ht = hvc[pb, pr]
            inv_size = 1.0 / np.maximum(size, 1.0)
            mp = m[pb]
            by_rank = [np.nonzero(pr == i)[0] for i in range(1, int(pr.max()) + 1)]
            Lm = np.zeros((P_, nJ))
            rows_h = []
            for h in range(H):
                al = T.alpha[h][q]  # [Bb, k]
                be = T.beta[h][q]  # [Bb, n]
                E, P = T.E[h], T.P[h]
                aq = al[:, last] * be[rowsb, q]
                afix = fixm * al
                am = afix.sum(1)
                bm = be[rowsb, m]
                DF = aq + bm * am
                NF = aq[:, None] * (E[q] + P[last][None]) + bm[:, None] * (am[:, None] * E[m] + _mm(afix, P))
                aJ = al[:, Js]
                A = aJ.sum(1)
                PJ = P[Js]
                PR = _mm(aJ, PJ)
                # population sums of the base stratum, then minus the heavier tokens (cumulative)
                b1 = T.b1[h][q, m].copy()
                e1 = T.e1[h][q, m].copy()
                for c in range(st["removed"].shape[1]):
                    t = st["removed"][b, c]
                    ok = t >= 0
                    tt = np.where(ok, t, 0)
                    wt = np.where(ok, be[rowsb, tt], 0.0)
                    b1 -= wt
                    e1 -= wt[:, None] * E[tt]
                bhv = np.where(hv >= 0, be[rowsb[:, None], hvc], 0.0)  # [Bb, MH]
                cb = np.cumsum(bhv, axis=1)
                b1p = (b1[pb] - cb[pb, pr]) * inv_size
                # Σ of β·EVOU over the heavier tokens h_1..h_j, accumulated along the rank axis
                # (a pair's predecessor p − 1 is the same base stratum's rank j − 1)
                bh = bhv[pb, pr]
                ce = E[ht]
                ce *= bh[:, None]
                for sel in by_rank:
                    ce[sel] += ce[sel - 1]
                e1p = (e1[pb] - ce) * inv_size[:, None]
                Ap = A[pb]
                # where the differences' rounding error ε·Σ_{t<m} β·A·scale is not negligible
                # against the smallest D_J, sum the population (lighter tokens) directly
                scale = 1.0 + np.abs(E).max() + np.abs(P).max()
                Dmin = DF[pb] + Ap * b1p + aJ[pb].min(axis=1) * (bh - b1p)
                bad = np.nonzero(_EPS * T.b1[h][q, m][pb] * Ap * scale > _DIRECT_TOL * Dmin)[0]
                if len(bad):
                    rem_bad = np.concatenate(
                        [st["removed"][b][pb[bad]], np.where(np.arange(MH)[None, :] <= pr[bad, None], hv[pb[bad]], -1)],
                        axis=1,
                    )
                    wpop = np.where(_population_mask(n, mp[bad], rem_bad), T.beta[h][q[pb[bad]]], 0.0)
                    b1p[bad] = wpop.sum(axis=1) * inv_size[bad]
                    e1p[bad] = _mm(wpop, E) * inv_size[bad, None]
                    counter.add(len(bad) * (2 * n * n + 3 * n), "heavy_mean_field")
                c_ = bh - b1p
                D0 = DF[pb] + Ap * b1p
                X = NF[pb] + Ap[:, None] * e1p + b1p[:, None] * PR[pb]
                Y = bh[:, None] * E[ht] - e1p
                if h == 0:  # the direct path, folded into the first head
                    Up = T.U[q][pb]
                    X += D0[:, None] * Up
                    Y += c_[:, None] * Up
                alp = aJ[pb]  # [P_, nJ]
                inv = 1.0 / (D0[:, None] + alp * c_[:, None])
                Lm += inv * (X[rowsp, mp][:, None] + alp * (Y[rowsp, mp][:, None] + c_[:, None] * PJ[:, mp].T))
                rows_h.append((X, Y, c_, alp, inv, PJ))
                counter.add(
                    Bb * (2 * k * n + 2 * nJ * n + 6 * n + st["removed"].shape[1] * (2 * n + 1) + MH + 2 * k + nJ + 4)
                    + P_ * ((14 if h == 0 else 10) * n + 9 * nJ + 17),
                    "heavy_mean_field",
                )
            pm = np.empty((P_, nJ))
            tl = [tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in rh) for rh in rows_h]
            tLm = torch.from_numpy(Lm)
            tpm = torch.from_numpy(pm)
            for s0 in range(0, P_, _HEAVY_SUB):
                e0 = min(s0 + _HEAVY_SUB, P_)
                w = buf[0, : e0 - s0, :nJ]
                wn = buf_np[0, : e0 - s0, :nJ]
                for h, (X, Y, c_, alp, inv, PJ) in enumerate(tl):
                    # (X + α_J (Y + c P_J)) / D_J, [pairs, J, n]
                    z = w if h == 0 else buf[1, : e0 - s0, :nJ]
                    torch.mul(c_[s0:e0, None, None], PJ[None], out=z)
                    z.add_(Y[s0:e0, None, :]).mul_(alp[s0:e0, :, None]).add_(X[s0:e0, None, :]).mul_(
                        inv[s0:e0, :, None]
                    )
                    if h > 0:
                        w.add_(z)
                w.sub_(tLm[s0:e0, :, None])
                np.exp(wn, out=wn)  # numpy's float64 exp is about twice as fast as torch's here
                torch.sum(w, 2, out=tpm[s0:e0])
            pm = 1.0 / pm
            counter.add(P_ * nJ * n * (6 * H + 2) + 3 * P_ * nJ, "heavy_mean_field")
            np.add.at(out, b[pb], pj * pm.sum(1))  # b repeats across ranks j
            np.add.at(mass, b[pb], pj * nJ)
    return out, mass
