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
   from prefix sums over the token axis of β, β·EVOU, β²·EVOU and β²·EVOU² (per query token),
   minus the tokens a stratum excludes (``_Population``). Where the excluded (heavy) tokens outweigh
   the rest so far that the difference would lose the population's second moments to rounding
   (bound: ε·Σ_{t<m} β²·Σ_i α_i²·scale² ≥ ``_DIRECT_TOL``·μ_D², i.e. an error of ≈ 10⁻⁶ in a logit
   variance; up to a third of the strata of the noisiest models), the population is summed
   token by token instead. (Before this, such strata produced arbitrary values, e.g. 0.997 for a
   stratum whose exact conditional soft accuracy is 0.044.)
3. **Heavy tokens conditioned on exactly** (``_refine``). A token below m whose attention weight
   can rival the max's (common in noised models, whose EQKE rows are not monotone) appears
   rarely but then dominates N/D — a law no Gaussian closure represents: measured, without this
   step the estimate is off by up to 0.3 on noised models. Each stratum is split on its heaviest
   drawn token (up to ``max_heavy`` candidates with weight ≥ ``tau`` × the fixed tokens'):
   "none drawn" keeps covariance propagation over the light tokens, "token h at position J is
   the heaviest drawn" fixes h and propagates over the lighter ones (mean propagation there by
   default, ``heavy_order``), with exact sub-stratum probabilities. The default cap of 12 heavy
   tokens per stratum matters: with 8 the k = 4 family's RMSE was 5× larger (tokens beyond the cap
   stay in the Gaussian closure); 16 or 24 changed nothing.
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

Cost: O(h²·n³) for the prefix tables, then O(strata·h²·n·(n + k)) (the n² term: one product of
the read-out direction with EVOU per stratum and head, shared by both quadratic forms). For
n = 64, k = 10 (distinct) there are 1.8·10⁴ strata; heavy-token conditioning adds up to
max_heavy·(k − 2) mean-propagation sub-strata per stratum, each costing 8 operations per output
and position (``_heavy_mean_field``): 2–5·10⁵ logit rows on the noised k = 10 models. Measured
with the defaults: 5.7–9.3·10⁸ counted FLOPs (mean 7.6·10⁸) and 0.2–0.4 s per estimate on the
2-core machine (k = 4 family: 3.5·10⁸, 0.15–0.2 s). All products run single-threaded through torch
(``_mm``): numpy's OpenBLAS threads made them several times slower whenever the other core was
busy.

The module also holds a small general covariance-propagation engine (``Moments`` and the
functions after it) used by the tests to check the propagation rules against closed forms.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import perm

import numpy as np
import torch
from scipy.sparse import csr_matrix

from ..circuits import CircuitTables
from ..distributions import Distribution, get_distribution, resolve
from ..errors import MaxkError
from ..flops import FlopCounter
from ..torch_threads import single_threaded
from .base import EstimateValue

READOUTS = ("gauss", "taylor")
_GH_NODES = 24
_CHUNK = 4096  # strata per block: bounded memory
_HEAVY_CHUNK = 4096  # heavy pairs per chunk of _heavy_mean_field
_HEAVY_SUB = 512  # heavy pairs per [pairs, positions, n] margin tensor (about cache-sized)
_GENERIC_HEAVY = False
_EPS = float(np.finfo(np.float64).eps)
_DIRECT_TOL = 1e-6  # tolerated rounding error of prefix-sum population moments (see _block_moments)
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
    e_m = np.eye(cov.shape[0])[[index]]
    quad2 = lambda p: (quad(e_m - p), quad(p))  # noqa: E731
    return float(_readout(mean, np.diag(cov)[None], np.array([index]), quad2, readout, order=2)[0][0])


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for float64 arrays through torch (single-threaded inside ``single_threaded``)."""
    ta = torch.from_numpy(a if a.flags.writeable else a.copy())
    tb = torch.from_numpy(b if b.flags.writeable else b.copy())
    return torch.matmul(ta, tb).numpy()


def _gh():
    x, w = np.polynomial.hermite.hermgauss(_GH_NODES)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _readout(mu_L, var_L, m, quad2, readout: str, order: int, counter: FlopCounter | None = None):
    """Per-stratum E[softmax(L)_m] (and its first-order value) from the logit means mu_L [S, n],
    diagonal variances var_L [S, n] and quad2(p) -> (aᵀ Σ_L a for a = e_m − p, pᵀ Σ_L p), p [S, n]
    (both forms the read-outs need; var_L and quad2 are unused with ``order=1``)."""
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
        q_a, q_p = quad2(qt)  # a = e_m − qt: the margin's linear part
        var_z = np.maximum(q_a, 0.0)
        corr = 0.5 * ((qt * var_L).sum(axis=1) - q_p) if _LSE_CORRECTION else 0.0
        mz = z0 - corr
        x, w = _gh()
        vals = _mm(_sigmoid(mz[:, None] + np.sqrt(var_z)[:, None] * x[None, :]), w)
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
        q_a, q_p = quad2(p)
        val = pm + 0.5 * pm * (q_a - (p * var_L).sum(axis=1) + q_p)
        add(S * (2 * n + 6), "readout")
        return val, pm
    raise MaxkError(f"unknown read-out {readout!r}: choose one of {', '.join(READOUTS)}")


# ---------------------------------------------------------------- strata


def _strata(n: int, k: int, dist: str | Distribution, max_copies: int | None):
    """Strata by max, query and the free positions holding the max, with exact weights:
    ``Distribution.fixed_max_strata``."""
    return get_distribution(dist).fixed_max_strata(n, k, max_copies)


def _refine(T: "_Tables", st: dict, dist: str | Distribution, tau: float, max_heavy: int, counter: FlopCounter,
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
    new = dict(m=m[b], q=q[b], fixm=st["fixm"][b], rest=cat["rest"][keep], size=size,
               removed=cat["removed"][keep], weight=st["weight"][b] * prob[keep],
               fixh_tok=cat["fixh_tok"][keep], fixh_pos=cat["fixh_pos"][keep])
    new["gamma"] = dist.pair_covariance_factor(size)
    if heavy_rows:
        return new
    nh = np.where(tot_heavy > 0, nh, 0)  # (uniform) strata kept unsplit have no heavy rows
    nh[lost] = 0
    return new, dict(heavy=heavy, nh=nh, tot=tot, r=r)


def _heavy_mean_field(T: "_Tables", st: dict, aux: dict, dist: str | Distribution, readout: str,
                      counter: FlopCounter) -> tuple[np.ndarray, np.ndarray]:
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
    stratum's set of random positions so that only those J are formed.
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
                    rem_bad = np.concatenate([st["removed"][b][pb[bad]],
                                              np.where(np.arange(MH)[None, :] <= pr[bad, None], hv[pb[bad]], -1)], axis=1)
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
                counter.add(Bb * (2 * k * n + 2 * nJ * n + 6 * n + st["removed"].shape[1] * (2 * n + 1) + MH + 2 * k + nJ + 4)
                            + P_ * ((14 if h == 0 else 10) * n + 9 * nJ + 17), "heavy_mean_field")
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
                    z.add_(Y[s0:e0, None, :]).mul_(alp[s0:e0, :, None]).add_(X[s0:e0, None, :]).mul_(inv[s0:e0, :, None])
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
        self.bb, self.be, self.bee, self.EE, self.PP = {}, {}, {}, {}, {}
        for h in range(H):
            for g in range(H):
                bb = self.beta[h] * self.beta[g]
                self.EE[h, g] = self.E[h] * self.E[g]
                self.PP[h, g] = self.P[h] * self.P[g]
                self.bb[h, g] = cum(bb)
                self.be[h, g] = cum(bb[:, :, None] * self.E[h][None])
                self.bee[h, g] = cum(bb[:, :, None] * self.EE[h, g][None])
                counter.add(2 * n * n + k * n + 2 * n * n * n, "prefix")


def _population_mask(n: int, m: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """[S, n] bool: token t is in the population [0, m) minus the tokens in ``removed`` [S, R] (−1 = none)."""
    mask = np.arange(n)[None, :] < m[:, None]
    r, c = np.nonzero(removed >= 0)
    mask[r, removed[r, c]] = False
    return mask


class _Population:
    """The token population of every stratum of a block: [0, m) minus the tokens in
    ``st["removed"]`` [S, R] (−1 = none: the query under ``distinct``, heavy tokens conditioned on
    separately). A population mean of a token function f is (cum_f[q, m] − Σ_{t removed} f(t)) / |S|
    from f's prefix sums; the removed tokens form a sparse [S, n] matrix (≤ R entries a row), so a
    vector-valued f(t) = w(t)·M[t] costs 2·nnz·n_o for the removal.

    The difference loses precision when the removed (heavy) tokens outweigh the rest by many orders
    of magnitude — its rounding error is ε·cum, which for second moments (β², β²·EVOU²) can exceed
    the population's own moments entirely. Strata passed to ``direct`` (see ``_block_moments``) are
    instead summed token by token over their population, once per distinct (q, m, removed set):
    2·n·n_o per vector quantity."""

    def __init__(self, T: "_Tables", st: dict, counter: FlopCounter):
        q, m, rem = st["q"], st["m"], st["removed"]
        self.T, self.q, self.m, self.rem = T, q, m, rem
        self.S, self.n, self.counter = len(q), T.n, counter
        ok = rem >= 0
        self.rows, cols = np.nonzero(ok)  # row-major: sorted by stratum
        self.tok = rem[self.rows, cols]
        self.indptr = np.concatenate([[0], np.cumsum(ok.sum(axis=1))])
        self.inv = 1.0 / np.maximum(st["size"], 1.0)
        self.beta = [T.beta[h][q[self.rows], self.tok] for h in range(T.H)]  # β_h(q, t), t removed
        self.F = np.zeros(0, dtype=np.int64)

    def direct(self, rows: np.ndarray) -> None:
        """Sum the populations of strata ``rows`` token by token from now on."""
        self.F = rows
        if len(rows) == 0:
            return
        key = np.concatenate([self.q[rows, None], self.m[rows, None], np.sort(self.rem[rows], axis=1)], axis=1)
        _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
        u = rows[first]
        self.F_inv = inv.ravel()
        self.F_q = self.q[u]
        self.F_mask = _population_mask(self.n, self.m[u], self.rem[u])
        self.F_invsize = self.inv[u]

    def _scalar(self, cum, w, tw):
        v = cum[self.q, self.m] - np.bincount(self.rows, weights=w, minlength=self.S)
        v *= self.inv
        self.counter.add(len(w) + 2 * self.S, "population")
        if len(self.F):
            d = np.where(self.F_mask, tw(self.F_q), 0.0).sum(axis=1) * self.F_invsize
            v[self.F] = d[self.F_inv]
            self.counter.add(2 * d.size * self.n, "population")
        return v

    def _vector(self, cum, w, M, tw):
        R = csr_matrix((w, self.tok, self.indptr), shape=(self.S, self.n))
        v = cum[self.q, self.m] - R @ M
        v *= self.inv[:, None]
        no = M.shape[1]
        self.counter.add(2 * len(w) * no + 2 * self.S * no, "population")
        if len(self.F):
            d = _mm(np.where(self.F_mask, tw(self.F_q), 0.0), M) * self.F_invsize[:, None]
            v[self.F] = d[self.F_inv]
            self.counter.add(len(d) * (2 * self.n * no + self.n + no), "population")
        return v

    def _w(self, h, g):
        if g is None:
            return self.beta[h]
        self.counter.add(len(self.tok), "population")
        return self.beta[h] * self.beta[g]

    def _tw(self, h, g):
        T = self.T
        return (lambda qu: T.beta[h][qu]) if g is None else (lambda qu: T.beta[h][qu] * T.beta[g][qu])

    def b1(self, h):
        """E_S[β_h] [S]."""
        return self._scalar(self.T.b1[h], self._w(h, None), self._tw(h, None))

    def e1(self, h):
        """E_S[β_h·EVOU_h] [S, n]."""
        return self._vector(self.T.e1[h], self._w(h, None), self.T.E[h], self._tw(h, None))

    def bb(self, h, g):
        """E_S[β_h β_g] [S]."""
        return self._scalar(self.T.bb[h, g], self._w(h, g), self._tw(h, g))

    def be(self, h, g):
        """E_S[β_h β_g EVOU_h] [S, n]."""
        return self._vector(self.T.be[h, g], self._w(h, g), self.T.E[h], self._tw(h, g))

    def bee(self, h, g):
        """E_S[β_h β_g EVOU_h EVOU_g] [S, n]."""
        return self._vector(self.T.bee[h, g], self._w(h, g), self.T.EE[h, g], self._tw(h, g))

    def mask(self) -> np.ndarray:
        """[S, n] bool: token t is in the stratum's population."""
        mask = np.arange(self.n)[None, :] < self.m[:, None]
        mask[self.rows, self.tok] = False
        return mask


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


def _block_moments(T: _Tables, st: dict, counter: FlopCounter) -> dict:
    """Exact per-stratum moments of the attention sums for a block of strata, per head h:
    mu_D [S], var_D [S], mu_N [S, n], cov_ND [S, n] (Cov(N_o, D)), the population moments of the
    token functions and the position weights the later steps reuse; and the block's population.

    Strata whose second moments the prefix-sum differences could not resolve — rounding error
    ε·Σ_{t<m} β_h² · Σ_i α_i² · scale_h² ≥ ``_DIRECT_TOL``·μ_D² (scale_h = 1 + max|EVOU_h| + max|PVOU_h|
    bounds the logit-scale factors), i.e. an error of the logits' variance above ≈ ``_DIRECT_TOL``
    — have their populations summed directly (``_Population.direct``)."""
    H, n, k = T.H, T.n, T.k
    q, m, S = st["q"], st["m"], len(st["q"])
    fixm, rest, gamma = st["fixm"], st["rest"], st["gamma"]
    pop = _Population(T, st, counter)
    heads = []
    last = k - 1
    rows = np.arange(S)
    bad = np.zeros(S, dtype=bool)
    for h in range(H):
        E, P = T.E[h], T.P[h]
        be_q = T.beta[h][q]  # [S, n_t]
        al = T.alpha[h][q]  # [S, k]
        aq = al[:, last] * be_q[rows, q]
        bm = be_q[rows, m]
        afix = fixm * al
        am = afix.sum(axis=1)
        DF = aq + bm * am
        NF = aq[:, None] * (E[q] + P[last][None]) + bm[:, None] * (am[:, None] * E[m] + _mm(afix, P))
        if "fixh_tok" in st:  # a heavy token conditioned to sit at position fixh_pos
            ht, hp = st["fixh_tok"], st["fixh_pos"]
            on = ht >= 0
            hw = np.where(on, al[rows, hp] * be_q[rows, np.where(on, ht, 0)], 0.0)
            DF = DF + hw
            NF = NF + hw[:, None] * (E[np.where(on, ht, 0)] + P[hp])
            counter.add(S * (3 * n + 2), "stratum_moments")
        aR = rest * al
        aR2 = aR * aR
        A = aR.sum(axis=1)
        A2 = aR2.sum(axis=1)
        scale = 1.0 + np.abs(E).max() + np.abs(P).max()
        muD0 = DF + A * pop.b1(h)
        bad |= _EPS * T.bb[h, h][q, m] * A2 * scale**2 > _DIRECT_TOL * muD0**2
        counter.add(S * (2 * k * n + 6 * n + 6 * k + 12), "stratum_moments")
        heads.append(dict(DF=DF, NF=NF, aR=aR, aR2=aR2, A=A, A2=A2, be_q=be_q))
    pop.direct(np.nonzero(bad)[0])
    for h in range(H):
        d = heads[h]
        DF, NF, aR, aR2, A, A2 = d.pop("DF"), d.pop("NF"), d["aR"], d.pop("aR2"), d.pop("A"), d.pop("A2")
        PR = _mm(aR, T.P[h])
        P2R = _mm(aR2, T.P[h])
        b1, e1, bb, be = pop.b1(h), pop.e1(h), pop.bb(h, h), pop.be(h, h)
        mu_D = DF + A * b1
        mu_N = NF + A[:, None] * e1 + b1[:, None] * PR
        CVV = bb - b1 * b1
        CUV = be - e1 * b1[:, None]
        var_D = CVV * (A2 + gamma * (A2 - A * A))
        cov_ND = ((1 + gamma)[:, None] * (A2[:, None] * CUV + P2R * CVV[:, None])
                  - gamma[:, None] * (A[:, None] ** 2 * CUV + A[:, None] * PR * CVV[:, None]))
        counter.add(S * (4 * k * n + 17 * n + 11), "stratum_moments")
        d.update(mu_D=mu_D, var_D=var_D, mu_N=mu_N, cov_ND=cov_ND, b1=b1, e1=e1, bb=bb, be=be)
    return {"heads": heads, "pop": pop}


def stratum_moments(tables: CircuitTables, dist: str | Distribution, max_copies: int | None = None, *, tau: float = 0.05,
                    max_heavy: int = 0) -> tuple[dict, list[dict]]:
    """The strata and, per head, the exact means and (co)variances of the attention denominator D
    and numerator N in every stratum (mu_D, var_D, mu_N, cov_ND; see ``_block_moments``), plus the
    diagonal Var(N_o) (var_N). Exposed for tests: these are exact, not approximations."""
    dist = resolve(dist, tables.n, tables.k)
    counter = FlopCounter()
    T = _Tables(tables, counter)
    st, _ = _strata(tables.n, tables.k, dist, max_copies)
    if max_heavy > 0:
        st = _refine(T, st, dist, tau, max_heavy, counter)
    with single_threaded():
        mom = _block_moments(T, st, counter)
        pop = mom["pop"]
        for h, hd in enumerate(mom["heads"]):
            # Var(N_o): f_i = α_i β (E_o + P_io): w = α, c = P (no normalisation, no ratio)
            aR = hd["aR"]
            b1, e1, bb, be = hd["b1"], hd["e1"], hd["bb"], hd["be"]
            bee = pop.bee(h, h)
            CUU = bee - e1 * e1
            CUV = be - e1 * b1[:, None]
            CVV = (bb - b1 * b1)[:, None]
            T0 = (aR * aR).sum(1)[:, None]
            T1 = _mm(aR * aR, T.P[h])
            T2 = _mm(aR * aR, T.P[h] ** 2)
            W = aR.sum(1)[:, None]
            G = _mm(aR, T.P[h])
            hd["var_N"] = _var_sum({(0, 0): T0}, {(0, 0): T1}, {(0, 0): T2}, [W], [G],
                                   {(0, 0): CUU}, {(0, 0): CUV}, {(0, 0): CVV}, st["gamma"], 1)
    return st, mom["heads"]


# ---------------------------------------------------------------- the estimator


def _logit_mean(T: _Tables, st: dict, mom: dict, order: int, counter: FlopCounter):
    """Mean logits [S, n] (second-order ratio correction with ``order=2``) and the per-head
    ratios r_h = μ_N/μ_D."""
    H, n = T.H, T.n
    S = len(st["q"])
    mu_L = T.U[st["q"]].copy()
    r = []
    for d in mom["heads"]:
        rh = d["mu_N"] / d["mu_D"][:, None]
        r.append(rh)
        mu_L += rh
        if order >= 2 and _RATIO_CORRECTION:
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
    counter.add(S * (len(pairs) * (4 * k * n + 2 * k + 27 * n + 1) + H * (2 * k * n + 2 * k + 2 * n) + 3 * n),
                "logit_var_diag")

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
        counter.add(S * (H * (2 * n * n + 2 * n * k + 5 * n + 4 * k + 2 + 2 * 2 * k)
                         + len(pairs) * (2 * n + 1 + 2 * (5 * k + 3 * n + 26))), "logit_quad")
        return res[0], res[1]

    return var_L, quad2


def _block(T: _Tables, st: dict, readout: str, order: int, counter: FlopCounter):
    """Per-stratum estimates (second order, first order) for one block of strata."""
    mom = _block_moments(T, st, counter)
    mu_L, r = _logit_mean(T, st, mom, order, counter)
    if order == 1:
        return _readout(mu_L, None, st["m"], None, readout, 1, counter)
    var_L, quad2 = _logit_cov(T, st, mom, r, counter)
    return _readout(mu_L, var_L, st["m"], quad2, readout, 2, counter)


def cumulant_propagation(tables: CircuitTables, dist: str | Distribution, *, readout: str = "gauss", order: int = 2,
                         tau: float = 0.05, max_heavy: int = 12, heavy_order: int = 1,
                         prune_mass: float = 1e-4, max_copies: int | None = None,
                         counter: FlopCounter | None = None) -> dict:
    """Covariance propagation of expected soft accuracy (see module docstring).

    Returns a dict: estimate, first_order (mean propagation over the same strata), per_max [n]
    (conditional estimates given max = m, NaN where P[max = m] = 0), n_strata, dropped_mass.
    Cost O(h²·n³ + strata·h²·n·(n + k)) FLOPs, added to ``counter``."""
    dist = resolve(dist, tables.n, tables.k)
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
    with single_threaded(), np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for part, o in ((np.nonzero(~heavy)[0], order), (np.nonzero(heavy)[0], min(order, heavy_order))):
            for s0 in range(0, len(part), _CHUNK):
                idx = part[s0 : s0 + _CHUNK]
                sub = {key: v[idx] for key, v in st.items()}
                est2[idx], est1[idx] = _block(T, sub, readout, o, counter)
        if aux is not None:  # heavy sub-strata by vectorised mean propagation
            h_est, h_mass = _heavy_mean_field(T, st_base, aux, dist, readout, counter)
    if aux is not None:
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
    est = float((np.clip(est2, 0.0, 1.0) * wt).sum())  # (no BLAS: numpy's would start threads)
    pw = np.bincount(st["m"], weights=wt, minlength=n)
    per_max = np.bincount(st["m"], weights=wt * np.clip(est2, 0.0, 1.0), minlength=n)
    per_max = np.where(pw > 0, per_max / np.where(pw > 0, pw, 1.0), np.nan)
    return dict(estimate=est, first_order=float((est1 * wt).sum()), per_max=per_max, n_strata=S, dropped_mass=dropped)


def cumulant(tables: CircuitTables, dist: Distribution, *, counter: FlopCounter, rng: np.random.Generator,
             readout: str = "gauss", order: int = 2, tau: float = 0.05, max_heavy: int = 12,
             heavy_order: int = 1, prune_mass: float = 1e-4, max_copies: int | None = None) -> EstimateValue:
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
    return EstimateValue(res["estimate"], details=extra)
