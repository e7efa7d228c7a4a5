"""A small general covariance-propagation engine (DESIGN §7), used by the tests to check the
propagation rules the cumulant estimator relies on against closed forms and enumeration.

Not part of the estimator (``maxk.estimators.cumulant``), which forms only the moments it needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Means [d] and covariance [d, d] of a random vector (cumulants of order 1 and 2)."""

    mean: np.ndarray
    cov: np.ndarray

    @staticmethod
    def independent(means, variances) -> Moments:
        """Independent components with the given means and variances."""
        m = np.asarray(means, dtype=np.float64)
        return Moments(m, np.diag(np.asarray(variances, dtype=np.float64)))

    def linear(self, A, b=None) -> Moments:
        """y = A x + b: mean A μ + b, covariance A Σ Aᵀ (exact for any law). Cost O(d_y·d²)."""
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        mu = A @ self.mean + (0.0 if b is None else np.asarray(b, dtype=np.float64))
        return Moments(mu, A @ self.cov @ A.T)

    def products(self, pairs) -> Moments:
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
        cov = (
            mu[I] * mu[U] * C[J, V]
            + mu[I] * mu[V] * C[J, U]
            + mu[J] * mu[U] * C[I, V]
            + mu[J] * mu[V] * C[I, U]
            + C[I, U] * C[J, V]
            + C[I, V] * C[J, U]
        )
        return Moments(mean, cov)

    def exp(self) -> Moments:
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
