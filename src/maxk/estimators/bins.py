"""Bin propagation (Wu's max_of_k estimator, generalised) and mean propagation (one bin).

Conditioning. Every input is sorted into a *case*: the max m, the query q (the token at the last
position), c further copies of m among the k−1 other positions, the largest remaining token
t2 < m with c2 copies, and r2 "low" tokens below t2, which fill the remaining positions. Case
probabilities are exact closed-form counts for both distributions. Cases with t2 < m − gap are
merged per (m, q, c) into one case "every other token is below m − gap" (exact; those tokens go to
the low group). The least probable cases, total mass ≤ ``tol``, are dropped and the rest
renormalised within (m, q). A single copy of the max and of t2 is further conditioned on its
position *group*: the k−1 non-query positions of each query, sorted by positional score
EQKP[q, i], cut into ``positions`` runs of equal size (positions = k−1: exact positions).

Within a case the query's weight and value are exact; the max and t2 get their group's mean
weight factor exp(EQKP) and factor-weighted PVOU; the low tokens are i.i.d. tokens below t2 (minus
q under ``distinct``) whose token factors exp(EQKE[q, t]) are binned and summed by repeated
doubling, scaled by the mean position factor of the positions they fill; their value is the
weight-averaged value of that token set (mean field). The bins have masses 1/2, 1/4, ..., finer
toward the upper tail (``profile="tail"``; "equal" gives Wu's equal-mass bins), because a rare,
heavy token dominates the low sum. For each bin z of the low sum the logits are exact,

    L = EUPU[q] + (w_q v_q + c W_m V_m + c2 W_t2 V_t2 + z v_low) / (w_q + c W_m + c2 W_t2 + z),

and softmax(L)[m] is computed over all n outputs: the output softmax is not split into
independent logits. b = 1 is mean propagation (the low sum replaced by its mean).

Cost: O(n⁴) for the low mean values, O(n³ log n) to bin the low token factors,
O(n²·k·b² log b) for their sums, O(cases·b·n) for the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch

from ..circuits import CircuitTables
from ..distributions import Distribution, get_distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from ..torch_threads import single_threaded
from . import binned, coarse
from .base import EstimateValue

_CHUNK = 1 << 11  # cases per block in the logit step: [chunk, b, n] float64 stays in cache


# ---------------------------------------------------------------- cases


def cases(dist: str | Distribution, n: int, k: int) -> dict[str, np.ndarray]:
    """All cases (m, q, c, t2, c2, tl, r2) with exact probabilities summing to 1 (t2 = -1: none;
    the r2 low tokens lie below tl = t2): ``Distribution.cases``. O(n³·k²) rows at most."""
    cs = get_distribution(dist).cases(n, k)
    cs["tl"] = np.maximum(cs["t2"], 0)  # the low tokens lie below t2
    return cs


_CASE_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def coarse_cases(dist: str | Distribution, n: int, k: int, gap: int | None, tol: float) -> dict[str, np.ndarray]:
    """``cases`` merged below m − gap (None: not merged) and pruned to ``tol``; depends only on
    its arguments, so the last few are cached."""
    dist = get_distribution(dist)
    key = (dist.name, n, k, gap, tol)
    if key not in _CASE_CACHE:
        cs = cases(dist, n, k)
        if gap is not None and gap < n:
            cs = _merge_far(cs, gap)
        if len(_CASE_CACHE) >= 4:
            _CASE_CACHE.pop(next(iter(_CASE_CACHE)))
        _CASE_CACHE[key] = _prune(cs, tol)
    return _CASE_CACHE[key]


def _prune(cs: dict[str, np.ndarray], tol: float) -> dict[str, np.ndarray]:
    """Drop the least probable cases, total mass at most ``tol``, and renormalise the rest within
    each (m, q) so every (m, q) keeps its exact weight."""
    if tol <= 0:
        return cs
    p = cs["prob"]
    order = np.argsort(p)
    drop = order[np.cumsum(p[order]) <= tol]
    keep = np.ones(len(p), dtype=bool)
    keep[drop] = False
    n = int(cs["m"].max()) + 1
    mq = cs["m"] * n + cs["q"]
    full = np.bincount(mq, weights=p, minlength=n * n)
    kept = np.bincount(mq[keep], weights=p[keep], minlength=n * n)
    # an (m, q) that lost every case keeps its most probable one
    lost = (kept == 0) & (full > 0)
    if lost.any():
        order2 = np.lexsort((p, mq))  # by (m, q), then ascending probability
        last = np.r_[mq[order2][1:] != mq[order2][:-1], True]  # most probable case of each (m, q)
        best = order2[last]
        keep[best[lost[mq[best]]]] = True
        kept = np.bincount(mq[keep], weights=p[keep], minlength=n * n)
    out = {key: v[keep] for key, v in cs.items()}
    out["prob"] = out["prob"] * full[mq[keep]] / kept[mq[keep]]
    return out


def _merge_far(cs: dict[str, np.ndarray], gap: int) -> dict[str, np.ndarray]:
    """Coarsen: cases whose second token t2 is below m − gap merge, per (m, q, c), into one case
    with no explicit t2 and all r = c2 + r2 others i.i.d. in the low group below tl = m − gap
    (exact: that event is "every other token is below m − gap"). gap = 0 removes every t2."""
    far = (cs["t2"] >= 0) & (cs["t2"] < cs["m"] - gap)
    if not far.any():
        return cs
    n = int(cs["m"].max()) + 1
    kmax = int(cs["c"].max()) + 2
    key = (cs["m"][far] * n + cs["q"][far]) * kmax + cs["c"][far]
    uk, first, inv = np.unique(key, return_index=True, return_inverse=True)
    prob = np.bincount(inv, weights=cs["prob"][far])
    m = cs["m"][far][first]
    merged = {
        "m": m,
        "q": cs["q"][far][first],
        "c": cs["c"][far][first],
        "t2": np.full(len(uk), -1),
        "c2": np.zeros(len(uk), dtype=np.int64),
        "tl": m - gap,
        "r2": cs["c2"][far][first] + cs["r2"][far][first],
        "prob": prob,
    }
    return {key_: np.concatenate([cs[key_][~far], merged[key_]]) for key_ in merged}


def _expand_groups(cs: dict[str, np.ndarray], sizes: np.ndarray) -> dict[str, np.ndarray]:
    """Split cases by the position group of the max (when it has exactly one non-query copy,
    column mg) and of t2 (one copy, column tg); group g has probability sizes[g] / (k-1), the two
    taken as independent. Cases without such a copy get -1 (position-averaged)."""
    g = len(sizes)
    gp = sizes / sizes.sum()
    out = dict(cs)
    for col in ("mg", "tg"):
        sel = out["c"] == 1 if col == "mg" else (out["t2"] >= 0) & (out["c2"] == 1)
        rest = {key: v[~sel] for key, v in out.items()}
        rest[col] = np.full(int((~sel).sum()), -1)
        rep = {key: np.repeat(v[sel], g) for key, v in out.items()}
        rep[col] = np.tile(np.arange(g), int(sel.sum()))
        rep["prob"] = rep["prob"] * gp[rep[col]]
        out = {key: np.concatenate([rest[key], rep[key]]) for key in rep}
    return out


def _position_groups(ep: np.ndarray, groups: int):
    """Group the f non-query positions of each query into ``groups`` runs of (nearly) equal size
    by their factor ep[q, i]. Returns (sizes [g], members [q, g, f] 0/1)."""
    n, f = ep.shape
    g = max(1, min(groups, f))
    sizes = np.array([len(a) for a in np.array_split(np.arange(f), g)], dtype=np.float64)
    order = np.argsort(ep, axis=1, kind="stable")  # [q, f] ascending
    grp_of_rank = np.repeat(np.arange(g), sizes.astype(np.int64))  # [f]
    members = np.zeros((n, g, f))
    members[np.arange(n)[:, None], grp_of_rank[None, :], order] = 1.0
    return sizes, members


# ---------------------------------------------------------------- per-query tables


@dataclass
class _Tables:
    """Per-query tables shared by all cases (single head). A weight exp(score) factors as
    ew[q, t]·ep[q, i] (token and position parts, each shifted by its row max, so ratios are exact).

    wq [q], vq [q, o]:  the query's weight and value (position k-1, exact)
    ew [q, t]:          token factor exp(EQKE[q, t] − max_t)
    ep [q, i]:          position factor exp(EQKP[q, i] − max_i) of the non-query positions
    epv [q, o]:         Σ_i ep[q, i]·PVOU[i] over the non-query positions
    low_sums [r, q, tl, b]: binned law of Σ_{j<r} ew[q, T_j], T_j i.i.d. uniform below tl (minus q
                        under ``distinct``): the low tokens' token factors
    vtok [q, tl, o]:    ew-weighted mean EVOU of a token below tl (minus q under ``distinct``)
    """

    wq: np.ndarray
    vq: np.ndarray
    ew: np.ndarray
    ep: np.ndarray
    epv: np.ndarray
    low_sums: np.ndarray
    vtok: np.ndarray


def _query_tables(
    tab: CircuitTables, dist: Distribution, masses: np.ndarray, r_max: int, counter: FlopCounter
) -> _Tables:
    """Build ``_Tables``. Cost O(n⁴) for the mean values, O(n³ log n) to bin the low token factors,
    O(n²·r_max·b² log b) for their sums."""
    n, k = tab.n, tab.k
    E, P = tab.eqke[0], tab.eqkp[0]
    EV, PV = tab.evou[0], tab.pvou[0]
    ew = np.exp(E - E.max(axis=1, keepdims=True))  # [q, t]
    ep_all = np.exp(P - P.max(axis=1, keepdims=True))  # [q, i]
    ep = ep_all[:, : k - 1] if k > 1 else np.ones((n, 1))
    epv = ep @ PV[: k - 1] if k > 1 else np.zeros((n, n))
    wq = ew[np.arange(n), np.arange(n)] * ep_all[:, k - 1]
    vq = EV + PV[k - 1][None, :]
    counter.add(2 * n * n + 2 * n * k + n * ep.shape[1] * n * 2 + 2 * n * n, "query_tables")
    member = dist.low_token_mask(n)  # [q, tl, t]
    num = np.einsum("qlt,qt,to->qlo", member, ew, EV, optimize=True)
    den = np.einsum("qlt,qt->ql", member, ew)
    vtok = num / np.where(den > 0, den, 1.0)[..., None]
    counter.add(2 * n * n * n * n + 2 * n * n * n, "low_values")
    probs = member.astype(np.float64)
    probs[probs.sum(axis=2) == 0] = 1.0  # empty sets are never used (r2 = 0 there); keep the law defined
    y = binned.from_atoms(np.broadcast_to(ew[:, None, :], probs.shape), probs, masses, counter)  # [q, tl, b]
    low_sums = np.stack(binned.iid_sums(y, r_max, masses, counter))  # [r, q, tl, b]
    return _Tables(wq, vq, ew, ep, epv, low_sums, vtok)


# ---------------------------------------------------------------- the estimator

DEFAULTS = {"n_bins": 6, "tol": 1e-4, "gap": None, "positions": 4, "profile": "tail"}


def auto_gap(k: int) -> int:
    """Default gap: 16 for k <= 5 (few low tokens, cheap cases), 6 beyond (measured on noised
    families: a wider gap bought nothing at k = 10 but cost time; at k = 4 it halved the RMSE)."""
    return 16 if k <= 5 else 6


@overload
def bin_propagation(
    tables: CircuitTables,
    dist: Distribution,
    n_bins: int,
    counter: FlopCounter,
    tol: float = ...,
    gap: int | None = ...,
    positions: int = ...,
    return_cases: Literal[False] = ...,
    profile: str = ...,
) -> tuple[float, np.ndarray]: ...


@overload
def bin_propagation(
    tables: CircuitTables,
    dist: Distribution,
    n_bins: int,
    counter: FlopCounter,
    tol: float = ...,
    gap: int | None = ...,
    positions: int = ...,
    *,
    return_cases: Literal[True],
    profile: str = ...,
) -> tuple[float, np.ndarray, dict[str, np.ndarray]]: ...


@overload
def bin_propagation(
    tables: CircuitTables,
    dist: Distribution,
    n_bins: int,
    counter: FlopCounter,
    tol: float = ...,
    gap: int | None = ...,
    positions: int = ...,
    return_cases: bool = ...,
    profile: str = ...,
) -> tuple[float, np.ndarray] | tuple[float, np.ndarray, dict[str, np.ndarray]]: ...


def bin_propagation(
    tables: CircuitTables,
    dist: Distribution,
    n_bins: int,
    counter: FlopCounter,
    tol: float = 1e-4,
    gap: int | None = None,
    positions: int = 4,
    return_cases: bool = False,
    profile: str = "tail",
) -> tuple[float, np.ndarray] | tuple[float, np.ndarray, dict[str, np.ndarray]]:
    """Estimated expected soft accuracy by bin propagation with ``n_bins`` bins.

    gap: second tokens t2 below m − gap are not conditioned on (0: none are; >= n: all are;
    None: ``auto_gap(k)``);
    positions: number of position groups for a single copy of the max or of t2 (1: averaged);
    profile: "tail" or "equal" bin masses; tol: probability mass of cases that may be dropped.
    Returns (estimate, per-max contributions [n] summing to the estimate), plus with
    ``return_cases`` the case table (dict of arrays, with "p" = the estimated soft accuracy of each
    case, averaged over its bins). Cost: see module doc."""
    if tables.n_heads != 1:
        raise MaxkError(f"bin propagation supports single-head models, got {tables.n_heads} heads")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or not 1 <= n_bins <= 256:
        raise MaxkError(f"bins must be an integer in [1, 256], got {n_bins!r}")
    if profile not in ("tail", "equal"):
        raise MaxkError(f"profile must be 'tail' or 'equal', got {profile!r}")
    if not 0 <= tol < 0.01:
        raise MaxkError(f"tol must be in [0, 0.01), got {tol!r}")
    if gap is None:
        gap = auto_gap(tables.k)
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise MaxkError(f"gap must be a non-negative integer, got {gap!r}")
    if isinstance(positions, bool) or not isinstance(positions, (int, np.integer)) or positions < 1:
        raise MaxkError(f"positions must be a positive integer, got {positions!r}")
    n, k = tables.n, tables.k
    cs = coarse_cases(dist, n, k, gap, tol)
    f = max(k - 1, 1)
    ep_q = np.exp(tables.eqkp[0] - tables.eqkp[0].max(axis=1, keepdims=True))[:, :f] if k > 1 else np.ones((n, 1))
    sizes, members = _position_groups(ep_q, positions)
    cs = _expand_groups(cs, sizes)
    r_max = int(cs["r2"].max()) if len(cs["r2"]) else 0
    masses = binned.tail_profile(n_bins) if profile == "tail" else binned.equal_profile(n_bins)
    T = _query_tables(tables, dist, masses, r_max, counter)
    mass_t = torch.as_tensor(masses)
    U = torch.as_tensor(tables.eupu)
    EV = torch.as_tensor(tables.evou[0])
    vq_t, epv_t, vtok_t = torch.as_tensor(T.vq), torch.as_tensor(T.epv), torch.as_tensor(T.vtok)
    ep_sum = T.ep.sum(axis=1)  # [q]
    gf = np.einsum("qgi,qi->qg", members, T.ep) / sizes[None, :]  # mean factor of a group [q, g]
    gpv = torch.as_tensor(
        np.einsum("qgi,qi,io->qgo", members, T.ep, tables.pvou[0][:f])
        / np.maximum(gf * sizes[None, :], 1e-300)[..., None]
    )  # factor-weighted PVOU
    counter.add(n * f * (2 + 2 * n), "position_groups")
    per_max = np.zeros(n)
    case_p = np.empty(len(cs["m"]))
    b = n_bins
    for s in range(0, len(cs["m"]), _CHUNK):
        m, q, c, t2, c2, tl, r2, mg, tg = (
            cs[key][s : s + _CHUNK] for key in ("m", "q", "c", "t2", "c2", "tl", "r2", "mg", "tg")
        )
        C = len(m)
        prob = cs["prob"][s : s + _CHUNK]
        has2 = t2 >= 0
        t2c = np.where(has2, t2, 0)
        at, at2 = mg >= 0, tg >= 0
        pm, p2 = np.where(at, mg, 0), np.where(at2, tg, 0)
        # position factors: the group's mean if conditioned, else the mean over non-query positions
        epm_, ep2_ = np.where(at, gf[q, pm], ep_sum[q] / f), np.where(at2, gf[q, p2], ep_sum[q] / f)
        # the low tokens fill the remaining positions S: use the mean factor over S when S is known
        known = ((c == 0) | at) & ((c2 == 0) | at2)
        s_sum = ep_sum[q] - at * epm_ - at2 * ep2_
        ep_low = np.where(known & (r2 > 0), s_sum / np.maximum(r2, 1), ep_sum[q] / f)
        a_q = T.wq[q]  # [C] weights of the explicit tokens
        a_m = c * T.ew[q, m] * epm_
        a_2 = np.where(has2, c2 * T.ew[q, t2c] * ep2_, 0.0)
        s0 = a_q + a_m + a_2
        z = T.low_sums[r2, q, tl] * ep_low[:, None]  # [C, b] (zero when r2 = 0)
        beta = torch.as_tensor(z / (s0[:, None] + z))  # [C, b] attention share of the low tokens
        tq, tm, tt, ttl, tpm, tp2 = (torch.as_tensor(x) for x in (q, m, t2c, tl, pm, p2))
        tat, tat2 = torch.as_tensor(at)[:, None], torch.as_tensor(at2)[:, None]
        w = torch.as_tensor(np.stack([a_q, a_m, a_2], axis=1) / s0[:, None])  # [C, 3]
        pv_avg = epv_t[tq] / torch.as_tensor(ep_sum[q])[:, None]  # [C, n] position-averaged PVOU
        gpv_m, gpv_2 = gpv[tq, tpm], gpv[tq, tp2]
        v_m = EV[tm] + torch.where(tat, gpv_m, pv_avg)
        v_2 = EV[tt] + torch.where(tat2, gpv_2, pv_avg)
        epv_s = epv_t[tq] - tat * torch.as_tensor(epm_)[:, None] * gpv_m - tat2 * torch.as_tensor(ep2_)[:, None] * gpv_2
        pv_low = torch.where(
            torch.as_tensor(known & (r2 > 0))[:, None],
            epv_s / torch.as_tensor(np.where(s_sum > 0, s_sum, 1.0))[:, None],
            pv_avg,
        )
        # logits = A + beta·(v_low − mu), mu = the explicit tokens' attention-weighted mean value
        mu = w[:, :1] * vq_t[tq] + w[:, 1:2] * v_m + w[:, 2:] * v_2  # [C, n]
        A = U[tq] + mu
        Bv = vtok_t[tq, ttl] + pv_low - mu
        A -= A.gather(1, tm[:, None])  # margins against the max's logit, L_o − L_m
        Bv -= Bv.gather(1, tm[:, None])
        logits = torch.addcmul(A[:, None, :], beta[:, :, None], Bv[:, None, :])  # [C, b, n]
        block = logits.numpy()
        with np.errstate(over="ignore"):  # an overflow gives p = 0, the right limit
            np.exp(block, out=block)  # (numpy's float64 exp is ~2x torch's here)
        p = 1.0 / logits.sum(dim=2)  # [C, b] softmax(L)[m]
        # [C, n] vectors: ~22 ops per output; [C, b, n] block: addcmul 2, exp, sum
        counter.add(C * (30 + 22 * n + 3 * b + b * (4 * n + 2)), "case_logits")
        case_p[s : s + C] = (p @ mass_t).numpy()
        per_max += np.bincount(m, weights=prob * case_p[s : s + C], minlength=n)
        counter.add(C * (b + 2), "case_sum")
    if return_cases:
        return float(per_max.sum()), per_max, dict(cs, p=case_p)
    return float(per_max.sum()), per_max


def _coarse(method, tables, dist, counter, n_bins, strata, heavy, outputs, full_only) -> EstimateValue | None:
    """The coarse setting of ``mean``/``bins`` when ``strata`` is not "full" (else None)."""
    return coarse.dispatch(
        method,
        tables,
        dist,
        counter,
        strata=strata,
        readout=method,
        n_bins=n_bins,
        heavy=heavy,
        outputs=outputs,
        full_only={name: (v, DEFAULTS[name]) for name, v in full_only.items()},
    )


def bins(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    n_bins: int = DEFAULTS["n_bins"],
    tol: float = DEFAULTS["tol"],
    gap: int | None = DEFAULTS["gap"],
    positions: int = DEFAULTS["positions"],
    profile: str = DEFAULTS["profile"],
    strata: str = "full",
    heavy: int = 0,
    outputs: int | None = None,
) -> EstimateValue:
    """Bin propagation with ``n_bins`` bins (see ``bin_propagation`` for the options).
    Deterministic (``rng`` unused). Cost O(n⁴ + n²·k·b² log b + cases·b·n).

    ``strata`` other than "full" ("max", "max-query", "positions") is the cheap coarse setting
    (``maxk.estimators.coarse``, read-out "bins": the low tokens' weight as ``n_bins`` lognormal
    bins) with ``heavy`` heaviest tokens split on and ``outputs`` competitor outputs read."""
    full_only = {"tol": tol, "gap": gap, "positions": positions, "profile": profile}
    cheap = _coarse("bins", tables, dist, counter, n_bins, strata, heavy, outputs, full_only)
    if cheap is not None:
        return cheap
    with single_threaded():
        est, per_max = bin_propagation(tables, dist, n_bins, counter, tol, gap, positions, profile=profile)
    used_gap = auto_gap(tables.k) if gap is None else gap
    return EstimateValue(
        est,
        details={
            "n_bins": int(n_bins),
            "tol": tol,
            "gap": used_gap,
            "positions": positions,
            "profile": profile,
            "per_max": per_max.tolist(),
        },
    )


def mean(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    tol: float = DEFAULTS["tol"],
    gap: int | None = DEFAULTS["gap"],
    positions: int = DEFAULTS["positions"],
    strata: str = "full",
    heavy: int = 0,
    outputs: int | None = None,
) -> EstimateValue:
    """Mean propagation: bin propagation with one bin (the low tokens' weight sum replaced by its
    mean); the same conditioning as ``bins``. Cost O(n⁴ + cases·n).

    ``strata`` other than "full" ("max", "max-query", "positions") is the cheap coarse setting
    (``maxk.estimators.coarse``, read-out "mean") with ``heavy`` heaviest tokens split on and
    ``outputs`` competitor outputs read."""
    cheap = _coarse(
        "mean", tables, dist, counter, 1, strata, heavy, outputs, {"tol": tol, "gap": gap, "positions": positions}
    )
    if cheap is not None:
        return cheap
    with single_threaded():
        est, per_max = bin_propagation(tables, dist, 1, counter, tol, gap, positions)
    used_gap = auto_gap(tables.k) if gap is None else gap
    return EstimateValue(
        est, details={"n_bins": 1, "tol": tol, "gap": used_gap, "positions": positions, "per_max": per_max.tolist()}
    )
