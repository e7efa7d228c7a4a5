"""Prefix tables and token populations: the exact first and second moments of the attention sums.

Step 2 of the estimator (see the package docstring). Per head, with w_i = exp(EQKE[q, x_i] +
EQKP[q, i]) = α_i β(x_i) and values v_i = EVOU[x_i] + PVOU[i], the denominator D = Σ_i w_i and
numerator N = Σ_i w_i v_i are sums over positions of functions of one token each. Their means and
(co)variances — including the finite-population covariance −Cov_S(f, g)/(|S| − 1) between two
positions drawn without replacement — are exact, from prefix sums over the token axis
(``_Tables``) minus the tokens a stratum excludes (``_Population``), or, where that difference
would lose the population's second moments to rounding, summed token by token (``_DIRECT_TOL``).
``_var_sum`` adds per-position variances up, with or without replacement; ``_block_moments``
forms the moments of D and N for a block of strata."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from ...circuits import CircuitTables
from ...flops import FlopCounter
from .matmul import _mm

_EPS = float(np.finfo(np.float64).eps)
_DIRECT_TOL = 1e-6  # tolerated rounding error of prefix-sum population moments (see _block_moments)


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

    def __init__(self, T: _Tables, st: dict, counter: FlopCounter):
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


def _block_moments(T: _Tables, st: dict, counter: FlopCounter, direct_tol: float | None = None) -> dict:
    """Exact per-stratum moments of the attention sums for a block of strata, per head h:
    mu_D [S], var_D [S], mu_N [S, n], cov_ND [S, n] (Cov(N_o, D)), the population moments of the
    token functions and the position weights the later steps reuse; and the block's population.

    Strata whose second moments the prefix-sum differences could not resolve — rounding error
    ε·Σ_{t<m} β_h² · Σ_i α_i² · scale_h² ≥ ``_DIRECT_TOL``·μ_D² (scale_h = 1 + max|EVOU_h| + max|PVOU_h|
    bounds the logit-scale factors), i.e. an error of the logits' variance above ≈ ``_DIRECT_TOL``
    — have their populations summed directly (``_Population.direct``). ``direct_tol`` (None:
    ``_DIRECT_TOL``, what the estimator uses) sets that threshold: Wick propagation asks for a far
    smaller one, so that its moments are exact to float64 rounding."""
    H, n, k = T.H, T.n, T.k
    q, m, S = st["q"], st["m"], len(st["q"])
    fixm, rest, gamma = st["fixm"], st["rest"], st["gamma"]
    tol = _DIRECT_TOL if direct_tol is None else direct_tol
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
        bad |= _EPS * T.bb[h, h][q, m] * A2 * scale**2 > tol * muD0**2
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
        cov_ND = (1 + gamma)[:, None] * (A2[:, None] * CUV + P2R * CVV[:, None]) - gamma[:, None] * (
            A[:, None] ** 2 * CUV + A[:, None] * PR * CVV[:, None]
        )
        counter.add(S * (4 * k * n + 17 * n + 11), "stratum_moments")
        d.update(mu_D=mu_D, var_D=var_D, mu_N=mu_N, cov_ND=cov_ND, b1=b1, e1=e1, bb=bb, be=be)
    return {"heads": heads, "pop": pop}
