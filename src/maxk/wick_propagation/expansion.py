"""Per row: the cumulant estimate and the pieces of the second-order expansion of g at the wires' mean.

In a row s the wires are, per head h, D_h = Σ_i w_hi and N_h = Σ_i w_hi v_hi (the estimator's
normalisation w = α·β), with exact means μ_s and covariance Σ_s, and the model's probability on
the max is g(y) = softmax(L)[m], L = EUPU[q] + Σ_h N_h/D_h. At μ_s, with r_h = μ_Nh/μ_Dh,
p = softmax(EUPU[q] + Σ_h r_h) and the linearised logits u = Σ_h u_h, u_h = (δN_h − r_h δD_h)/μ_Dh,
d_h = δD_h/μ_Dh:

    ∇g·δ   = p_m (e_m − p)·u
    δᵀHδ   = p_m [a² − Σ_o p_o u_o² + b² − 2 Σ_h d_h z_h],   a = (e_m − p)·u, b = p·u, z_h = (e_m − p)·u_h

(the softmax's Hessian p_m[(e_m − p)(e_m − p)ᵀ − diag(p) + ppᵀ] on u, and the ratios' own second
derivatives ∂²(N_o/D)/∂D² = 2N_o/D³, ∂²/∂D∂N_o = −1/D², no cross-head terms). Its mean, exact
under the row's law because every term is a product of two linear functionals of the wires:

    tr(H_s Σ_s) = p_m [Var(a) − Σ_o p_o Var(u_o) + Var(b)
                       − 2 Σ_h ((e_m − p)·Cov(N_h, D_h) − ((e_m − p)·r_h) Var(D_h)) / μ_Dh²]

with Var(a), Var(b) and Var(u_o) from the estimator's exact linearised covariance (``_logit_cov``:
population sums over tokens, cross-head terms, draws with or without replacement through
``pair_covariance_factor``) and Var(D_h), Cov(N_h, D_h) from ``_block_moments``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..circuits import CircuitTables
from ..errors import MaxkError
from ..estimators.cumulant.driver import _CHUNK
from ..estimators.cumulant.logits import _logit_cov, _logit_mean
from ..estimators.cumulant.populations import _EPS, _block_moments, _Tables
from ..estimators.cumulant.readout import _readout
from ..flops import FlopCounter
from ..torch_threads import single_threaded
from .rows import Rows

_EXACT_TOL = 1e-13  # rounding of the expansion's population moments tolerated (``_block_moments``)


@dataclass(frozen=True)
class RowPieces:
    """Per row s (S rows, H heads, n outputs):

    est [S]: the cumulant estimator's estimate in the row (clipped to [0, 1], as it sums them);
    est1 [S]: g(μ_s), the first-order (mean-propagation) estimate;
    p [S, n]: softmax of the logits at the wires' mean, p_m = pm [S];
    R [H, S, n]: r_h = μ_Nh/μ_Dh, head 0 plus EUPU[q] (so Σ_h R_h are the logits at the mean);
    ell [H, S]: log μ_Dh in raw-score units (log of the mean of Σ_i exp(score_i));
    trace [S]: tr(H_s Σ_s) (0 in rows expanded to first order only);
    order [S]: 2 where the expansion is second order, 1 where the estimator propagates means."""

    est: np.ndarray
    est1: np.ndarray
    p: np.ndarray
    pm: np.ndarray
    R: np.ndarray
    ell: np.ndarray
    trace: np.ndarray
    order: np.ndarray


def _softmax(L: np.ndarray) -> np.ndarray:
    """Row-wise softmax of L [S, n]."""
    e = np.exp(L - L.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _trace(p, m, var_L, quad2, heads, r) -> np.ndarray:
    """tr(H Σ) per row from p [S, n], the linearised covariance's forms and the ratio moments."""
    S = len(m)
    rows = np.arange(S)
    pm = p[rows, m]
    q_a, q_p = quad2(p)
    ratio = np.zeros(S)
    for d, rh in zip(heads, r, strict=True):
        a_cov = d["cov_ND"][rows, m] - (p * d["cov_ND"]).sum(1)  # (e_m − p)·Cov(N, D)
        a_r = rh[rows, m] - (p * rh).sum(1)  # (e_m − p)·r
        ratio += (a_cov - a_r * d["var_D"]) / d["mu_D"] ** 2
    return pm * (q_a - (p * var_L).sum(1) + q_p - 2.0 * ratio)


def _inexact(T: _Tables, st: dict, mom: dict) -> np.ndarray:
    """Rows [S] bool whose population moments in ``mom`` (the estimator's) may carry more rounding
    than ``_EXACT_TOL``: the rows ``_block_moments``' own bound ε·Σ_{t<m} β_h²·Σ_i α_i²·scale_h²
    ≥ tol·μ_D² flags at tol = ``_EXACT_TOL``, or that it already summed directly."""
    q, m = st["q"], st["m"]
    bad = np.zeros(len(q), dtype=bool)
    bad[mom["pop"].F] = True
    for h, d in enumerate(mom["heads"]):
        scale = 1.0 + np.abs(T.E[h]).max() + np.abs(T.P[h]).max()
        A2 = (d["aR"] ** 2).sum(axis=1)
        bad |= _EPS * T.bb[h, h][q, m] * A2 * scale**2 > _EXACT_TOL * d["mu_D"] ** 2
    return bad


def _pieces(T: _Tables, tab: CircuitTables, st: dict, mom: dict, o: int, norm, counter: FlopCounter):
    """(p [S, n], R [H, S, n], ell [H, S], trace [S]) of a block of rows from its moments."""
    q, m = st["q"], st["m"]
    L0, r = _logit_mean(T, st, mom, 1, counter, ratio_correction=False)
    p = _softmax(L0)
    R = np.stack([rh + tab.eupu[q] if h == 0 else rh for h, rh in enumerate(r)])
    ell = np.stack([np.log(d["mu_D"]) + norm[h][q] for h, d in enumerate(mom["heads"])])
    trace = np.zeros(len(q))
    if o == 2:
        var_L, quad2 = _logit_cov(T, st, mom, r, counter)
        trace = _trace(p, m, var_L, quad2, mom["heads"], r)
    counter.add(len(q) * T.n * (4 + T.H * (2 + 10 * (o == 2))), "wick_pieces")
    return p, R, ell, trace


def row_pieces(
    T: _Tables,
    tab: CircuitTables,
    rows: Rows,
    *,
    readout: str,
    ratio_correction: bool,
    lse_correction: bool,
    counter: FlopCounter,
) -> RowPieces:
    """Estimates and expansion pieces of every row, block by block in the cumulant driver's own
    blocks (so the estimates are bit-identical to its generic heavy path). The expansion's
    moments are the estimator's except in rows where those may carry more rounding than
    ``_EXACT_TOL`` (prefix-sum differences next to dominant heavy tokens; 9% of the shipped
    model's rows): there they are summed directly, token by token. Cost that of the estimator's
    blocks, O(rows·h²·n·(n + k)), plus one more pair of quadratic forms per row (an O(h·n²)
    product), O(rows·h·n) for the pieces, and the flagged rows' moments once more."""
    H, n = T.H, T.n
    st = rows.st
    S = rows.n_rows
    est, est1, trace = np.empty(S), np.empty(S), np.zeros(S)
    p = np.empty((S, n))
    R = np.empty((H, S, n))
    ell = np.empty((H, S))
    heavy = rows.fixh_tok >= 0
    parts = [np.nonzero(~heavy)[0], np.nonzero(heavy)[0]]  # the driver's two parts, in its order
    norm = [tab.eqke[h].max(axis=1) + tab.eqkp[h].max(axis=1) for h in range(H)]  # [n_q]
    with single_threaded(), np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for part in parts:
            for s0 in range(0, len(part), _CHUNK):
                idx = part[s0 : s0 + _CHUNK]
                o = int(rows.order[idx[0]])
                sub = {key: v[idx] for key, v in st.items()}
                m = sub["m"]
                # the estimator's own figures (its ``_block``), and g(μ_s)
                mom = _block_moments(T, sub, counter)
                mu_L, r = _logit_mean(T, sub, mom, o, counter, ratio_correction=ratio_correction)
                if o == 1:
                    e2, _ = _readout(mu_L, None, m, None, readout, 1, counter, lse_correction=lse_correction)
                else:
                    var_L, quad2 = _logit_cov(T, sub, mom, r, counter)
                    e2, _ = _readout(mu_L, var_L, m, quad2, readout, 2, counter, lse_correction=lse_correction)
                L0, _ = _logit_mean(T, sub, mom, 1, counter, ratio_correction=False)
                e1, _ = _readout(L0, None, m, None, readout, 1, counter, lse_correction=lse_correction)
                est[idx], est1[idx] = np.clip(e2, 0.0, 1.0), e1
                # the expansion's pieces, exact to rounding
                pc = _pieces(T, tab, sub, mom, o, norm, counter)
                bad = _inexact(T, sub, mom)
                counter.add(len(idx) * (H * (T.k + 8)), "wick_pieces")
                if bad.any():
                    fs = {key: v[bad] for key, v in sub.items()}
                    momx = _block_moments(T, fs, counter, direct_tol=_EXACT_TOL)
                    pcx = _pieces(T, tab, fs, momx, o, norm, counter)
                    pc[0][bad], pc[3][bad] = pcx[0], pcx[3]
                    pc[1][:, bad], pc[2][:, bad] = pcx[1], pcx[2]
                p[idx], R[:, idx], ell[:, idx], trace[idx] = pc
    if not (np.isfinite(est).all() and np.isfinite(trace).all() and np.isfinite(ell).all()):
        raise MaxkError(
            "cumulant propagation: attention weights under- or overflow float64 "
            "(a query's attention scores span more than about 350)"
        )
    pm = p[np.arange(S), st["m"]]
    return RowPieces(est=est, est1=est1, p=p, pm=pm, R=R, ell=ell, trace=trace, order=rows.order.copy())
