"""Covariance (cumulant) propagation of soft accuracy (DESIGN §7, Christiano–Neyman–Xu 2022).

The estimator conditions on what it can weigh exactly and propagates means and covariances
through the rest:

1. **Strata with exact weights.** The max m, the query q = x[k-1] and the positions holding m.
   Under ``distinct``: (m, q = m) and (m, q < m, position of m) — every stratum's remaining
   tokens are an ordered draw *without replacement* from S = [0, m) \\ {q}. Under ``uniform``:
   (m, q, set P of non-query positions holding m) — the remaining tokens are i.i.d. uniform on
   S = [0, m). (For k − 1 > 8 only sets of at most ``max_copies`` positions — default 2 — are
   enumerated and the weights renormalised within each m; the dropped mass is reported in
   ``extra``: 0.25% for n = 64, k = 10, where the estimate then takes ≈ 10 s.)
2. **Exact first and second moments of the attention sums.** Per head, with
   w_i = exp(EQKE[q, x_i] + EQKP[q, i]) = α_i β(x_i) and values v_i = EVOU[x_i] + PVOU[i],
   the denominator D = Σ_i w_i and numerator N = Σ_i w_i v_i are sums over positions of
   functions of one token each. Their means and (co)variances — including the finite-population
   covariance −Cov_S(f, g)/(|S| − 1) between two positions drawn without replacement — are exact,
   from prefix sums over the token axis of β, β·EVOU, β²·EVOU and β²·EVOU² (per query token).
3. **Heavy tokens conditioned on exactly** (``_refine``). A token below m whose attention weight
   can rival the max's (common in noised models, whose EQKE rows are not monotone) appears
   rarely but then dominates N/D — a law no Gaussian closure represents: measured, without this
   step the estimate is off by up to 0.3 on noised models. Each stratum is split on its heaviest
   drawn token (up to ``max_heavy`` candidates with weight ≥ ``tau`` × the fixed tokens'):
   "none drawn" keeps covariance propagation over the light tokens, "token h at position J is
   the heaviest drawn" fixes h and propagates over the lighter ones (mean propagation there by
   default, ``heavy_order``), with exact sub-stratum probabilities.
4. **Ratio to second order.** L = EUPU[q] + Σ_h N_h / D_h. Its mean takes the second-order delta
   correction E[N/D] ≈ μ_N/μ_D + (μ_N Var D − Cov(N, D))/μ_D²; its covariance is the linearised
   one, J Σ Jᵀ. Only the quadratic forms the read-out needs are formed (a few n-vectors per
   stratum), never the n × n covariance.
5. **Read-out.** ``readout="gauss"`` (default): the margin Z = L_m − logsumexp_{j≠m} L_j is taken
   as Gaussian with the linearised variance and a second-order (Hessian of logsumexp) mean
   correction, and E[σ(Z)] is a 1-D Gauss–Hermite integral. ``readout="taylor"``: the
   second-order Taylor expansion E[p_m] ≈ p_m(μ) + ½ tr(∇²p_m Σ_L). ``order=1`` is mean
   propagation (soft accuracy of the mean logits, mean of N/D taken as μ_N/μ_D).

The presumptions of independence: third and higher cumulants of N, D are dropped (Gaussian
closure), the logits are treated as jointly Gaussian at the read-out, and the ratio and read-out
are expanded around the mean. Where a stratum's remaining tokens can out-attend the max (a
token just below m) the true law of N/D is skewed and the expansion is least accurate.

Cost: O(h²·n³) for the prefix tables, then O(strata·h²·n·(n + k)). For n = 64, k = 10
(distinct) there are 1.8·10⁴ strata; heavy-token conditioning multiplies them by up to
1 + max_heavy·(k − 2) (the heavy ones are evaluated by vectorised mean propagation): measured
0.9–1.3·10⁹ counted FLOPs and 1.7–6 s on the shared 2-core machine with the defaults, versus
6.3·10⁸ FLOPs and 1.25 s with ``max_heavy=0``.

The module also holds a small general covariance-propagation engine (``Moments`` and the
functions after it) used by the tests to check the propagation rules against closed forms.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import perm

import numpy as np

from ..circuits import CircuitTables
from ..distributions import check_distribution, max_weights
from ..errors import MaxkError
from ..flops import FlopCounter
from .base import Estimate

READOUTS = ("gauss", "taylor")
_GH_NODES = 24
_CHUNK = 4096  # strata per block: bounded memory
_GENERIC_HEAVY = False
_RATIO_CORRECTION = True  # second-order mean correction of N/D (switchable for experiments)
_LSE_CORRECTION = True  # second-order mean correction of logsumexp in the Gaussian read-out


# ---------------------------------------------------------------- general propagation engine


@dataclass(frozen=True)
class Moments:
    """Means [d] and covariance [d, d] of a random vector (cumulants of order 1 and 2)."""

    mean: np.ndarray
    cov: np.ndarray

    @staticmethod
    def independent(means, variances) -> "Moments":
        """Independent components with the given means and variances."""
        m = np.asarray(means, dtype=np.float64)
        return Moments(m, np.diag(np.asarray(variances, dtype=np.float64)))

    def linear(self, A, b=None) -> "Moments":
        """y = A x + b: mean A μ + b, covariance A Σ Aᵀ (exact for any law). Cost O(d_y·d²)."""
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        mu = A @ self.mean + (0.0 if b is None else np.asarray(b, dtype=np.float64))
        return Moments(mu, A @ self.cov @ A.T)

    def products(self, pairs) -> "Moments":
        """z_k = x_{i_k} x_{j_k}: E[z] = μ_i μ_j + C_ij, and (DESIGN §7)
        Cov(x_i x_j, x_u x_v) = μ_i μ_u C_jv + μ_i μ_v C_ju + μ_j μ_u C_iv + μ_j μ_v C_iu
        + C_iu C_jv + C_iv C_ju, third and fourth cumulants dropped. The mean is exact for any
        law; the covariance is exact for Gaussian inputs and for products of independent inputs.
        Cost O(len(pairs)²)."""
        p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        i, j = p[:, 0], p[:, 1]
        mu, C = self.mean, self.cov
        mean = mu[i] * mu[j] + C[i, j]
        I, J = i[:, None], j[:, None]
        U, V = i[None, :], j[None, :]
        cov = (mu[I] * mu[U] * C[J, V] + mu[I] * mu[V] * C[J, U] + mu[J] * mu[U] * C[I, V]
               + mu[J] * mu[V] * C[I, U] + C[I, U] * C[J, V] + C[I, V] * C[J, U])
        return Moments(mean, cov)

    def exp(self) -> "Moments":
        """y = exp(x) componentwise by the log-normal identities E[e^x] = e^{μ + σ²/2},
        Cov(e^{x_i}, e^{x_j}) = E_i E_j (e^{C_ij} − 1): exact for Gaussian x. Cost O(d²)."""
        m = np.exp(self.mean + 0.5 * np.diag(self.cov))
        return Moments(m, np.outer(m, m) * np.expm1(self.cov))

    def quadratic_form(self, A) -> tuple[float, float]:
        """Mean and variance of xᵀ A x (A symmetric): μᵀAμ + tr(AΣ) (exact for any law) and
        2 tr(AΣAΣ) + 4 μᵀAΣAμ (exact for Gaussian x). Cost O(d³)."""
        A = np.asarray(A, dtype=np.float64)
        A = 0.5 * (A + A.T)
        AS = A @ self.cov
        mean = float(self.mean @ A @ self.mean + np.trace(AS))
        var = float(2 * np.trace(AS @ AS) + 4 * self.mean @ AS @ A @ self.mean)
        return mean, var

    def ratio(self, i: int, j: int) -> tuple[float, float]:
        """x_i / x_j by its second-order expansion around the means: mean
        μ_i/μ_j + (μ_i C_jj − μ_j C_ij)/μ_j³, variance (linearised) ∇ᵀ C ∇. Cost O(1)."""
        mu, C = self.mean, self.cov
        r = mu[i] / mu[j]
        mean = r + (r * C[j, j] - C[i, j]) / mu[j] ** 2
        g = np.array([1.0 / mu[j], -r / mu[j]])
        sub = C[np.ix_([i, j], [i, j])]
        return float(mean), float(g @ sub @ g)


def expected_softmax(mean: np.ndarray, cov: np.ndarray, index: int, readout: str = "gauss") -> float:
    """E[softmax(L)[index]] for L with the given mean [n] and covariance [n, n], by the read-out
    the estimator uses (see module docstring). Cost O(n²)."""
    mean = np.asarray(mean, dtype=np.float64)[None]
    cov = np.asarray(cov, dtype=np.float64)
    quad = lambda a: np.einsum("si,ij,sj->s", a, cov, a)  # noqa: E731
    return float(_readout(mean, np.diag(cov)[None], np.array([index]), quad, readout, order=2)[0][0])


def _gh():
    x, w = np.polynomial.hermite.hermgauss(_GH_NODES)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _readout(mu_L, var_L, m, quad, readout: str, order: int, counter: FlopCounter | None = None):
    """Per-stratum E[softmax(L)_m] (and its first-order value) from the logit means mu_L [S, n],
    diagonal variances var_L [S, n] and quad(a) -> aᵀ Σ_L a for a [S, n]."""
    S, n = mu_L.shape
    rows = np.arange(S)
    add = (lambda c, lab: counter.add(c, lab)) if counter is not None else (lambda c, lab: None)
    lm = mu_L[rows, m]
    if readout == "gauss":
        others = mu_L.copy()
        others[rows, m] = -np.inf
        top = others.max(axis=1, keepdims=True)
        e = np.exp(others - top)
        tot = e.sum(axis=1)
        qt = e / tot[:, None]  # softmax over j != m
        z0 = lm - (top[:, 0] + np.log(tot))
        add(S * (4 * n + 4), "readout")
        first = _sigmoid(z0)
        if order == 1:
            return first, first
        a = -qt
        a[rows, m] += 1.0
        var_z = np.maximum(quad(a), 0.0)
        corr = 0.5 * ((qt * var_L).sum(axis=1) - quad(qt)) if _LSE_CORRECTION else 0.0
        mz = z0 - corr
        x, w = _gh()
        vals = _sigmoid(mz[:, None] + np.sqrt(var_z)[:, None] * x[None, :]) @ w
        add(S * (2 * n + 6 + 4 * _GH_NODES), "readout")
        return vals, first
    if readout == "taylor":
        top = mu_L.max(axis=1, keepdims=True)
        e = np.exp(mu_L - top)
        p = e / e.sum(axis=1, keepdims=True)
        pm = p[rows, m]
        add(S * 4 * n, "readout")
        if order == 1:
            return pm, pm
        a = -p
        a[rows, m] += 1.0
        val = pm + 0.5 * pm * (quad(a) - (p * var_L).sum(axis=1) + quad(p))
        add(S * (2 * n + 6), "readout")
        return val, pm
    raise MaxkError(f"unknown read-out {readout!r}: choose one of {', '.join(READOUTS)}")


# ---------------------------------------------------------------- strata


def _strata(n: int, k: int, dist: str, max_copies: int | None):
    """Strata as arrays: m, q [S]; fixm [S, k] (non-query positions holding m), rest [S, k]
    (positions with a random token), size [S] (|S|), gamma [S] (finite-population factor
    1/(|S|−1) without replacement, 0 for i.i.d.), removed [S, 1] (q, removed from the population
    under ``distinct``; −1 = none),
    weight [S] exact probabilities; and the probability mass dropped (uniform, large k)."""
    last = k - 1
    eye = np.eye(k)
    if dist == "distinct":
        N = perm(n, k)
        ms = np.arange(max(k - 1, 0), n)
        # query = max: all k-1 other positions random, population [0, m)
        top = dict(m=ms, q=ms, fixm=np.zeros((len(ms), k)), rest=np.tile(1.0 - eye[last], (len(ms), 1)),
                   size=ms.astype(np.float64), removed=np.full((len(ms), 1), -1),
                   weight=np.array([perm(int(m), k - 1) / N for m in ms]))
        parts = [top]
        if k >= 2:
            mm, qq, pp = [], [], []
            for m in ms:
                if perm(int(m) - 1, k - 2) == 0:
                    continue
                g_q, g_p = np.meshgrid(np.arange(m), np.arange(last), indexing="ij")
                mm.append(np.full(g_q.size, m))
                qq.append(g_q.ravel())
                pp.append(g_p.ravel())
            if mm:
                mm, qq, pp = np.concatenate(mm), np.concatenate(qq), np.concatenate(pp)
                fix = eye[pp]
                parts.append(dict(m=mm, q=qq, fixm=fix, rest=1.0 - fix - eye[last][None], size=(mm - 1.0),
                                  removed=qq[:, None].copy(),
                                  weight=np.array([perm(max(m - 1, 0), k - 2) / N for m in range(n)])[mm]))
        st = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        st["gamma"] = 1.0 / np.maximum(st["size"] - 1.0, 1.0)
        return st, 0.0
    cmax = last if (max_copies is None and last <= 8) else (2 if max_copies is None else int(max_copies))
    pats = np.array([P for P in range(1 << last) if bin(P).count("1") <= cmax], dtype=np.int64)
    bits = ((pats[:, None] >> np.arange(last)[None, :]) & 1).astype(np.float64)  # [n_pat, last]
    fix_p = np.concatenate([bits, np.zeros((len(pats), 1))], axis=1)
    rest_p = np.concatenate([1.0 - bits, np.zeros((len(pats), 1))], axis=1)
    nr = rest_p.sum(axis=1)
    g_m, g_q, g_p = np.meshgrid(np.arange(n), np.arange(n), np.arange(len(pats)), indexing="ij")
    g_m, g_q, g_p = g_m.ravel(), g_q.ravel(), g_p.ravel()
    keep = (g_q <= g_m) & ~((g_q < g_m) & (pats[g_p] == 0))
    g_m, g_q, g_p = g_m[keep], g_q[keep], g_p[keep]
    weight = (g_m / n) ** nr[g_p] / float(n) ** (k - nr[g_p])
    keep = weight > 0
    g_m, g_q, g_p, weight = g_m[keep], g_q[keep], g_p[keep], weight[keep]
    pm_true = max_weights("uniform", n, k)
    cov_m = np.bincount(g_m, weights=weight, minlength=n)
    dropped = float(max(pm_true.sum() - cov_m.sum(), 0.0))
    if cmax < last:  # renormalise within each m to the exact P[max = m]
        weight = weight * (pm_true / np.where(cov_m > 0, cov_m, 1.0))[g_m]
    st = dict(m=g_m, q=g_q, fixm=fix_p[g_p], rest=rest_p[g_p], size=g_m.astype(np.float64),
              removed=np.full((len(g_m), 1), -1), weight=weight, gamma=np.zeros(len(g_m)))
    return st, dropped


def _comb(a, b):
    """Binomial coefficients C(a, b) as floats, elementwise (0 where b > a or b < 0)."""
    from scipy.special import comb

    return comb(a, b, exact=False)


def _refine(T: "_Tables", st: dict, dist: str, tau: float, max_heavy: int, counter: FlopCounter,
            heavy_rows: bool = True, prune_mass: float = 0.0):
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
    q, m, S = st["q"], st["m"], len(st["q"])
    k, n, H = T.k, T.n, T.H
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

    comb = _comb

    # "no heavy token drawn"
    rem0 = np.concatenate([Rold, heavy], axis=1)
    if dist == "distinct":
        p0 = comb(s_sz - nh, r) / comb(s_sz, r)
    else:
        p0 = ((s_sz - nh) / np.maximum(s_sz, 1.0)) ** r
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
            if dist == "distinct":
                pj = comb(s_sz[sel] - j, rj - 1) / comb(s_sz[sel], rj)
            else:
                pj = rj * (1.0 / s_sz[sel]) * ((s_sz[sel] - j) / s_sz[sel]) ** (rj - 1)
            tot_heavy[sel] += pj
            continue
        for J in range(k - 1):
            sel = np.nonzero(has & (rest[:, J] > 0))[0]
            if len(sel) == 0:
                continue
            rj = r[sel]
            if dist == "distinct":
                pj = comb(s_sz[sel] - j, rj - 1) / comb(s_sz[sel], rj) / rj
            else:
                pj = (1.0 / s_sz[sel]) * ((s_sz[sel] - j) / s_sz[sel]) ** (rj - 1)
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
    new = dict(m=m[b], q=q[b], fixm=st["fixm"][b], rest=cat["rest"][keep], size=size,
               removed=cat["removed"][keep], weight=st["weight"][b] * prob[keep],
               fixh_tok=cat["fixh_tok"][keep], fixh_pos=cat["fixh_pos"][keep])
    new["gamma"] = (1.0 / np.maximum(size - 1.0, 1.0)) if dist == "distinct" else np.zeros(len(b))
    if heavy_rows:
        return new
    nh = np.where(tot_heavy > 0, nh, 0)  # (uniform) strata kept unsplit have no heavy rows
    nh[lost] = 0
    return new, dict(heavy=heavy, nh=nh, tot=tot, r=r)


def _heavy_mean_field(T: "_Tables", st: dict, aux: dict, dist: str, readout: str,
                      counter: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
    """Mean propagation over the heavy sub-strata of ``_refine`` ("token h at position J is the
    heaviest drawn"), vectorised over J: per base stratum, Σ_{h, J} P(h, J) · softmax(μ_L)_m and the
    per-base probability mass covered, [S] each. The light tokens' population mean over the
    tokens lighter than h is the stratum's prefix sum minus the heavier tokens, accumulated along
    the heavy axis. Cost O(Σ_s n_heavy(s)·k·h·n)."""
    H, n, k = T.H, T.n, T.k
    heavy, nh, tot, r = aux["heavy"], aux["nh"], aux["tot"], aux["r"]
    S = len(st["m"])
    out = np.zeros(S)
    mass = np.zeros(S)
    last = k - 1
    pb, pjj = np.nonzero(np.arange(1, heavy.shape[1] + 1)[None, :] <= nh[:, None])
    pjj = pjj + 1  # pairs (base stratum, rank j of its heavy token)
    for c0 in range(0, len(pb), 2048):
        if True:
            b, j = pb[c0 : c0 + 2048], pjj[c0 : c0 + 2048]
            B = len(b)
            q, m = st["q"][b], st["m"][b]
            ht = heavy[b, j - 1]
            rest = st["rest"][b]
            size = st["size"][b] - j
            rj = r[b]
            sb = st["size"][b]
            if dist == "distinct":
                pj = _comb(sb - j, rj - 1) / _comb(sb, rj) / rj
            else:
                pj = (1.0 / sb) * ((sb - j) / sb) ** (rj - 1)
            pj = pj / tot[b]
            hv = np.where(np.arange(heavy.shape[1])[None, :] < j[:, None], heavy[b], -1)
            rem_tok = np.concatenate([st["removed"][b], hv], axis=1)
            logits = T.U[q][:, None, :].repeat(k, axis=1)  # [B, J, n]
            rows = np.arange(B)
            for h in range(H):
                al = T.alpha[h][q]  # [B, k]
                be = T.beta[h][q]  # [B, n]
                b1 = T.b1[h][q, m].copy()
                e1 = T.e1[h][q, m].copy()
                for c in range(rem_tok.shape[1]):
                    t = rem_tok[:, c]
                    ok = t >= 0
                    tt = np.where(ok, t, 0)
                    wt = np.where(ok, be[rows, tt], 0.0)
                    b1 -= wt
                    e1 -= wt[:, None] * T.E[h][tt]
                b1 /= np.maximum(size, 1.0)
                e1 /= np.maximum(size, 1.0)[:, None]
                aq = al[:, last] * be[rows, q]
                am = (st["fixm"][b] * al).sum(1)
                bm = be[rows, m]
                DF = aq + bm * am
                NF = (aq[:, None] * (T.E[h][q] + T.P[h][last][None])
                      + bm[:, None] * (am[:, None] * T.E[h][m] + (st["fixm"][b] * al) @ T.P[h]))
                aR = rest * al
                A = aR.sum(1)
                PR = aR @ T.P[h]
                bh = be[rows, ht]
                # heavy token at J: weight α_J β_h; the other rest positions' mean weight b1:
                # N_J = X + α_J (Y + Z P_J), D_J = DF + A b1 + α_J (β_h − b1)
                D = DF[:, None] + A[:, None] * b1[:, None] + al * (bh - b1)[:, None]  # [B, J]
                X = NF + A[:, None] * e1 + b1[:, None] * PR
                Y = bh[:, None] * T.E[h][ht] - e1
                inv = 1.0 / D
                N = (X[:, None, :] + al[:, :, None] * (Y[:, None, :] + (bh - b1)[:, None, None] * T.P[h][None]))
                logits += N * inv[:, :, None]
            top = logits.max(axis=2, keepdims=True)
            e = np.exp(logits - top)
            pm = e[rows, :, m] / e.sum(axis=2)  # [B, J]
            valid = rest > 0  # J must be a random position
            np.add.at(out, b, pj * np.where(valid, pm, 0.0).sum(1))  # b repeats across ranks j
            np.add.at(mass, b, pj * valid.sum(1))
            counter.add(B * (H * (8 * k * n + 4 * n * rem_tok.shape[1] + 6 * n + 4 * k) + 4 * k * n), "heavy_mean_field")
    return out, mass


# ---------------------------------------------------------------- prefix tables


class _Tables:
    """Per-head exponentiated scores and prefix sums over the key-token axis (per query token).

    beta[h]: [n_q, n_t] = exp(EQKE − row max); alpha[h]: [n_q, k] = exp(EQKP − row max).
    cum_* [.., n_q, n_t + 1(, n_o)]: Σ_{t < m} of β_h, β_h·EVOU_h, and for head pairs (h, g)
    β_h β_g, β_h β_g EVOU_h, β_h β_g EVOU_h EVOU_g. Cost O(h²·n³)."""

    def __init__(self, tab: CircuitTables, counter: FlopCounter):
        H, n, k = tab.n_heads, tab.n, tab.k
        self.H, self.n, self.k = H, n, k
        self.beta = np.exp(tab.eqke - tab.eqke.max(axis=2, keepdims=True))
        self.alpha = np.exp(tab.eqkp - tab.eqkp.max(axis=2, keepdims=True))
        counter.add(H * (2 * n * n + 2 * n * k), "exp_scores")
        self.E, self.P, self.U = tab.evou, tab.pvou, tab.eupu

        def cum(x):  # prefix sums along the token axis (axis 1 of [q, t, ...]) with a leading 0
            z = np.zeros((x.shape[0], 1) + x.shape[2:])
            counter.add(x.size, "prefix")
            return np.concatenate([z, np.cumsum(x, axis=1)], axis=1)

        self.b1 = [cum(self.beta[h]) for h in range(H)]
        self.e1 = [cum(self.beta[h][:, :, None] * self.E[h][None]) for h in range(H)]
        counter.add(H * n * n * n, "prefix")
        self.bb, self.be, self.bee = {}, {}, {}
        for h in range(H):
            for g in range(H):
                bb = self.beta[h] * self.beta[g]
                self.bb[h, g] = cum(bb)
                self.be[h, g] = cum(bb[:, :, None] * self.E[h][None])
                self.bee[h, g] = cum(bb[:, :, None] * (self.E[h] * self.E[g])[None])
                counter.add(n * n + 3 * n * n * n, "prefix")


def _pop(cumt, term, st):
    """Population mean over a stratum's token set of a prefix-summed quantity:
    (cum[q, m] − Σ_{t removed} term(t)) / |S|. The set is [0, m) minus the tokens in
    ``st["removed"]`` [S, R] (−1 = none): the query under ``distinct``, heavy tokens conditioned
    on separately. term(t [S]) -> the summand at token t per stratum, [S, ...]."""
    q, m, rem, size = st["q"], st["m"], st["removed"], st["size"]
    v = cumt[q, m].copy()
    for c in range(rem.shape[1]):
        tok = rem[:, c]
        ok = tok >= 0
        if ok.any():
            t = term(np.where(ok, tok, 0))
            v -= np.where(ok.reshape((-1,) + (1,) * (v.ndim - 1)), t, 0.0)
    return v / np.maximum(size, 1.0).reshape((-1,) + (1,) * (v.ndim - 1))


def _var_sum(T0, T1, T2, W, G, CUU, CUV, CVV, gamma, H):
    """Variance of Σ_i f_i with f_i(t) = Σ_h w_hi (U_h(t) + c_hi V_h(t)), the positions' tokens
    drawn from S (i.i.d.: gamma = 0; without replacement: gamma = 1/(|S|−1)):
    (1+γ) Σ_i Var_S(f_i) − γ Var_S(Σ_i f_i). Inputs indexed [h, g] hold, per stratum (and output),
    T0 = Σ_i w_h w_g, T1 = Σ_i w_h w_g c_g, T2 = Σ_i w_h w_g c_h c_g, W = Σ_i w_h, G = Σ_i w_h c_h
    and the population covariances CUU = Cov(U_h, U_g), CUV = Cov(U_h, V_g), CVV = Cov(V_h, V_g)."""
    per, tot = 0.0, 0.0
    for h in range(H):
        for g in range(H):
            per = per + T0[h, g] * CUU[h, g] + 2 * T1[h, g] * CUV[h, g] + T2[h, g] * CVV[h, g]
            tot = tot + W[h] * W[g] * CUU[h, g] + 2 * W[h] * G[g] * CUV[h, g] + G[h] * G[g] * CVV[h, g]
    gam = gamma.reshape((-1,) + (1,) * (np.ndim(per) - 1))
    return (1 + gam) * per - gam * tot


def _bc(x, like):
    """Broadcast a per-stratum [S] array against [S, ...]."""
    return x.reshape((-1,) + (1,) * (like.ndim - 1))


def _block_moments(T: _Tables, st: dict, counter: FlopCounter) -> dict:
    """Exact per-stratum moments of the attention sums for a block of strata, per head h:
    mu_D [S], var_D [S], mu_N [S, n], cov_ND [S, n] (Cov(N_o, D)), the population moments of the
    token functions and the position weights the later steps reuse."""
    H, n, k = T.H, T.n, T.k
    q, m, S = st["q"], st["m"], len(st["q"])
    fixm, rest, gamma = st["fixm"], st["rest"], st["gamma"]
    out = {"heads": []}
    last = k - 1
    for h in range(H):
        be_q = T.beta[h][q]  # [S, n_t]
        al = T.alpha[h][q]  # [S, k]
        aq = al[:, last] * be_q[np.arange(S), q]
        bm = be_q[np.arange(S), m]
        am = (fixm * al).sum(axis=1)
        pm_fix = (fixm * al) @ T.P[h]  # [S, n]
        DF = aq + bm * am
        NF = aq[:, None] * (T.E[h][q] + T.P[h][last][None]) + bm[:, None] * (am[:, None] * T.E[h][m] + pm_fix)
        if "fixh_tok" in st:  # a heavy token conditioned to sit at position fixh_pos
            ht, hp = st["fixh_tok"], st["fixh_pos"]
            on = ht >= 0
            hw = np.where(on, al[np.arange(S), hp] * be_q[np.arange(S), np.where(on, ht, 0)], 0.0)
            DF = DF + hw
            NF = NF + hw[:, None] * (T.E[h][np.where(on, ht, 0)] + T.P[h][hp])
        aR = rest * al
        A = aR.sum(axis=1)
        A2 = (aR * aR).sum(axis=1)
        PR = aR @ T.P[h]
        P2R = (aR * aR) @ T.P[h]
        b1 = _pop(T.b1[h], lambda t: T.beta[h][q, t], st)
        e1 = _pop(T.e1[h], lambda t: T.beta[h][q, t][:, None] * T.E[h][t], st)
        bb = _pop(T.bb[h, h], lambda t: T.beta[h][q, t] ** 2, st)
        be = _pop(T.be[h, h], lambda t: (T.beta[h][q, t] ** 2)[:, None] * T.E[h][t], st)
        mu_D = DF + A * b1
        mu_N = NF + A[:, None] * e1 + b1[:, None] * PR
        CVV = bb - b1 * b1
        CUV = be - e1 * b1[:, None]
        var_D = CVV * (A2 + gamma * (A2 - A * A))
        cov_ND = ((1 + gamma)[:, None] * (A2[:, None] * CUV + P2R * CVV[:, None])
                  - gamma[:, None] * (A[:, None] ** 2 * CUV + A[:, None] * PR * CVV[:, None]))
        counter.add(S * (12 * k * n + 30 * n + 8 * k + 20), "stratum_moments")
        out["heads"].append(dict(mu_D=mu_D, var_D=var_D, mu_N=mu_N, cov_ND=cov_ND, aR=aR, b1=b1, e1=e1))
    return out


def stratum_moments(tables: CircuitTables, dist: str, max_copies: int | None = None, *, tau: float = 0.05,
                    max_heavy: int = 0) -> tuple[dict, list[dict]]:
    """The strata and, per head, the exact means and (co)variances of the attention denominator D
    and numerator N in every stratum (mu_D, var_D, mu_N, cov_ND; see ``_block_moments``), plus the
    diagonal Var(N_o) (var_N). Exposed for tests: these are exact, not approximations."""
    check_distribution(dist, tables.n, tables.k)
    counter = FlopCounter()
    T = _Tables(tables, counter)
    st, _ = _strata(tables.n, tables.k, dist, max_copies)
    if max_heavy > 0:
        st = _refine(T, st, dist, tau, max_heavy, counter)
    mom = _block_moments(T, st, counter)
    q = st["q"]
    for h, hd in enumerate(mom["heads"]):
        # Var(N_o): f_i = α_i β (E_o + P_io): w = α, c = P (no normalisation, no ratio)
        aR = hd["aR"]
        b1, e1 = hd["b1"], hd["e1"]
        bee = _pop(T.bee[h, h], lambda t: (T.beta[h][q, t] ** 2)[:, None] * T.E[h][t] ** 2, st)
        bb = _pop(T.bb[h, h], lambda t: T.beta[h][q, t] ** 2, st)
        be = _pop(T.be[h, h], lambda t: (T.beta[h][q, t] ** 2)[:, None] * T.E[h][t], st)
        CUU = (bee - e1 * e1)[None, None]
        CUV = (be - e1 * b1[:, None])[None, None]
        CVV = (bb - b1 * b1)[:, None][None, None]
        T0 = (aR * aR).sum(1)[:, None]
        T1 = (aR * aR) @ T.P[h]
        T2 = (aR * aR) @ (T.P[h] ** 2)
        W = aR.sum(1)[:, None]
        G = aR @ T.P[h]
        hd["var_N"] = _var_sum({(0, 0): T0}, {(0, 0): T1}, {(0, 0): T2}, [W], [G],
                               {(0, 0): CUU[0, 0]}, {(0, 0): CUV[0, 0]}, {(0, 0): CVV[0, 0]}, st["gamma"], 1)
    return st, mom["heads"]


# ---------------------------------------------------------------- the estimator


def _block(T: _Tables, st: dict, readout: str, order: int, counter: FlopCounter):
    """Per-stratum estimates (second order, first order) for one block of strata."""
    H, n, k = T.H, T.n, T.k
    q, m, S = st["q"], st["m"], len(st["q"])
    gamma = st["gamma"]
    mom = _block_moments(T, st, counter)
    hs = mom["heads"]
    mu_L = T.U[q].copy()
    r = []
    for h in range(H):
        d = hs[h]
        rh = d["mu_N"] / d["mu_D"][:, None]
        r.append(rh)
        mu_L += rh
        if order >= 2 and _RATIO_CORRECTION:
            mu_L += (rh * d["var_D"][:, None] - d["cov_ND"]) / (d["mu_D"] ** 2)[:, None]
    counter.add(S * n * H * (order * 6), "logit_mean")
    if order == 1:
        quad = lambda a: np.zeros(S)  # noqa: E731
        return _readout(mu_L, np.zeros_like(mu_L), m, quad, readout, 1, counter)

    # linearised covariance of L: δL_o = Σ_h (δN_ho − r_ho δD_h)/μ_Dh, per position
    # f_i(t) = Σ_h w_hi β_h(t) (g_h(t) + c_hi), w_hi = α_hi/μ_Dh.
    w = [hs[h]["aR"] / hs[h]["mu_D"][:, None] for h in range(H)]  # [S, k]
    b1 = [hs[h]["b1"] for h in range(H)]
    e1 = [hs[h]["e1"] for h in range(H)]
    pairs = [(h, g) for h in range(H) for g in range(H)]
    bb = {(h, g): _pop(T.bb[h, g], lambda t: T.beta[h][q, t] * T.beta[g][q, t], st) for h, g in pairs}
    be = {(h, g): _pop(T.be[h, g], lambda t: (T.beta[h][q, t] * T.beta[g][q, t])[:, None] * T.E[h][t], st) for h, g in pairs}
    CVV = {(h, g): bb[h, g] - b1[h] * b1[g] for h, g in pairs}

    # diagonal Var(L_o) for every output o
    bee = {(h, g): _pop(T.bee[h, g], lambda t: (T.beta[h][q, t] * T.beta[g][q, t])[:, None] * (T.E[h][t] * T.E[g][t]), st)
           for h, g in pairs}
    T0, T1, T2, CUU, CUV, CVVo = {}, {}, {}, {}, {}, {}
    Y = {(h, g): (w[h] * w[g]) @ T.P[g] for h, g in pairs}  # Σ_i w_h w_g P_g,io
    for h, g in pairs:
        t0 = (w[h] * w[g]).sum(1)[:, None]
        T0[h, g] = t0
        T1[h, g] = Y[h, g] - r[g] * t0
        Z = (w[h] * w[g]) @ (T.P[h] * T.P[g])
        T2[h, g] = Z - r[g] * Y[g, h] - r[h] * Y[h, g] + r[h] * r[g] * t0
        CUU[h, g] = bee[h, g] - e1[h] * e1[g]
        CUV[h, g] = be[h, g] - e1[h] * b1[g][:, None]
        CVVo[h, g] = CVV[h, g][:, None]
    W = [w[h].sum(1)[:, None] for h in range(H)]
    G = [w[h] @ T.P[h] - r[h] * W[h] for h in range(H)]
    var_L = np.maximum(_var_sum(T0, T1, T2, W, G, CUU, CUV, CVVo, gamma, H), 0.0)
    counter.add(S * len(pairs) * (4 * k * n + 20 * n), "logit_var_diag")

    # token mask of the population S per stratum, for projections onto stratum-specific vectors
    toks = np.arange(n)[None, :]
    mask = toks < m[:, None]
    for c in range(st["removed"].shape[1]):
        mask &= toks != st["removed"][:, c : c + 1]
    inv_s = 1.0 / np.maximum(st["size"], 1.0)
    beta_q = [T.beta[h][q] for h in range(H)]  # [S, n_t]

    def quad(a):
        """aᵀ Σ_L a for a [S, n]: the variance of the linear functional a·δL."""
        g = [a @ T.E[h].T for h in range(H)]  # g_h[s, t] = a · EVOU_h[t]
        ea = [(a * e1[h]).sum(1) for h in range(H)]
        c = [a @ T.P[h].T - (a * r[h]).sum(1)[:, None] for h in range(H)]  # [S, k]
        t0, t1, t2, cuu, cuv = {}, {}, {}, {}, {}
        for h, gg in pairs:
            ww = w[h] * w[gg]
            t0[h, gg] = ww.sum(1)
            t1[h, gg] = (ww * c[gg]).sum(1)
            t2[h, gg] = (ww * c[h] * c[gg]).sum(1)
            bbg = beta_q[h] * beta_q[gg] * mask
            cuu[h, gg] = (bbg * g[h] * g[gg]).sum(1) * inv_s - ea[h] * ea[gg]
            cuv[h, gg] = (a * be[h, gg]).sum(1) - ea[h] * b1[gg]
        Wq = [w[h].sum(1) for h in range(H)]
        Gq = [(w[h] * c[h]).sum(1) for h in range(H)]
        counter.add(S * H * (2 * n * n + 2 * n * k + 4 * n) + S * len(pairs) * (6 * n + 8 * k), "logit_quad")
        return _var_sum(t0, t1, t2, Wq, Gq, cuu, cuv, CVV, gamma, H)

    return _readout(mu_L, var_L, m, quad, readout, 2, counter)


def cumulant_propagation(tables: CircuitTables, dist: str, *, readout: str = "gauss", order: int = 2,
                         tau: float = 0.05, max_heavy: int = 8, heavy_order: int = 1,
                         prune_mass: float = 1e-4, max_copies: int | None = None,
                         counter: FlopCounter | None = None) -> dict:
    """Covariance propagation of expected soft accuracy (see module docstring).

    Returns a dict: estimate, first_order (mean propagation over the same strata), per_max [n]
    (conditional estimates given max = m, NaN where P[max = m] = 0), n_strata, dropped_mass.
    Cost O(h²·n³ + strata·h²·n·(n + k)) FLOPs, added to ``counter``."""
    check_distribution(dist, tables.n, tables.k)
    if readout not in READOUTS:
        raise MaxkError(f"unknown read-out {readout!r}: choose one of {', '.join(READOUTS)}")
    if heavy_order not in (1, 2):
        raise MaxkError(f"heavy_order must be 1 or 2, got {heavy_order!r}")
    if order not in (1, 2):
        raise MaxkError(f"order must be 1 (mean propagation) or 2 (covariance propagation), got {order!r}")
    if isinstance(max_heavy, bool) or not isinstance(max_heavy, (int, np.integer)) or max_heavy < 0:
        raise MaxkError(f"max_heavy must be a non-negative integer, got {max_heavy!r}")
    if not (isinstance(prune_mass, (int, float)) and 0 <= prune_mass < 1):
        raise MaxkError(f"prune_mass must be in [0, 1), got {prune_mass!r}")
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise MaxkError(f"tau must be positive, got {tau!r}")
    if max_copies is not None and (isinstance(max_copies, bool) or not isinstance(max_copies, (int, np.integer))
                                   or max_copies < 1):
        raise MaxkError(f"max_copies must be a positive integer, got {max_copies!r}")
    counter = FlopCounter() if counter is None else counter
    n = tables.n
    T = _Tables(tables, counter)
    st, dropped = _strata(n, tables.k, dist, max_copies)
    aux = None
    if max_heavy > 0 and heavy_order == 1 and order == 2 and not _GENERIC_HEAVY:
        st_base = st
        st, aux = _refine(T, st, dist, tau, max_heavy, counter, heavy_rows=False, prune_mass=prune_mass)
    elif max_heavy > 0:
        st = _refine(T, st, dist, tau, max_heavy, counter, prune_mass=prune_mass)
    S = len(st["m"])
    est2 = np.empty(S)
    est1 = np.empty(S)
    # sub-strata with a heavy token fixed are dominated by it: mean propagation there (heavy_order)
    heavy = st["fixh_tok"] >= 0 if "fixh_tok" in st else np.zeros(S, bool)
    for part, o in ((np.nonzero(~heavy)[0], order), (np.nonzero(heavy)[0], min(order, heavy_order))):
        for s0 in range(0, len(part), _CHUNK):
            idx = part[s0 : s0 + _CHUNK]
            sub = {key: v[idx] for key, v in st.items()}
            with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
                est2[idx], est1[idx] = _block(T, sub, readout, o, counter)
    if aux is not None:  # heavy sub-strata by vectorised mean propagation
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            h_est, h_mass = _heavy_mean_field(T, st_base, aux, dist, readout, counter)
        keep = h_mass > 0
        extra_w = st_base["weight"][keep]
        st = {key: v for key, v in st.items()}
        st["m"] = np.concatenate([st["m"], st_base["m"][keep]])
        est2 = np.concatenate([est2, h_est[keep] / h_mass[keep]])
        est1 = np.concatenate([est1, h_est[keep] / h_mass[keep]])
        st["weight"] = np.concatenate([st["weight"], extra_w * h_mass[keep]])
        S = len(est2)
    wt = st["weight"]
    if not (np.isfinite(est2).all() and np.isfinite(est1).all()):
        raise MaxkError("cumulant propagation: attention weights under- or overflow float64 "
                        "(a query's attention scores span more than about 350)")
    counter.add(4 * S, "sum")
    est = float(np.clip(est2, 0.0, 1.0) @ wt)
    pw = np.bincount(st["m"], weights=wt, minlength=n)
    per_max = np.bincount(st["m"], weights=wt * np.clip(est2, 0.0, 1.0), minlength=n)
    per_max = np.where(pw > 0, per_max / np.where(pw > 0, pw, 1.0), np.nan)
    return dict(estimate=est, first_order=float(est1 @ wt), per_max=per_max, n_strata=S, dropped_mass=dropped)


def cumulant(tables: CircuitTables, dist: str, *, counter: FlopCounter, rng: np.random.Generator,
             readout: str = "gauss", order: int = 2, tau: float = 0.05, max_heavy: int = 8,
             heavy_order: int = 1, prune_mass: float = 1e-4, max_copies: int | None = None) -> Estimate:
    """Registry entry ``cumulant``: covariance propagation (``order=2``; ``order=1`` is mean
    propagation over the same strata). ``readout``: "gauss" (Gaussian margin, Gauss–Hermite) or
    "taylor" (second-order Taylor of the output softmax). Deterministic (``rng`` unused).

    ``tau``/``max_heavy``: heavy-token conditioning (see ``_refine``; ``max_heavy=0`` turns it off:
    somewhat faster, much less accurate on noised models); ``prune_mass``: strata of least total
    probability left unsplit; ``heavy_order``: order used inside the
    heavy sub-strata. spread: None — the size of the second-order correction (in ``extra``) was
    measured to be far smaller than the actual error, so it is not offered as a predictive spread.
    Cost O(h²·n³ + strata·h²·n·(n + k)); see the module docstring for measured figures."""
    res = cumulant_propagation(tables, dist, readout=readout, order=order, tau=tau, max_heavy=max_heavy,
                               heavy_order=heavy_order, prune_mass=prune_mass, max_copies=max_copies,
                               counter=counter)
    extra = {"readout": readout, "order": order, "first_order": res["first_order"],
             "second_order_correction": res["estimate"] - res["first_order"], "n_strata": res["n_strata"],
             "dropped_mass": res["dropped_mass"], "max_heavy": max_heavy, "tau": tau,
             "prune_mass": prune_mass}
    return Estimate("cumulant", res["estimate"], 0, 0.0, dist, spread=None, extra=extra)
