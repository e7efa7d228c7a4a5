"""Read-outs: the expected output probability of the max from the logits' mean and covariance.

Step 5 of the estimator (see the package docstring). ``readout="gauss"``: the margin
Z = L_m − logsumexp_{j≠m} L_j taken as Gaussian with the linearised variance and a second-order
(Hessian of logsumexp) mean correction, E[σ(Z)] by a 1-D Gauss–Hermite integral.
``readout="taylor"``: the second-order Taylor expansion E[p_m] ≈ p_m(μ) + ½ tr(∇²p_m Σ_L). At
first order both are the softmax of the mean logits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...errors import MaxkError
from ...flops import FlopCounter
from .matmul import _mm

READOUTS = ("gauss", "taylor")
_GH_NODES = 24


def _gh() -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and weights for E[f(X)], X ~ N(0, 1) (``_GH_NODES`` of them)."""
    x, w = np.polynomial.hermite.hermgauss(_GH_NODES)
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _readout(
    mu_L,
    var_L,
    m,
    quad2: Callable | None,
    readout: str,
    order: int,
    counter: FlopCounter | None = None,
    *,
    lse_correction: bool,
):
    """Per-stratum E[softmax(L)_m] (and its first-order value) from the logit means mu_L [S, n],
    diagonal variances var_L [S, n] and quad2(p) -> (aᵀ Σ_L a for a = e_m − p, pᵀ Σ_L p), p [S, n]
    (both forms the read-outs need; var_L and quad2 are unused with ``order=1``).
    ``lse_correction``: the Gaussian read-out's second-order mean correction of logsumexp."""
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
        assert quad2 is not None  # order 2 passes the quadratic forms
        q_a, q_p = quad2(qt)  # a = e_m − qt: the margin's linear part
        var_z = np.maximum(q_a, 0.0)
        corr = 0.5 * ((qt * var_L).sum(axis=1) - q_p) if lse_correction else 0.0
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
        assert quad2 is not None  # order 2 passes the quadratic forms
        q_a, q_p = quad2(p)
        val = pm + 0.5 * pm * (q_a - (p * var_L).sum(axis=1) + q_p)
        add(S * (2 * n + 6), "readout")
        return val, pm
    raise MaxkError(f"unknown read-out {readout!r}: choose one of {', '.join(READOUTS)}")


def expected_softmax(
    mean: np.ndarray, cov: np.ndarray, index: int, readout: str = "gauss", *, lse_correction: bool = True
) -> float:
    """E[softmax(L)[index]] for L with the given mean [n] and covariance [n, n], by the read-out
    the estimator uses (``readout`` "gauss" or "taylor", second order; see the module docstring).
    Cost O(n²)."""
    mean = np.asarray(mean, dtype=np.float64)[None]
    cov = np.asarray(cov, dtype=np.float64)
    quad = lambda a: np.einsum("si,ij,sj->s", a, cov, a)  # noqa: E731
    e_m = np.eye(cov.shape[0])[[index]]
    quad2 = lambda p: (quad(e_m - p), quad(p))  # noqa: E731
    return float(
        _readout(mean, np.diag(cov)[None], np.array([index]), quad2, readout, order=2, lse_correction=lse_correction)[
            0
        ][0]
    )
