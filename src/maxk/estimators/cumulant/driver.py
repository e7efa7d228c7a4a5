"""The estimator: strata, heavy-token split, per-block moments, logits and read-out, summed.

``cumulant_propagation`` runs the steps of the package docstring over blocks of strata and sums
the per-stratum estimates with their exact weights; ``cumulant`` is its registry entry;
``stratum_moments`` exposes the exact per-stratum moments of the attention sums (for tests)."""

from __future__ import annotations

import numpy as np

from ...circuits import CircuitTables
from ...distributions import Distribution, resolve
from ...errors import MaxkError
from ...flops import FlopCounter
from ...torch_threads import single_threaded
from .. import coarse
from ..base import EstimateValue
from .heavy import HEAVY_PATHS, _heavy_mean_field, _merge_heavy, _split_heavy
from .logits import _logit_cov, _logit_mean
from .matmul import _mm
from .populations import _block_moments, _Tables, _var_sum
from .readout import READOUTS, _readout
from .strata import _refine, _strata

_CHUNK = 4096  # strata per block: bounded memory


def stratum_moments(
    tables: CircuitTables,
    dist: str | Distribution,
    max_copies: int | None = None,
    *,
    tau: float = 0.05,
    max_heavy: int = 0,
) -> tuple[dict, list[dict]]:
    """The strata and, per head, the exact means and (co)variances of the attention denominator D
    and numerator N in every stratum (mu_D, var_D, mu_N, cov_ND; see ``_block_moments``), plus the
    diagonal Var(N_o) (var_N). Exposed for tests: these are exact, not approximations. With
    ``max_heavy`` > 0 the strata are split on their heavy tokens first (generic path, all
    sub-strata as rows). Cost O(h²·n³ + strata·h·n·(k + log n)), plus O(n²) per stratum whose
    population is summed directly; all strata in one block (memory O(strata·n))."""
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
            hd["var_N"] = _var_sum(
                {(0, 0): T0},
                {(0, 0): T1},
                {(0, 0): T2},
                [W],
                [G],
                {(0, 0): CUU},
                {(0, 0): CUV},
                {(0, 0): CVV},
                st["gamma"],
                1,
            )
    return st, mom["heads"]


def _block(
    T: _Tables,
    st: dict,
    readout: str,
    order: int,
    counter: FlopCounter,
    *,
    ratio_correction: bool,
    lse_correction: bool,
):
    """Per-stratum estimates (second order, first order) for one block of strata."""
    mom = _block_moments(T, st, counter)
    mu_L, r = _logit_mean(T, st, mom, order, counter, ratio_correction=ratio_correction)
    if order == 1:
        return _readout(mu_L, None, st["m"], None, readout, 1, counter, lse_correction=lse_correction)
    var_L, quad2 = _logit_cov(T, st, mom, r, counter)
    return _readout(mu_L, var_L, st["m"], quad2, readout, 2, counter, lse_correction=lse_correction)


def _check_options(
    readout, order, tau, max_heavy, heavy_order, prune_mass, max_copies, heavy_path, ratio_correction, lse_correction
) -> None:
    """MaxkError (one line) for the first bad option of ``cumulant_propagation``."""
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
    if max_copies is not None and (
        isinstance(max_copies, bool) or not isinstance(max_copies, (int, np.integer)) or max_copies < 1
    ):
        raise MaxkError(f"max_copies must be a positive integer, got {max_copies!r}")
    if not (isinstance(heavy_path, str) and heavy_path in HEAVY_PATHS):
        raise MaxkError(f"heavy_path must be one of {', '.join(HEAVY_PATHS)}, got {heavy_path!r}")
    for name, flag in (("ratio_correction", ratio_correction), ("lse_correction", lse_correction)):
        if not isinstance(flag, (bool, np.bool_)):
            raise MaxkError(f"{name} must be True or False, got {flag!r}")


def cumulant_propagation(
    tables: CircuitTables,
    dist: str | Distribution,
    *,
    readout: str = "gauss",
    order: int = 2,
    tau: float = 0.05,
    max_heavy: int = 12,
    heavy_order: int = 1,
    prune_mass: float = 1e-4,
    max_copies: int | None = None,
    heavy_path: str = "vectorised",
    ratio_correction: bool = True,
    lse_correction: bool = True,
    counter: FlopCounter | None = None,
) -> dict:
    """Covariance propagation of expected soft accuracy (see the package docstring).

    ``heavy_path``: "vectorised" (default; applies with ``order=2``, ``heavy_order=1``) or
    "generic" evaluation of the heavy sub-strata (see ``heavy``; they agree to rounding).
    ``ratio_correction``: second-order mean correction of N/D; ``lse_correction``: second-order
    mean correction of logsumexp in the Gaussian read-out (both on by default; off for experiments).

    Returns a dict: estimate, first_order (mean propagation over the same strata), per_max [n]
    (conditional estimates given max = m, NaN where P[max = m] = 0), n_strata, dropped_mass.
    Cost O(h²·n³ + strata·h²·n·(n + k)) FLOPs, added to ``counter``."""
    dist = resolve(dist, tables.n, tables.k)
    _check_options(
        readout,
        order,
        tau,
        max_heavy,
        heavy_order,
        prune_mass,
        max_copies,
        heavy_path,
        ratio_correction,
        lse_correction,
    )
    counter = FlopCounter() if counter is None else counter
    n = tables.n
    T = _Tables(tables, counter)
    st, dropped = _strata(n, tables.k, dist, max_copies)
    # sub-strata with a heavy token fixed are dominated by it: mean propagation there (heavy_order)
    st, parts, vec = _split_heavy(
        T,
        st,
        dist,
        order=order,
        tau=tau,
        max_heavy=max_heavy,
        heavy_order=heavy_order,
        prune_mass=prune_mass,
        heavy_path=heavy_path,
        counter=counter,
    )
    S = len(st["m"])
    est2 = np.empty(S)
    est1 = np.empty(S)
    with single_threaded(), np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for part, o in parts:
            for s0 in range(0, len(part), _CHUNK):
                idx = part[s0 : s0 + _CHUNK]
                sub = {key: v[idx] for key, v in st.items()}
                est2[idx], est1[idx] = _block(
                    T, sub, readout, o, counter, ratio_correction=ratio_correction, lse_correction=lse_correction
                )
        if vec is not None:  # heavy sub-strata by vectorised mean propagation
            h_est, h_mass = _heavy_mean_field(T, *vec, dist, readout, counter)
    m, wt = st["m"], st["weight"]
    if vec is not None:
        m, wt, est2, est1 = _merge_heavy(m, wt, est2, est1, vec[0], h_est, h_mass)
        S = len(est2)
    if not (np.isfinite(est2).all() and np.isfinite(est1).all()):
        raise MaxkError(
            "cumulant propagation: attention weights under- or overflow float64 "
            "(a query's attention scores span more than about 350)"
        )
    counter.add(4 * S, "sum")
    est = float((np.clip(est2, 0.0, 1.0) * wt).sum())  # (no BLAS: numpy's would start threads)
    pw = np.bincount(m, weights=wt, minlength=n)
    per_max = np.bincount(m, weights=wt * np.clip(est2, 0.0, 1.0), minlength=n)
    per_max = np.where(pw > 0, per_max / np.where(pw > 0, pw, 1.0), np.nan)
    return dict(estimate=est, first_order=float((est1 * wt).sum()), per_max=per_max, n_strata=S, dropped_mass=dropped)


def cumulant(
    tables: CircuitTables,
    dist: Distribution,
    *,
    counter: FlopCounter,
    rng: np.random.Generator,
    readout: str = "gauss",
    order: int = 2,
    tau: float = 0.05,
    max_heavy: int = 12,
    heavy_order: int = 1,
    prune_mass: float = 1e-4,
    max_copies: int | None = None,
    heavy_path: str = "vectorised",
    ratio_correction: bool = True,
    lse_correction: bool = True,
    strata: str = "full",
    heavy: int = 0,
    outputs: int | None = None,
) -> EstimateValue:
    """Registry entry ``cumulant``: covariance propagation (``order=2``; ``order=1`` is mean
    propagation over the same strata). ``readout``: "gauss" (Gaussian margin, Gauss–Hermite) or
    "taylor" (second-order Taylor of the output softmax). Deterministic (``rng`` unused).

    ``tau``/``max_heavy``: heavy-token conditioning (see ``_refine``; ``max_heavy=0`` turns it off:
    somewhat faster, much less accurate on noised models); ``prune_mass``: strata of least total
    probability left unsplit; ``heavy_order``: order used inside the heavy sub-strata;
    ``heavy_path``: "vectorised" or "generic" evaluation of them (same value to rounding);
    ``ratio_correction``/``lse_correction``: the second-order mean corrections of N/D and of the
    read-out's logsumexp (for experiments). spread: None — the size of the second-order correction
    (in ``extra``) was measured to be far smaller than the actual error, so it is not offered as a
    predictive spread. Cost O(h²·n³ + strata·h²·n·(n + k)); see the package docstring for measured
    figures.

    ``strata`` other than "full" ("max", "max-query", "positions") is the cheap coarse setting
    (``maxk.estimators.coarse``, read-out "gauss": the low tokens' weight to second order, the
    margin Gaussian) with ``heavy`` heaviest tokens split on and ``outputs`` competitor outputs
    read; the options above apply to "full" only."""
    cheap = coarse.dispatch(
        "cumulant",
        tables,
        dist,
        counter,
        strata=strata,
        readout="gauss",
        n_bins=1,
        heavy=heavy,
        outputs=outputs,
        full_only={
            "readout": (readout, "gauss"),
            "order": (order, 2),
            "tau": (tau, 0.05),
            "max_heavy": (max_heavy, 12),
            "heavy_order": (heavy_order, 1),
            "prune_mass": (prune_mass, 1e-4),
            "max_copies": (max_copies, None),
            "heavy_path": (heavy_path, "vectorised"),
            "ratio_correction": (ratio_correction, True),
            "lse_correction": (lse_correction, True),
        },
    )
    if cheap is not None:
        return cheap
    res = cumulant_propagation(
        tables,
        dist,
        readout=readout,
        order=order,
        tau=tau,
        max_heavy=max_heavy,
        heavy_order=heavy_order,
        prune_mass=prune_mass,
        max_copies=max_copies,
        heavy_path=heavy_path,
        ratio_correction=ratio_correction,
        lse_correction=lse_correction,
        counter=counter,
    )
    extra = {
        "readout": readout,
        "order": order,
        "first_order": res["first_order"],
        "second_order_correction": res["estimate"] - res["first_order"],
        "n_strata": res["n_strata"],
        "dropped_mass": res["dropped_mass"],
        "max_heavy": max_heavy,
        "tau": tau,
        "prune_mass": prune_mass,
    }
    return EstimateValue(res["estimate"], details=extra)
