"""Estimators: the calibrated predictive distribution of the soft accuracy, and the prior cost of
the estimate the explanation states.

Calibration. ``calibration_truth(model, dist, models=F)`` builds F noised copies of the model
(``maxk.estimators.bench.noised_model``, the k4 family's noise scales ``SIGMAS["k4"]``, spaced
evenly in log) and computes each copy's exact soft accuracy; ``calibration_errors`` runs one
estimator on them and keeps its errors (estimate - truth). The predictive distribution for the model's
soft accuracy y given the estimate ŷ is Normal(ŷ - bias, sd²), bias and sd the mean and
standard deviation (ddof 1) of those errors (sd floored at 1/N); S(Y | π) is -log2 of its
probability of the window [y - 1/(2N), y + 1/(2N)]. The error of that figure comes from the
calibration's finite size (standard errors sd/sqrt(F) of the bias and sd/sqrt(2(F-1)) of the sd,
delta method).

The fact stated. π states "the estimator gives ŷ on these weights" at the resolution the
calibration says it is good to (±sd); its prior pass probability is the share of initialised
models whose estimate falls within ±sd of ŷ (none does for a trained model, so this is a bound).
"""

from __future__ import annotations

import math

import numpy as np

from ..circuits import circuit_tables
from ..distributions import Distribution
from ..errors import MaxkError
from ..estimators.bench import SIGMAS, family_sigmas, noised_model
from ..estimators.registry import estimate
from ..exact import evaluate
from .checks import Check, rate_check
from .prior import Prior
from .tails import LN2, normal_window_bits

CALIBRATION_MODELS = 4  # noised models in the default calibration


def calibration_truth(model, dist: Distribution, models: int = CALIBRATION_MODELS, seed: int = 0) -> dict:
    """{"sigmas": [F], "truth": [F]}: the noise scales and exact soft accuracies of the ``models``
    noised copies of ``model`` the calibration uses. Cost: F exact evaluations."""
    if models < 2:
        raise MaxkError(f"calibration needs at least 2 noised models, got {models}")
    sigmas = family_sigmas(models, *SIGMAS["k4"])
    truth = [evaluate(_noised(model, sigmas, j, seed), dist).soft_accuracy for j in range(models)]
    return {"sigmas": [float(s) for s in sigmas], "truth": truth, "seed": seed}


def _noised(model, sigmas, j: int, seed: int):
    return circuit_tables(noised_model(model, float(sigmas[j]), seed * 100_003 + j))


def calibration_errors(model, dist: Distribution, method: str, truth: dict) -> list[float]:
    """``method``'s errors (estimate - exact soft accuracy) on the calibration's noised models.
    Cost: F runs of the method."""
    sigmas, seed = truth["sigmas"], truth["seed"]
    return [
        estimate(_noised(model, sigmas, j, seed), method, dist, seed=seed + j).estimate - truth["truth"][j]
        for j in range(len(sigmas))
    ]


def predictive(errors: list[float], N: int) -> tuple[float, float, int]:
    """(bias, sd, F) of a calibration's errors; sd floored at 1/N."""
    e = np.asarray(errors, dtype=np.float64)
    sd = float(e.std(ddof=1)) if len(e) > 1 else 0.0
    return float(e.mean()), max(sd, 1.0 / N), len(e)


def residual_bits(observed: float, est: float, errors: list[float], N: int) -> tuple[float, float]:
    """(S(Y | π), its error) for soft accuracy ``observed`` given estimate ``est`` and the
    calibration errors (module docstring). Cost O(F)."""
    bias, sd, F = predictive(errors, N)
    mean = est - bias
    bits = normal_window_bits(observed, mean, sd, 1.0 / N)
    z = (observed - mean) / sd
    err = math.hypot(abs(z) / math.sqrt(F), abs(1 - z * z) / math.sqrt(2 * max(F - 1, 1))) / LN2
    return bits, err


def estimator_prior(prior: Prior, dist: Distribution, method: str) -> list[float | None]:
    """The prior section: ``method``'s estimate on every initialisation (None where it refused)."""

    def compute(models) -> list[float | None]:
        out: list[float | None] = []
        for j, m in enumerate(models):
            try:
                out.append(estimate(m, method, dist, seed=j).estimate)
            except MaxkError:
                out.append(None)
        return out

    return prior.section(f"estimator:{method}:{dist.name}", compute)


def estimate_check(prior: Prior, dist: Distribution, method: str, est: float, sd: float) -> Check:
    """The check "``method`` estimates within ±sd of ``est``", priced by the initialisations."""
    vals = estimator_prior(prior, dist, method)
    passes = [int(v is not None and abs(v - est) <= sd) for v in vals]
    return rate_check(f"{method} estimates {est:.6g} ± {sd:.2g}", 1, passes, [1] * len(vals))
