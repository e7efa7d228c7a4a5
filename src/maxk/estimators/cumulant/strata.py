"""Strata with exact weights, and their split on heavy tokens.

Step 1 of the estimator (see the package docstring): the strata by max m, query q and the
positions holding m come from the distribution kernel (``Distribution.fixed_max_strata``): under
``distinct`` (m, q = m) and (m, q < m, position of m), the remaining tokens an ordered draw
without replacement from S = [0, m) \\ {q}; under ``uniform`` (m, q, set of non-query positions
holding m), the remaining tokens i.i.d. uniform on S = [0, m).

Step 3 (``_refine``): every stratum is split on its heaviest drawn token, into "none drawn" and
"token h at position J is the heaviest drawn" sub-strata, with exact probabilities from
``Distribution.p_none_drawn`` / ``p_heaviest_at`` / ``p_heaviest_any`` and the pair covariance
factor of the smaller population from ``Distribution.pair_covariance_factor``."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np

from ...distributions import Distribution, get_distribution
from ...flops import FlopCounter
from .populations import _Tables


def _strata(n: int, k: int, dist: str | Distribution, max_copies: int | None):
    """Strata by max, query and the free positions holding the max, with exact weights:
    ``Distribution.fixed_max_strata``."""
    return get_distribution(dist).fixed_max_strata(n, k, max_copies)


Strata = dict[str, np.ndarray]


@overload
def _refine(
    T: _Tables,
    st: Strata,
    dist: str | Distribution,
    tau: float,
    max_heavy: int,
    counter: FlopCounter,
    heavy_rows: Literal[True] = True,
    prune_mass: float = 0.0,
) -> Strata: ...


@overload
def _refine(
    T: _Tables,
    st: Strata,
    dist: str | Distribution,
    tau: float,
    max_heavy: int,
    counter: FlopCounter,
    heavy_rows: Literal[False],
    prune_mass: float = 0.0,
) -> tuple[Strata, Strata]: ...


def _refine(
    T: _Tables,
    st: Strata,
    dist: str | Distribution,
    tau: float,
    max_heavy: int,
    counter: FlopCounter,
    heavy_rows: bool = True,
    prune_mass: float = 0.0,
) -> Strata | tuple[Strata, Strata]:
    """Split every stratum on its *heavy* tokens: tokens t of its population whose attention weight
    could rival the fixed tokens', max_h max_i α_hi β_h(t) ≥ tau · D_F,h (at most ``max_heavy``
    per stratum, heaviest first). Sub-strata: "no heavy token drawn" (population minus the heavy
    tokens) and, for each heavy token h and each random position J, "h at J is the heaviest token
    drawn" (h becomes a fixed token, the others come from the tokens lighter than h). Their
    probabilities are exact under ``distinct``: C(s − j, r − 1)/(r·C(s, r)) for the j-th heaviest
    and C(s − n_heavy, r)/C(s, r) for none (they sum to one); under ``uniform`` the mass of
    inputs holding two or more copies of their heaviest token is spread over the stratum's
    sub-strata in proportion. This removes the rare-but-dominant tokens that a Gaussian closure
    cannot represent. Strata of least probability, together at most ``prune_mass``, are left
    unsplit (their error is bounded by that mass). Cost O(strata·h·n·log n).

    With ``heavy_rows=False`` only the "none drawn" sub-strata are returned, together with what
    ``_heavy_mean_field`` needs to evaluate the others in one vectorised pass: (st, aux)."""
    dist = get_distribution(dist)
    q, m, S = st["q"], st["m"], len(st["q"])
    k, n, H = T.k, T.n, T.H
    max_heavy = min(max_heavy, n)  # (there are at most n candidates)
    rest = st["rest"]
    r = rest.sum(axis=1).astype(np.int64)
    toks = np.arange(n)[None, :]
    mask = toks < m[:, None]
    for c in range(st["removed"].shape[1]):
        mask &= toks != st["removed"][:, c : c + 1]
    score = np.zeros((S, n))
    for h in range(H):
        al = T.alpha[h][q]
        be = T.beta[h][q]
        DF = al[:, k - 1] * be[np.arange(S), q] + be[np.arange(S), m] * (st["fixm"] * al).sum(axis=1)
        score = np.maximum(score, be * (rest * al).max(axis=1)[:, None] / DF[:, None])
    counter.add(S * H * (3 * n + 2 * k + 4), "heavy_tokens")
    score = np.where(mask & (r[:, None] > 0), score, -1.0)
    order = np.argsort(-score, axis=1)[:, :max_heavy]
    top = np.take_along_axis(score, order, axis=1)
    heavy = np.where(top >= tau, order, -1)  # [S, max_heavy], heaviest first
    nh = (heavy >= 0).sum(axis=1)
    if prune_mass > 0:  # leave the lightest strata unsplit, up to total probability prune_mass
        cand = np.nonzero(nh > 0)[0]
        o = cand[np.argsort(st["weight"][cand], kind="stable")]
        skip = o[np.cumsum(st["weight"][o]) <= prune_mass]
        heavy[skip] = -1
        nh[skip] = 0
    s_sz = st["size"]
    Rold = st["removed"]
    out = {key: [] for key in ("base", "fixh_tok", "fixh_pos", "removed", "size", "rest", "prob")}

    # "no heavy token drawn"
    rem0 = np.concatenate([Rold, heavy], axis=1)
    p0 = dist.p_none_drawn(s_sz, nh, r)
    out["base"].append(np.arange(S))
    out["fixh_tok"].append(np.full(S, -1))
    out["fixh_pos"].append(np.zeros(S, dtype=np.int64))
    out["removed"].append(rem0)
    out["size"].append(s_sz - nh)
    out["rest"].append(rest)
    out["prob"].append(p0)
    tot_heavy = np.zeros(S)
    for j in range(1, max_heavy + 1):
        has = nh >= j
        if not heavy_rows:
            sel = np.nonzero(has)[0]
            rj = r[sel]
            pj = dist.p_heaviest_any(s_sz[sel], j, rj)
            tot_heavy[sel] += pj
            continue
        for J in range(k - 1):
            sel = np.nonzero(has & (rest[:, J] > 0))[0]
            if len(sel) == 0:
                continue
            rj = r[sel]
            pj = dist.p_heaviest_at(s_sz[sel], j, rj)
            rem = np.concatenate([Rold[sel], heavy[sel, :j], np.full((len(sel), max_heavy - j), -1)], axis=1)
            rs = rest[sel].copy()
            rs[:, J] = 0.0
            out["base"].append(sel)
            out["fixh_tok"].append(heavy[sel, j - 1])
            out["fixh_pos"].append(np.full(len(sel), J))
            out["removed"].append(rem)
            out["size"].append(s_sz[sel] - j)
            out["rest"].append(rs)
            out["prob"].append(pj)
    cat = {key: np.concatenate(v) for key, v in out.items()}
    base = cat["base"]
    tot = np.bincount(base, weights=cat["prob"], minlength=S) + tot_heavy
    lost = np.nonzero(tot <= 0)[0]  # (uniform) every input repeats its heaviest token: keep unsplit
    if len(lost):
        cat["removed"][lost] = np.concatenate([Rold[lost], np.full((len(lost), max_heavy), -1)], axis=1)
        cat["size"][lost] = s_sz[lost]
        cat["prob"][lost] = 1.0
        tot[lost] = 1.0
    prob = cat["prob"] / np.where(tot > 0, tot, 1.0)[base]  # exact under distinct (tot = 1)
    keep = prob > 0
    b = base[keep]
    size = cat["size"][keep]
    new = dict(
        m=m[b],
        q=q[b],
        fixm=st["fixm"][b],
        rest=cat["rest"][keep],
        size=size,
        removed=cat["removed"][keep],
        weight=st["weight"][b] * prob[keep],
        fixh_tok=cat["fixh_tok"][keep],
        fixh_pos=cat["fixh_pos"][keep],
    )
    new["gamma"] = dist.pair_covariance_factor(size)
    if heavy_rows:
        return new
    nh = np.where(tot_heavy > 0, nh, 0)  # (uniform) strata kept unsplit have no heavy rows
    nh[lost] = 0
    return new, dict(heavy=heavy, nh=nh, tot=tot, r=r)
