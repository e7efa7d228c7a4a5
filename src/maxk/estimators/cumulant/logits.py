"""The logits' mean and linearised covariance: the ratio N/D to second order.

Step 4 of the estimator (see the package docstring). L = EUPU[q] + Σ_h N_h / D_h. Its mean takes
the second-order delta correction E[N/D] ≈ μ_N/μ_D + (μ_N Var D − Cov(N, D))/μ_D²
(``ratio_correction``); its covariance is the linearised one, J Σ Jᵀ. Only the quadratic forms the
read-out needs are formed (a few n-vectors per stratum), never the n × n covariance."""

from __future__ import annotations

import numpy as np

from ...flops import FlopCounter
from .matmul import _mm
from .populations import _Tables, _var_sum


def _logit_mean(T: _Tables, st: dict, mom: dict, order: int, counter: FlopCounter, *, ratio_correction: bool):
    """Mean logits [S, n] (second-order ratio correction with ``order=2`` and ``ratio_correction``)
    and the per-head ratios r_h = μ_N/μ_D."""
    H, n = T.H, T.n
    S = len(st["q"])
    mu_L = T.U[st["q"]].copy()
    r = []
    for d in mom["heads"]:
        rh = d["mu_N"] / d["mu_D"][:, None]
        r.append(rh)
        mu_L += rh
        if order >= 2 and ratio_correction:
            mu_L += (rh * d["var_D"][:, None] - d["cov_ND"]) / (d["mu_D"] ** 2)[:, None]
    counter.add(S * n * H * (order * 6), "logit_mean")
    return mu_L, r


def _logit_cov(T: _Tables, st: dict, mom: dict, r: list, counter: FlopCounter):
    """The linearised covariance Σ_L of the logits, δL_o = Σ_h (δN_ho − r_ho δD_h)/μ_Dh, in the two
    forms the read-out needs: its diagonal var_L [S, n] and quad2(p) -> (aᵀ Σ_L a for a = e_m − p,
    pᵀ Σ_L p), p [S, n]. Per position, δL = Σ_i f_i(x_i) with f_i(t) = Σ_h w_hi β_h(t) (g_h(t) + c_hi),
    w_hi = α_hi/μ_Dh; ``_var_sum`` adds the positions up (with or without replacement)."""
    H, n, k = T.H, T.n, T.k
    m, S = st["m"], len(st["m"])
    gamma = st["gamma"]
    hs, pop = mom["heads"], mom["pop"]
    rows = np.arange(S)
    w = [hs[h]["aR"] / hs[h]["mu_D"][:, None] for h in range(H)]  # [S, k]
    b1 = [hs[h]["b1"] for h in range(H)]
    e1 = [hs[h]["e1"] for h in range(H)]
    pairs = [(h, g) for h in range(H) for g in range(H)]
    bb, be, bee = {}, {}, {}
    for h, g in pairs:
        bb[h, g] = hs[h]["bb"] if h == g else pop.bb(h, g)
        be[h, g] = hs[h]["be"] if h == g else pop.be(h, g)
        bee[h, g] = pop.bee(h, g)
    CVV = {(h, g): bb[h, g] - b1[h] * b1[g] for h, g in pairs}

    # diagonal Var(L_o) for every output o
    T0, T1, T2, CUU, CUV, CVVo = {}, {}, {}, {}, {}, {}
    ww = {(h, g): w[h] * w[g] for h, g in pairs}
    t0 = {(h, g): ww[h, g].sum(1) for h, g in pairs}
    Y = {(h, g): _mm(ww[h, g], T.P[g]) for h, g in pairs}  # Σ_i w_h w_g P_g,io
    for h, g in pairs:
        T0[h, g] = t0[h, g][:, None]
        T1[h, g] = Y[h, g] - r[g] * T0[h, g]
        Z = _mm(ww[h, g], T.PP[h, g])
        T2[h, g] = Z - r[g] * Y[g, h] - r[h] * Y[h, g] + r[h] * r[g] * T0[h, g]
        CUU[h, g] = bee[h, g] - e1[h] * e1[g]
        CUV[h, g] = be[h, g] - e1[h] * b1[g][:, None]
        CVVo[h, g] = CVV[h, g][:, None]
    W = [w[h].sum(1)[:, None] for h in range(H)]
    G = [_mm(w[h], T.P[h]) - r[h] * W[h] for h in range(H)]
    var_L = np.maximum(_var_sum(T0, T1, T2, W, G, CUU, CUV, CVVo, gamma, H), 0.0)
    counter.add(
        S * (len(pairs) * (4 * k * n + 2 * k + 27 * n + 1) + H * (2 * k * n + 2 * k + 2 * n) + 3 * n), "logit_var_diag"
    )

    # the read-out's quadratic forms aᵀ Σ_L a for a = p and a = e_m − p share one product with EVOU
    mask = pop.mask()
    bbm = {(h, g): hs[h]["be_q"] * hs[g]["be_q"] * mask for h, g in pairs}  # [S, n_t]
    inv_s = pop.inv
    counter.add(S * len(pairs) * 2 * n, "logit_quad")

    def quad2(p):
        """(aᵀ Σ_L a for a = e_m − p, the same for a = p), p [S, n]: the variances of the linear
        functionals a·δL. With g_h[s, t] = a · EVOU_h[t] and c_hi = a·(PVOU_hi − r_h), the
        per-position terms are Cov_S(β_h g_h, β_g g_g) = Σ_{t∈S} β_h β_g g_h g_g / |S| − (a·e1_h)(a·e1_g),
        Cov_S(β_h g_h, β_g) = a·be_hg − (a·e1_h) b1_g and c_hi c_gi Cov_S(β_h, β_g). For a = e_m − p,
        g = EVOU_h[:, m] − g(p), c = PVOU_h[:, m] − r_hm − c(p): one product p·EVOU serves both."""
        gp = [_mm(p, T.E[h].T) for h in range(H)]  # [S, n_t]
        eap = [(p * e1[h]).sum(1) for h in range(H)]
        cp = [_mm(p, T.P[h].T) - (p * r[h]).sum(1)[:, None] for h in range(H)]  # [S, k]
        ga = [T.E[h].T[m] - gp[h] for h in range(H)]  # a = e_m − p
        eaa = [e1[h][rows, m] - eap[h] for h in range(H)]
        ca = [T.P[h].T[m] - r[h][rows, m][:, None] - cp[h] for h in range(H)]
        bep = {(h, g): (p * be[h, g]).sum(1) for h, g in pairs}
        bea = {(h, g): be[h, g][rows, m] - bep[h, g] for h, g in pairs}
        Wq = [w[h].sum(1) for h in range(H)]
        res = []
        for g_, ea, c, bl in ((ga, eaa, ca, bea), (gp, eap, cp, bep)):
            t1, t2, cuu, cuv = {}, {}, {}, {}
            for h, gg in pairs:
                t1[h, gg] = (ww[h, gg] * c[gg]).sum(1)
                t2[h, gg] = (ww[h, gg] * c[h] * c[gg]).sum(1)
                cuu[h, gg] = (bbm[h, gg] * g_[h] * g_[gg]).sum(1) * inv_s - ea[h] * ea[gg]
                cuv[h, gg] = bl[h, gg] - ea[h] * b1[gg]
            Gq = [(w[h] * c[h]).sum(1) for h in range(H)]
            res.append(_var_sum(t0, t1, t2, Wq, Gq, cuu, cuv, CVV, gamma, H))
        counter.add(
            S
            * (
                H * (2 * n * n + 2 * n * k + 5 * n + 4 * k + 2 + 2 * 2 * k)
                + len(pairs) * (2 * n + 1 + 2 * (5 * k + 3 * n + 26))
            ),
            "logit_quad",
        )
        return res[0], res[1]

    return var_L, quad2
