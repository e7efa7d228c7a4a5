"""Coarse propagation: the cheap settings of ``mean``, ``bins`` and ``cumulant`` (issue 11).

The full estimators condition on cases or strata whose count grows like n²·k or n³ and read
every one through an n-output softmax, so none costs less than ~10⁸ FLOPs at n = 64, k = 10.
These settings condition on less and presume more, so that they cost a few passes over the n × n
tables. Each is one choice of **strata** and one of **read-out**:

strata
  ``"max"``        — the max m only (≈ 20 passes over n × n: ≈ 8·10⁴ FLOPs at n = 64, k = 10).
                     The query is mixed in: it is the max with its exact probability, otherwise a
                     uniform token below m whose direct path, value and attention weights enter
                     by their averages over q (the logits of the mixture are the mixture of the
                     logits). Presumes independent: the query's value and its attention share;
                     the positional attention α_i and the query (α averaged over queries); a low
                     token's value and its attention weight (unweighted mean EVOU below m).
  ``"max-query"``  — (m, q) (≈ n³·5 FLOPs: ≈ 3·10⁶). Positions are averaged: the max sits at
                     each non-query position with its exact marginal probability. Low-token
                     values are attention-weighted (the exact mean of the numerator).
  ``"positions"``  — (m, q, positions of the max): the kernel's ``fixed_max_strata`` (≈ 5·10⁷
                     without heavy tokens; a heavy token is then placed at each low position in
                     turn, with its own factor α_J and PVOU_J: 5·10⁷–5·10⁸ with 1–4 of them).

read-out (what each method keeps of the low tokens' total weight D_low, the only random
quantity left once the strata fix the query and the max; its mean and variance are exact for
the stratum's population, with or without replacement)
  ``"mean"``  — D_low at its mean; the soft accuracy of the mean logits (mean propagation).
  ``"bins"``  — D_low as ``n_bins`` equal-mass bins of the lognormal law with its mean and
                variance (each bin its conditional mean, so the mean is kept); presumes that law.
  ``"gauss"`` — covariance propagation: the attention share s = D_low/(D_fix + D_low) to second
                order, the margin Z = L_m − logsumexp_{o≠m} L_o linearised in s (mean corrected
                by its curvature) and taken as Gaussian, E[σ(Z)] by 8-node Gauss–Hermite.

Within a stratum the logits are L(s) = A + s·B: A = EUPU[q] + the fixed tokens' (query, max)
attention-weighted value, B = the low tokens' mean value − that; every output is read through
the softmax (the logits are not treated as independent). ``heavy`` = H splits each row on its H
heaviest population tokens: "none of them drawn" and "the j-th is the heaviest drawn" (exact
probabilities from the kernel); without it the estimates were off by −0.1 to −0.2 on noised
models. ``outputs`` = K reads only the max's output, its K nearest competitors and the heavy
tokens' own outputs (presuming the rest carry no probability; the light tokens' value is then
unweighted); under "max" too (no heavy tokens there; K = 4 brings the ``bins`` and ``gauss``
read-outs under 10⁵ FLOPs at n = 64, k = 10). Single-head models only.

``groups`` = G (strata "max-query", laws without repeated tokens): each (m, q) row whose max is not
the query is split into G rows, one per group of the max's position — the query's k − 1 other
positions ranked by EQKP[q, ·] and cut into G runs — with the max at its group's mean factor and
α-weighted PVOU, and a heavy token placed in each of ``slot_groups`` such groups in turn (with the
probability of its free slots). G = 1 is "max-query", G = k − 1 (one position a group) "positions";
in between it presumes the max's (and a heavy token's) positional factor at its group's mean.
``maxima`` = (lo, hi) restricts any setting to the rows whose max lies in [lo, hi), so that
``maxk.estimators.allocated`` can spend more on the maxima that carry the probability.

Costs are a function of (distribution, n, k, strata, read-out, bins, heavy, outputs, groups,
maxima) alone, not of the weights:
``coarse_cost`` gives the FLOPs a run will count, and the run adds each step's share where the
step is performed (a test checks the two agree).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import ndtr, ndtri

from ..circuits import CircuitTables
from ..distributions import Distribution, get_distribution
from ..errors import MaxkError
from ..flops import FlopCounter
from ..torch_threads import single_threaded
from .base import EstimateValue

STRATA = ("max", "max-query", "positions")
READOUTS = ("mean", "bins", "gauss")
_GH = 8  # Gauss–Hermite nodes of the "gauss" read-out
_CHUNK = 4096  # rows per block
_LN_EPS = 1e-300


# ---------------------------------------------------------------- rows (model-independent)


_ROW_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def coarse_rows(dist: str | Distribution, n: int, k: int, strata: str) -> dict[str, np.ndarray]:
    """The rows a setting reads, from the distribution kernel's exact strata (m, q, positions of
    the max): as they are (``positions``), merged per (m, q) with the max's positions replaced by
    their exact per-position marginals (``max-query``), or per m (``max``: then ``pq`` [R] is
    P[query = m | max = m] and ``fix_top``/``fix_low`` the expected number of max copies at the
    non-query positions when the query is / is not the max). Cached (last few)."""
    dist = get_distribution(dist)
    key = (dist.name, n, k, strata)
    if key in _ROW_CACHE:
        return _ROW_CACHE[key]
    st, _ = dist.fixed_max_strata(n, k, None)
    st = {key_: v[st["weight"] > 0] for key_, v in st.items()}
    if strata == "positions":
        rows = st
    elif strata == "max-query":
        rows = _merge(st, st["m"] * n + st["q"], k)
    elif strata == "max":
        last = k - 1
        top = st["q"] == st["m"]
        w = st["weight"]
        pm = np.bincount(st["m"], weights=w, minlength=n)
        ptop = np.bincount(st["m"][top], weights=w[top], minlength=n)
        nfix = st["fixm"][:, :last].sum(axis=1)
        ftop = np.bincount(st["m"][top], weights=(w * nfix)[top], minlength=n)
        flow = np.bincount(st["m"][~top], weights=(w * nfix)[~top], minlength=n)
        live = np.nonzero(pm > 0)[0]
        plow = pm - ptop
        rows = dict(
            m=live,
            weight=pm[live],
            pq=ptop[live] / pm[live],
            fix_top=np.where(ptop[live] > 0, ftop[live] / np.where(ptop[live] > 0, ptop[live], 1.0), 0.0),
            fix_low=np.where(plow[live] > 0, flow[live] / np.where(plow[live] > 0, plow[live], 1.0), 0.0),
            removes_query=np.array([bool((st["removed"][(st["m"] == m) & ~top] >= 0).any()) for m in live]),
        )
    else:
        raise MaxkError(f"strata must be one of {', '.join(STRATA)} (or 'full'), got {strata!r}")
    if len(_ROW_CACHE) >= 8:
        _ROW_CACHE.pop(next(iter(_ROW_CACHE)))
    _ROW_CACHE[key] = rows
    return rows


def _merge(st: dict[str, np.ndarray], key: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Strata merged by ``key``: weights summed, position masks replaced by their weighted means
    spread evenly over the non-query positions (so that only their sums matter), the population
    (size, removed tokens, pair factor) of the first stratum of each group (shared by all)."""
    uk, first, inv = np.unique(key, return_index=True, return_inverse=True)
    w = np.bincount(inv, weights=st["weight"])
    last = k - 1
    nq = np.ones(k)
    nq[last] = 0.0
    fix = np.bincount(inv, weights=st["weight"] * st["fixm"][:, :last].sum(axis=1)) / w
    rest = np.bincount(inv, weights=st["weight"] * st["rest"][:, :last].sum(axis=1)) / w
    per = max(last, 1)
    out = {key_: st[key_][first] for key_ in ("m", "q", "size", "removed", "gamma")}
    out.update(weight=w, fixm=(fix / per)[:, None] * nq[None], rest=(rest / per)[:, None] * nq[None])
    return out


# ---------------------------------------------------------------- costs (model-independent)


def _check(
    strata: str, readout: str, n_bins: int, heavy: int = 0, outputs: int | None = None, groups: int | None = None
) -> None:
    if groups is not None:
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise MaxkError(f"groups must be a positive integer or None, got {groups!r}")
        if strata != "max-query":
            raise MaxkError(f"groups split the max's positions of strata 'max-query', not {strata!r}")
    if strata not in STRATA:
        raise MaxkError(f"strata must be one of {', '.join(STRATA)} (or 'full'), got {strata!r}")
    if readout not in READOUTS:
        raise MaxkError(f"read-out must be one of {', '.join(READOUTS)}, got {readout!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or not 1 <= n_bins <= 64:
        raise MaxkError(f"bins must be an integer in [1, 64], got {n_bins!r}")
    if isinstance(heavy, bool) or not isinstance(heavy, (int, np.integer)) or not 0 <= heavy <= 64:
        raise MaxkError(f"heavy must be an integer in [0, 64], got {heavy!r}")
    if outputs is not None and (
        isinstance(outputs, bool) or not isinstance(outputs, (int, np.integer)) or not 1 <= outputs
    ):
        raise MaxkError(f"outputs must be a positive integer or None (all), got {outputs!r}")
    if heavy and strata == "max":
        raise MaxkError("heavy tokens need the query: use strata 'max-query' or 'positions' with heavy > 0")


def _nodes(readout: str, n_bins: int) -> int:
    """Logit evaluations per row: 1 (mean, gauss) or the number of bins."""
    return n_bins if readout == "bins" else 1


def _step_costs(
    n: int,
    k: int,
    strata: str,
    readout: str,
    n_bins: int,
    n_rem: int,
    heavy: int = 0,
    outputs: int | None = None,
    groups: tuple[int, int] | None = None,
) -> dict[str, int]:
    """FLOPs of each step: ``tables`` once, every other entry per row (the one place they are
    written down; the run adds each where it performs the step)."""
    b = _nodes(readout, n_bins)
    gm, gs = groups if groups is not None else (None, None)
    slots = k - 1 if strata == "positions" else (gs or 1)  # where a heavy token may sit
    J = 1 + heavy * slots  # sub-rows per row
    W = n if outputs is None else 1 + outputs + heavy  # outputs read per row
    logn = max(1, int(np.ceil(np.log2(n))))
    c: dict[str, int] = {}
    if strata == "max":
        # β (max, shift, exp), α, prefix sums of β over t and over q, of EVOU and EUPU over tokens
        c["tables"] = 7 * n * n + 6 * n * k + 2 * k * n + 10 * n
        if W != n:  # each max's competitor outputs: the reference logits, K rounds of argmax
            c["tables"] += 3 * n * n + k * n + (W - 1) * n * n  # K = W - 1 (no heavy tokens)
        c["shares"] = 60
        if readout == "mean":
            c["vectors"] = 11 * W + 12  # the mean logits: six W-vectors combined
        else:
            c["tables"] += 3 * n * n + 6 * n  # β², its two prefix sums
            c["shares"] += 20
            c["vectors"] = 22 * W + 10  # A and B, their margins
    else:
        # β, α, prefix sums of β and β², Σ_i α_i PVOU_i, the query's value; then either the
        # prefix sums of β·EVOU (n³) or those of EVOU and each max's competitor outputs
        c["tables"] = 3 * n * n + 3 * n * k + 3 * n * n + 2 * n * (k - 1) * n + n * n + 3 * n * k
        c["tables"] += 2 * n * n * n if W == n else 5 * n * n + k * n + n * n * logn
        if groups is not None:  # each query's positions ranked by α (comparisons) and cut into runs
            c["tables"] += n * (k - 1) * max(1, int(np.ceil(np.log2(max(k - 1, 2)))))
        if heavy:
            c["tables"] += 4 * n * n * (heavy + n_rem)  # each prefix's heaviest tokens
            c["heavy"] = 4 * (heavy + n_rem) + heavy * (6 * W + 30) + 3 * J
            if groups is not None:  # each group's free-slot mass, mean α, α² and α-weighted PVOU
                c["heavy"] += slots * (7 * k + 2 * k * W + W + 3) + heavy * slots * (5 * W + 12)
            elif slots > 1:  # each slot's weight, value and the remaining positions' mean value
                c["heavy"] += heavy * slots * (5 * W + 12)
        exact_pos = strata == "positions" or groups is not None
        c["shares"] = (7 * k if exact_pos else 6) + 14 + 4 * n_rem
        if groups is not None:  # the max's group: its α-weighted PVOU at the W outputs read
            c["vectors"] = (6 + 2 * n_rem) * W + 2 * k * W + W
        else:
            c["vectors"] = (6 + 2 * n_rem) * W + ((2 * k * n + W) if strata == "positions" else 2 * W)
        c["sub_vectors"] = J * (8 * W + 20) + (W * W if W != n else 0)
    if readout == "bins":
        c["law"] = J * (10 + 25 * (b + 1))
    elif readout == "gauss":
        c["law"] = J * 12
    c["logits"] = J * (b * (4 * W + 2) if readout != "gauss" else 9 * W + 20 + 6 * _GH)
    if strata == "max" and readout == "mean":
        c["logits"] = 3 * W + 2  # margin, exp, sum of the already combined logits
    c["sum"] = 2 * J + 1
    return c


def _row_cost(c: dict[str, int], *labels: str) -> int:
    return sum(c.get(label, 0) for label in labels)


def coarse_cost(
    dist: str | Distribution,
    n: int,
    k: int,
    strata: str,
    readout: str,
    n_bins: int = 4,
    heavy: int = 0,
    outputs: int | None = None,
    groups: int | None = None,
    slot_groups: int | None = None,
    maxima: tuple[int, int] | None = None,
) -> int:
    """The FLOPs ``coarse_propagation`` counts with these settings (independent of the weights).
    Cost O(rows) (the rows come from the kernel, cached)."""
    dist = get_distribution(dist)
    pair = _check_groups(strata, readout, n_bins, heavy, outputs, groups, slot_groups, dist)
    outputs = _outputs(outputs, n, heavy)
    rows = _of_maxima(coarse_rows(dist, n, k, strata), maxima)
    c = _step_costs(n, k, strata, readout, n_bins, _n_rem(rows, strata), heavy, outputs, pair)
    n_rows = n_grouped_rows(rows, None if pair is None else pair[0])
    return c["tables"] + n_rows * sum(v for key, v in c.items() if key != "tables")


def _of_maxima(rows: dict, maxima: tuple[int, int] | None) -> dict:
    """The rows whose max m lies in [lo, hi) (all rows for None)."""
    if maxima is None:
        return rows
    lo, hi = maxima
    if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 0 <= lo <= hi):
        raise MaxkError(f"maxima must be a range (lo, hi) of max values with 0 <= lo <= hi, got {maxima!r}")
    keep = (rows["m"] >= lo) & (rows["m"] < hi)
    return {key: v[keep] for key, v in rows.items()}


def _check_groups(
    strata, readout, n_bins, heavy, outputs, groups, slot_groups, dist: Distribution
) -> tuple[int, int] | None:
    """Validate the settings; (groups of the max's position, groups of a heavy token's slot) or
    None (``slot_groups`` defaults to ``groups``)."""
    _check(strata, readout, n_bins, heavy, outputs, groups)
    if slot_groups is not None and groups is None:
        raise MaxkError("slot_groups needs groups (the max's position groups)")
    if groups is None:
        return None
    _check(strata, readout, n_bins, heavy, outputs, slot_groups)
    gs = groups if slot_groups is None else int(slot_groups)
    if (groups > 1 or gs > 1) and dist.allows_repeats:
        raise MaxkError(f"groups > 1 need a law without repeated tokens (the max at one position), not {dist.name!r}")
    return int(groups), gs


def n_grouped_rows(rows: dict, groups: int | None) -> int:
    """Rows a run reads: each (m, q) row whose max is not the query split into ``groups`` rows
    (one per group of the max's position), the others kept whole. O(rows)."""
    if groups is None:
        return len(rows["m"])
    split = int(np.count_nonzero(rows["q"] != rows["m"]))
    return len(rows["m"]) + split * (groups - 1)


def _position_groups(alpha: np.ndarray, groups: int, k: int) -> np.ndarray:
    """Per query, the k − 1 non-query positions ranked by α[q, ·] (largest first) and cut into
    ``groups`` runs of near-equal size: masks [n, groups, k] (run g holds ranks r with
    ⌊r·groups/(k − 1)⌋ = g; empty runs when groups > k − 1). Cost n·(k − 1)·log(k − 1) comparisons."""
    last = k - 1
    order = np.argsort(-alpha[:, :last], axis=1, kind="stable")  # [n, last]
    g_of_rank = (np.arange(last) * groups) // max(last, 1)
    masks = np.zeros((alpha.shape[0], groups, k))
    qi = np.repeat(np.arange(alpha.shape[0]), last)
    masks[qi, np.tile(g_of_rank, alpha.shape[0]), order.ravel()] = 1.0
    return masks


def _grouped(rows: dict, masks: np.ndarray, slot_masks: np.ndarray, groups: int, k: int) -> dict[str, np.ndarray]:
    """(m, q) rows with the max's position split by group: a row whose max is not the query (one
    copy of the max, spread evenly over the non-query positions) becomes ``groups`` rows, row g
    with the max spread evenly over the positions of group g (masks [n, groups, k] of its query)
    and weight × |g|/(k − 1); the other rows are kept. Each row also carries ``gmask``
    [G_slot, k], its query's ``slot_masks`` (where a heavy token may sit)."""
    split = rows["q"] != rows["m"]
    keep = {key: v[~split] for key, v in rows.items()}
    sp = {key: v[split] for key, v in rows.items()}
    g = np.tile(np.arange(groups), int(split.sum()))
    rep = {key: np.repeat(v, groups, axis=0) for key, v in sp.items()}
    mk = masks[rep["q"], g]  # [S·G, k]
    size = mk.sum(axis=1)
    last = k - 1
    nq = np.ones(k)
    nq[last] = 0.0
    fixm = rep["fixm"].sum(axis=1, keepdims=True) * mk / np.where(size > 0, size, 1.0)[:, None]
    rep.update(fixm=fixm, rest=nq[None] - fixm, weight=rep["weight"] * size / max(last, 1))
    out = {key: np.concatenate([keep[key], rep[key]]) for key in rows}
    out["gmask"] = slot_masks[out["q"]]
    return out


# ---------------------------------------------------------------- read-outs


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for float64 arrays through torch (single-threaded inside ``single_threaded``)."""
    return torch.matmul(torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))).numpy()


def _lognormal_bins(mu: np.ndarray, var: np.ndarray, b: int) -> np.ndarray:
    """Conditional means [R, b] of b equal-mass bins of the lognormal law with mean mu [R] and
    variance var [R] (a point mass where var = 0): mu·b·(Φ(z_{j+1} − σ) − Φ(z_j − σ)), z_j the
    standard normal's j/b quantiles, σ² = log(1 + var/mu²)."""
    z = ndtri(np.arange(b + 1) / b)  # -inf .. inf
    sig = np.sqrt(np.log1p(var / np.maximum(mu * mu, _LN_EPS)))
    cdf = ndtr(z[None, :] - sig[:, None])
    return mu[:, None] * b * np.diff(cdf, axis=1)


def _soft_at(A: np.ndarray, B: np.ndarray, s: np.ndarray) -> np.ndarray:
    """softmax(A + s_j·B)[m] for margins A, B [R, n] (zero at the max's output) and shares
    s [R, b]: 1 / Σ_o exp(A_o + s_j B_o) -> [R, b]."""
    L = A[:, None, :] + s[:, :, None] * B[:, None, :]
    with np.errstate(over="ignore"):
        return 1.0 / np.exp(L).sum(axis=2)


def _gauss_readout(A: np.ndarray, B: np.ndarray, s_mean: np.ndarray, s_var: np.ndarray) -> np.ndarray:
    """E[σ(Z)] with Z = −log Σ_{o≠m} exp(A_o + s·B_o) (margins: A_m = B_m = 0) linearised in s
    around its mean, mean corrected by ½Z''·Var s, taken as Gaussian. [R]."""
    L = A + s_mean[:, None] * B
    with np.errstate(over="ignore"):
        e = np.exp(L)
    tot = e.sum(axis=1) - 1.0  # the max's own term is exp(0)
    tot = np.maximum(tot, _LN_EPS)
    g1 = (e * B).sum(axis=1) / tot  # E_q[B] over the other outputs (B_m = 0)
    g2 = (e * B * B).sum(axis=1) / tot
    z0 = -np.log(tot)
    mz = z0 - 0.5 * (g2 - g1 * g1) * s_var
    sz = np.abs(g1) * np.sqrt(np.maximum(s_var, 0.0))
    x, w = np.polynomial.hermite.hermgauss(_GH)
    x, w = np.sqrt(2.0) * x, w / np.sqrt(np.pi)
    zz = mz[:, None] + sz[:, None] * x[None, :]
    return (0.5 * (1.0 + np.tanh(0.5 * zz))) @ w


def _readout(
    A: np.ndarray, B: np.ndarray, d_fix: np.ndarray, mu: np.ndarray, var: np.ndarray, readout: str, b: int
) -> np.ndarray:
    """Per-row expected soft accuracy from margins A, B [R, n], the fixed tokens' weight d_fix [R]
    and the low weight's mean mu and variance var [R]."""
    d_fix = np.maximum(d_fix, _LN_EPS)
    if readout == "mean":
        return _soft_at(A, B, (mu / (d_fix + mu))[:, None])[:, 0]
    if readout == "bins":
        d = _lognormal_bins(mu, var, b)
        return _soft_at(A, B, d / (d_fix[:, None] + d)).mean(axis=1)
    tot = d_fix + mu
    s_mean = mu / tot - d_fix * var / tot**3  # second-order mean of s = D/(d_fix + D)
    s_var = (d_fix / tot**2) ** 2 * var
    return _gauss_readout(A, B, np.clip(s_mean, 0.0, 1.0), s_var)


# ---------------------------------------------------------------- the estimator


def coarse_propagation(
    tables: CircuitTables,
    dist: str | Distribution,
    strata: str,
    readout: str,
    n_bins: int,
    counter: FlopCounter,
    heavy: int = 0,
    outputs: int | None = None,
    groups: int | None = None,
    slot_groups: int | None = None,
    maxima: tuple[int, int] | None = None,
) -> tuple[float, np.ndarray]:
    """Estimated expected soft accuracy with the given strata and read-out (module docstring),
    and the per-max contributions [n] summing to it. ``groups`` = G (strata "max-query" only):
    the max's position and a heavy token's slot in G groups of positions ranked by the query's
    positional attention, a heavy token's slot in ``slot_groups`` (default G) such groups
    (module docstring). ``maxima`` = (lo, hi): only the rows whose max m lies in [lo, hi) (the
    estimate is then their share of the total). Cost ``coarse_cost(...)`` FLOPs."""
    dist = get_distribution(dist)
    pair = _check_groups(strata, readout, n_bins, heavy, outputs, groups, slot_groups, dist)
    outputs = _outputs(outputs, tables.n, heavy)
    if tables.n_heads != 1:
        raise MaxkError(
            f"coarse propagation (strata={strata!r}) supports single-head models, got {tables.n_heads} heads"
        )
    n, k = tables.n, tables.k
    rows = _of_maxima(coarse_rows(dist, n, k, strata), maxima)
    with single_threaded(), np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        if strata == "max":
            est = _by_max(tables, rows, readout, n_bins, outputs, counter)
        else:
            est, rows = _by_query(tables, dist, rows, strata, readout, n_bins, heavy, outputs, counter, pair)
    if not np.isfinite(est).all():
        raise MaxkError(
            "coarse propagation: attention weights under- or overflow float64 "
            "(the attention scores span more than about 700)"
        )
    est = np.clip(est, 0.0, 1.0)
    c = _step_costs(n, k, strata, readout, n_bins, _n_rem(rows, strata), heavy, outputs, pair)
    counter.add(len(rows["m"]) * c["sum"], "sum")
    per_max = np.bincount(rows["m"], weights=rows["weight"] * est, minlength=n)
    return float(per_max.sum()), per_max


def _outputs(outputs: int | None, n: int, heavy: int) -> int | None:
    """K, or None where K competitors (and the heavy tokens' outputs) would cover every output."""
    return None if outputs is None or 1 + outputs + heavy >= n else int(outputs)


def _n_rem(rows: dict, strata: str) -> int:
    return 0 if strata == "max" else int(rows["removed"].shape[1])


def _prefix_heaviest(beta: np.ndarray, depth: int) -> np.ndarray:
    """top[q, m, j]: the j-th heaviest token t < m by beta[q, t] (-1 where fewer than j + 1),
    for every prefix m = 0..n: [n, n + 1, depth], by one insertion pass over t. Cost
    O(n²·depth) comparisons and moves."""
    nq, n = beta.shape
    top = np.full((nq, n + 1, depth), -1, dtype=np.int64)
    val = np.full((nq, depth), -np.inf)
    idx = np.full((nq, depth), -1, dtype=np.int64)
    rows = np.arange(nq)
    for t in range(n):
        v = beta[:, t].copy()
        cur = np.full(nq, t, dtype=np.int64)
        for j in range(depth):  # insert (v, cur) into the sorted slots, pushing the rest down
            swap = v > val[:, j]
            val[swap, j], v[swap] = v[swap], val[swap, j].copy()
            idx[swap, j], cur[swap] = cur[swap], idx[swap, j].copy()
        top[rows, t + 1] = idx
    return top


def _by_query(
    tables: CircuitTables,
    dist: Distribution,
    rows: dict,
    strata: str,
    readout: str,
    n_bins: int,
    heavy: int,
    outputs: int | None,
    counter: FlopCounter,
    groups: tuple[int, int] | None = None,
) -> tuple[np.ndarray, dict]:
    """Rows that know the query: (m, q) or (m, q, positions of the max), each split on its
    ``heavy`` heaviest population tokens: "none of them drawn" and "the j-th is the heaviest
    drawn" (it then sits at a low position with the low positions' mean factor, the others
    come from the tokens lighter than it), with exact probabilities from the kernel.
    ``outputs`` = K reads only the max's output, its K nearest competitors (by the logits the
    max would give if it took all the attention) and the heavy tokens' own outputs, with the
    light tokens' value unweighted; None reads all n outputs with attention-weighted values.
    ``groups`` = (G, G_slot): the (m, q) rows split by the group of the max's position (G
    groups), a heavy token in each of G_slot groups in turn (``_grouped``). Returns the per-row
    estimates and the rows read."""
    n, k = tables.n, tables.k
    last = k - 1
    E, P, EV, PV, U = tables.eqke[0], tables.eqkp[0], tables.evou[0], tables.pvou[0], tables.eupu
    n_rem = _n_rem(rows, strata)
    cost = _step_costs(n, k, strata, readout, n_bins, n_rem, heavy, outputs, groups)
    beta = np.exp(E - E.max(axis=1, keepdims=True))  # [q, t]
    alpha = np.exp(P - P.max(axis=1, keepdims=True))  # [q, i]
    if groups is not None:
        g_max, g_slot = groups
        slot_masks = _position_groups(alpha, g_slot, k)
        max_masks = slot_masks if g_slot == g_max else _position_groups(alpha, g_max, k)
        rows = _grouped(rows, max_masks, slot_masks, g_max, k)
    R = len(rows["m"])
    exact_pos = strata == "positions" or groups is not None  # the rows' position masks are read as they are
    zero = np.zeros((n, 1))
    cb1 = np.concatenate([zero, np.cumsum(beta, axis=1)], axis=1)  # Σ_{t<m} β[q, t]: [q, m]
    cb2 = np.concatenate([zero, np.cumsum(beta * beta, axis=1)], axis=1)
    pv_sum = _mm(alpha[:, :last], PV[:last]) if k > 1 else np.zeros((n, n))  # Σ_{i<last} α_i PVOU_i
    vq = EV + PV[last][None, :]
    a_sum, a2_sum = alpha[:, :last].sum(axis=1), (alpha[:, :last] ** 2).sum(axis=1)
    if outputs is None:
        W = n
        cbev = np.concatenate([np.zeros((n, 1, n)), np.cumsum(beta[:, :, None] * EV[None], axis=1)], axis=1)
        cand_out = None
    else:
        W = 1 + outputs + heavy
        cev = np.concatenate([np.zeros((1, n)), np.cumsum(EV, axis=0)])  # Σ_{t<m} EVOU[t]
        ref = np.cumsum(U, axis=0) / np.arange(1, n + 1)[:, None] + EV + PV.mean(axis=0)[None, :]
        ref[np.arange(n), np.arange(n)] = -np.inf
        cand_out = np.argsort(-ref, axis=1, kind="stable")[:, :outputs]  # [m, K] competitors
    top = _prefix_heaviest(beta, heavy + n_rem) if heavy else None
    counter.add(cost["tables"], "coarse_tables")
    b = _nodes(readout, n_bins)
    # where a heavy token may sit: each low position, each group of them, or their mean
    slots = last if strata == "positions" else (1 if groups is None else groups[1])
    J = 1 + heavy * slots
    out = np.empty(R)
    step = max(1, (_CHUNK * 64) // (J * W * max(b, 1)))
    for s0 in range(0, R, step):
        sl = slice(s0, s0 + step)
        m, q = rows["m"][sl], rows["q"][sl]
        fixm, rest, size, rem = (rows[key][sl] for key in ("fixm", "rest", "size", "removed"))
        C = len(m)
        r_ = np.arange(C)
        r_cnt = rest.sum(axis=1)
        a = alpha[q]  # [C, k]
        if exact_pos:
            a_fix = (fixm * a).sum(axis=1)
            a_r = (rest * a).sum(axis=1)
            a_r2 = (rest * a * a).sum(axis=1)
        else:  # even masks over the non-query positions: their sums of α and α² suffice
            a_fix, a_r, a_r2 = fixm[:, 0] * a_sum[q], rest[:, 0] * a_sum[q], rest[:, 0] * a2_sum[q]
        s1, s2 = cb1[q, m].copy(), cb2[q, m].copy()
        # heavy candidates: the heaviest population tokens (the prefix's, less the removed ones)
        hv = np.full((C, heavy), -1, dtype=np.int64)
        if heavy:
            assert top is not None
            tl = top[q, m]  # [C, heavy + n_rem]
            keep = tl >= 0
            for c in range(n_rem):
                keep &= tl != rem[:, c : c + 1]
            order = np.argsort(~keep, axis=1, kind="stable")[:, :heavy]
            hv = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(tl, order, axis=1), -1)
        if outputs is None:  # every output, the max's first
            idx = np.repeat(np.arange(n)[None, :], C, axis=0)
            idx[r_, m] = 0
            idx[:, 0] = m
            nev = cbev[q, m][r_[:, None], idx]
        else:
            assert cand_out is not None
            idx = np.concatenate([m[:, None], cand_out[m], np.where(hv >= 0, hv, m[:, None])], axis=1)
            nev = cev[m][r_[:, None], idx]  # unweighted sums of the population's values

        def g(tab_: np.ndarray, rows_: np.ndarray, idx: np.ndarray = idx) -> np.ndarray:
            """tab_[rows_] at the row's outputs: [C, W]."""
            return tab_[rows_[:, None], idx]

        for c in range(n_rem):
            on = rem[:, c] >= 0
            t = np.where(on, rem[:, c], 0)
            bt = np.where(on, beta[q, t], 0.0)
            s1 -= bt
            s2 -= bt * bt
            nev -= (bt if outputs is None else on.astype(np.float64))[:, None] * g(EV, t)
        wq = alpha[q, last] * beta[q, q]
        bm = beta[q, m]
        d_fix = wq + bm * a_fix
        counter.add(C * cost["shares"], "coarse_shares")
        pvs = g(pv_sum, q)
        if groups is not None:  # PVOU at the outputs read only: [k, C, W]
            pv_at = PV[:, idx]
            pv_fix = np.einsum("ck,kcw->cw", fixm * alpha[q], pv_at)
            pv_rest = pvs - pv_fix
        elif strata == "positions":
            pv_fix = _mm(fixm * alpha[q], PV)[r_[:, None], idx]
            pv_rest = pvs - pv_fix
        else:  # the masks are even over the non-query positions: only their sums matter
            pv_fix = fixm[:, :1] * pvs if last else np.zeros((C, W))
            pv_rest = rest[:, :1] * pvs if last else np.zeros((C, W))
        n_fix = wq[:, None] * g(vq, q) + bm[:, None] * (a_fix[:, None] * g(EV, m) + pv_fix)
        pv_low = pv_rest / np.where(a_r > 0, a_r, 1.0)[:, None]  # the low positions' mean PVOU
        counter.add(C * cost["vectors"], "coarse_vectors")
        # sub-rows [C, J]: j = 0 "no candidate drawn", j >= 1 "candidate j is the heaviest drawn"
        S1, S2 = np.repeat(s1[:, None], J, 1), np.repeat(s2[:, None], J, 1)
        NEV = np.repeat(nev[:, None], J, 1)
        DF, NF = np.repeat(d_fix[:, None], J, 1), np.repeat(n_fix[:, None], J, 1)
        SZ, RC = np.repeat(size[:, None], J, 1), np.repeat(r_cnt[:, None], J, 1)
        AR, AR2 = np.repeat(a_r[:, None], J, 1), np.repeat(a_r2[:, None], J, 1)
        PVL = np.repeat(pv_low[:, None], J, 1)
        prob = np.ones((C, J))
        if heavy:
            nh = np.zeros(C)
            a_bar = a_r / np.maximum(r_cnt, 1.0)
            hb_cum, hb2_cum, hv_cum = np.zeros(C), np.zeros(C), np.zeros((C, W))
            frac = np.maximum(r_cnt - 1, 0) / np.maximum(r_cnt, 1)
            if groups is not None:  # each group's expected free slots, their mean α, α², α-weighted PVOU
                gm = rows["gmask"][sl] * rest[:, None, :]  # [C, G, k]
                g_rs = gm.sum(axis=2)
                g_den = np.where(g_rs > 0, g_rs, 1.0)
                g_a = (gm * a[:, None, :]).sum(axis=2) / g_den
                g_a2 = (gm * (a * a)[:, None, :]).sum(axis=2) / g_den
                g_pv = np.einsum("cgk,kcw->cgw", gm * a[:, None, :], pv_at)
                g_pv /= np.where(g_a * g_rs > 0, g_a * g_rs, 1.0)[:, :, None]
            for j in range(1, heavy + 1):
                h = hv[:, j - 1]
                has = (h >= 0) & (r_cnt >= 1)
                h = np.where(has, h, 0)
                bh = np.where(has, beta[q, h], 0.0)
                ev_h = g(EV, h)
                hb_cum += bh
                hb2_cum += bh * bh
                hv_cum += (bh if outputs is None else has.astype(np.float64))[:, None] * ev_h
                nh += has
                p_j = np.where(has, dist.p_heaviest_any(np.maximum(size, 1.0), j, r_cnt), 0.0)
                for slot in range(slots):
                    col = 1 + (j - 1) * slots + slot
                    S1[:, col], S2[:, col] = s1 - hb_cum, s2 - hb2_cum
                    NEV[:, col] = nev - hv_cum
                    SZ[:, col] = size - j
                    RC[:, col] = np.maximum(r_cnt - 1, 0)
                    if groups is not None:  # in group ``slot``, with its free slots' mean α and PVOU
                        on = has & (g_rs[:, slot] > 0)
                        a_j = np.where(on, g_a[:, slot], 0.0)
                        w_h = a_j * bh
                        pv_j = g_pv[:, slot]
                        NF[:, col] = n_fix + w_h[:, None] * (ev_h + pv_j)
                        AR[:, col] = a_r - a_j
                        AR2[:, col] = a_r2 - np.where(on, g_a2[:, slot], 0.0)
                        left = np.where(AR[:, col] > 0, AR[:, col], 1.0)
                        PVL[:, col] = (pv_rest - a_j[:, None] * pv_j) / left[:, None]
                        prob[:, col] = np.where(on, p_j * g_rs[:, slot] / np.maximum(r_cnt, 1.0), 0.0)
                    elif slots == 1:  # at the low positions' mean factor and value
                        w_h = a_bar * bh
                        NF[:, col] = n_fix + w_h[:, None] * (ev_h + pv_low)
                        AR[:, col], AR2[:, col] = a_r * frac, a_r2 * frac
                        prob[:, col] = p_j
                    else:  # at low position ``slot``, each of the r_cnt equally likely
                        on = has & (rest[:, slot] > 0)
                        a_j = np.where(on, alpha[q, slot], 0.0)
                        w_h = a_j * bh
                        pv_j = g(PV, np.full(C, slot))
                        NF[:, col] = n_fix + w_h[:, None] * (ev_h + pv_j)
                        AR[:, col], AR2[:, col] = a_r - a_j, a_r2 - a_j * a_j
                        left = np.where(AR[:, col] > 0, AR[:, col], 1.0)
                        PVL[:, col] = (pv_rest - a_j[:, None] * pv_j) / left[:, None]
                        prob[:, col] = np.where(on, p_j / np.maximum(r_cnt, 1.0), 0.0)
                    DF[:, col] = d_fix + w_h
            S1[:, 0], S2[:, 0], NEV[:, 0] = s1 - hb_cum, s2 - hb2_cum, nev - hv_cum
            SZ[:, 0] = size - nh
            prob[:, 0] = np.where(r_cnt > 0, dist.p_none_drawn(np.maximum(size, 1.0), nh, r_cnt), 1.0)
            prob = np.nan_to_num(np.maximum(prob, 0.0))
            tot = prob.sum(axis=1, keepdims=True)
            prob = np.where(tot > 0, prob / np.where(tot > 0, tot, 1.0), np.eye(J)[0][None])
            counter.add(C * cost["heavy"], "coarse_heavy")
        sz = np.maximum(SZ, 1.0)
        b1, b2 = S1 / sz, S2 / sz
        var_b = np.maximum(b2 - b1 * b1, 0.0)
        gamma = dist.pair_covariance_factor(SZ.ravel()).reshape(C, J)
        mu = np.where(RC > 0, AR * np.maximum(b1, 0.0), 0.0)
        var = np.where(RC > 0, var_b * np.maximum(AR2 + gamma * (AR2 - AR * AR), 0.0), 0.0)
        mu_fix = NF / np.maximum(DF, _LN_EPS)[:, :, None]
        low_n = S1 if outputs is None else SZ
        v_low = NEV / np.where(low_n > 0, low_n, 1.0)[:, :, None] + PVL
        A = g(U, q)[:, None, :] + mu_fix
        B = v_low - mu_fix
        A -= A[:, :, :1]  # column 0 is the max's output
        B -= B[:, :, :1]
        if outputs is not None:  # an output listed twice counts once
            dup = (idx[:, :, None] == idx[:, None, :]) & np.tri(W, k=-1, dtype=bool).T[None]
            A[np.broadcast_to(dup.any(axis=1)[:, None, :], A.shape)] = -np.inf
            B[~np.isfinite(A)] = 0.0
        counter.add(C * cost["sub_vectors"], "coarse_vectors")
        p = _readout(A.reshape(C * J, W), B.reshape(C * J, W), DF.ravel(), mu.ravel(), var.ravel(), readout, b)
        out[sl] = np.where(prob > 0, p.reshape(C, J) * prob, 0.0).sum(axis=1)
        counter.add(C * _row_cost(cost, "law", "logits"), "coarse_readout")
    return out, rows


def _top_outputs(ref: np.ndarray, K: int) -> np.ndarray:
    """The K largest entries of each row of ref [R, n] (−inf excluded last), largest first, by K
    rounds of argmax (K·n comparisons a row; ties to the lower index): [R, K]."""
    ref = ref.copy()
    r_ = np.arange(len(ref))
    out = np.empty((len(ref), K), dtype=np.int64)
    for j in range(K):
        out[:, j] = ref.argmax(axis=1)
        ref[r_, out[:, j]] = -np.inf
    return out


def _by_max(tables: CircuitTables, rows: dict, readout: str, n_bins: int, outputs: int | None, counter: FlopCounter):
    """Rows per max m, the query mixed in (module docstring, strata "max"); with ``outputs`` = K
    only the max's output and its K competitors are read (chosen as under "max-query", by the
    logits the max would give if it took all the attention at a mean position)."""
    n, k = tables.n, tables.k
    last = k - 1
    E, P, EV, PV, U = tables.eqke[0], tables.eqkp[0], tables.evou[0], tables.pvou[0], tables.eupu
    R = len(rows["m"])
    cost = _step_costs(n, k, "max", readout, n_bins, 0, 0, outputs)
    beta = np.exp(E - E.max(axis=1, keepdims=True))  # each query row relative to its heaviest key
    alpha = np.exp(P - P.max(axis=1, keepdims=True))
    a_bar = alpha.mean(axis=0)  # [k]: positional factors averaged over queries
    a_nq = a_bar[:last].mean() if last else 0.0
    a2_nq = (a_bar[:last] ** 2).mean() if last else 0.0
    pv_nq = (a_bar[:last] @ PV[:last]) / max(a_bar[:last].sum(), _LN_EPS) if last else np.zeros(n)
    zero = np.zeros(1)
    diag = np.diagonal(beta)
    row_c = np.cumsum(beta, axis=1)  # Σ_{t<=j} β[q, t]
    col_c = np.cumsum(beta, axis=0)  # Σ_{q<=j} β[q, t]
    # T[m] = Σ_{q<m, t<m} β[q, t], grown one row and column at a time
    grow = np.r_[zero, np.diagonal(row_c) + np.diagonal(col_c) - diag]
    T = np.cumsum(grow)
    cdiag = np.r_[zero, np.cumsum(diag)]
    cev = np.concatenate([np.zeros((1, n)), np.cumsum(EV, axis=0)])  # Σ_{t<m} EVOU[t]
    cu = np.concatenate([np.zeros((1, n)), np.cumsum(U, axis=0)])  # Σ_{q<m} EUPU[q]
    if readout != "mean":
        b2 = beta * beta
        row2, col2 = np.cumsum(b2, axis=1), np.cumsum(b2, axis=0)
        T2 = np.cumsum(np.r_[zero, np.diagonal(row2) + np.diagonal(col2) - np.diagonal(b2)])
        cdiag2 = np.r_[zero, np.cumsum(np.diagonal(b2))]
    m = rows["m"]
    r_ = np.arange(R)
    # per row, the outputs read: all (the max's at column m), or the max's (column 0) and its K
    # competitors; the n-vectors below at those outputs, [R, W]
    if outputs is None:
        col = m
        u_m, cu_m, ev_m, cev_m = U[m], cu[m], EV[m], cev[m]
        pv_last, pv_mix = PV[last][None, :], pv_nq[None, :]
    else:
        ref = cu[1:] / np.arange(1, n + 1)[:, None] + EV + PV.mean(axis=0)[None, :]
        ref[np.arange(n), np.arange(n)] = -np.inf
        idx = np.concatenate([m[:, None], _top_outputs(ref[m], outputs)], axis=1)
        col = np.zeros(R, dtype=np.int64)
        u_m, cu_m, ev_m, cev_m = (np.take_along_axis(t[m], idx, axis=1) for t in (U, cu, EV, cev))
        pv_last, pv_mix = PV[last][idx], pv_nq[idx]
    counter.add(cost["tables"], "coarse_tables")
    pq, f_top, f_low, rmq = rows["pq"], rows["fix_top"], rows["fix_low"], rows["removes_query"]
    mf = m.astype(np.float64)
    mm = np.maximum(mf, 1.0)
    r_top = last - f_top  # low tokens when the query is the max
    r_low = np.maximum(last - f_low, 0.0)  # ... and when it is not
    # query = max: exact row m
    low_top = row_c[m, np.maximum(m - 1, 0)] * (m > 0) / mm  # mean β[m, t], t < m
    wq_top = alpha[m, last] * diag[m]
    # query < m: averages over q uniform below m
    wq_low = (alpha[:, last] * diag).cumsum()[np.maximum(m - 1, 0)] * (m > 0) / mm
    bm_low = col_c[np.maximum(m - 1, 0), m] * (m > 0) / mm  # E_q β[q, m]
    pop = np.where(rmq, mm * np.maximum(mf - 1, 1.0), mm * mm)  # pairs (q, t) in the population
    low_low = (T[m] - np.where(rmq, cdiag[m], 0.0)) / pop
    d_top = wq_top + diag[m] * f_top * a_nq
    d_low = wq_low + bm_low * f_low * a_nq
    mu_top, mu_low = r_top * a_nq * low_top, r_low * a_nq * low_low
    var_top = var_low = np.zeros(R)
    if readout != "mean":
        sq_top = row2[m, np.maximum(m - 1, 0)] * (m > 0) / mm
        sq_low = (T2[m] - np.where(rmq, cdiag2[m], 0.0)) / pop
        var_top = np.maximum(sq_top - low_top**2, 0.0) * r_top * a2_nq
        var_low = np.maximum(sq_low - low_low**2, 0.0) * r_low * a2_nq
    # mixture over "query is the max": weights, shares of the mean logits
    d_mix = pq * d_top + (1 - pq) * d_low
    mu_mix = pq * mu_top + (1 - pq) * mu_low
    var_mix = pq * var_top + (1 - pq) * var_low + pq * (1 - pq) * (mu_top - mu_low) ** 2
    tot_top, tot_low = np.maximum(d_top + mu_top, _LN_EPS), np.maximum(d_low + mu_low, _LN_EPS)
    counter.add(R * cost["shares"], "coarse_shares")
    # fixed part's mean value and the direct path, as mixtures: query value, max value, positions
    c_q_top = pq * wq_top / tot_top  # weight on EVOU[m] + PVOU[last] via the query being the max
    c_m_top = pq * diag[m] * f_top * a_nq / tot_top
    c_q_low = (1 - pq) * wq_low / tot_low
    c_m_low = (1 - pq) * bm_low * f_low * a_nq / tot_low
    fix_sh = c_q_top + c_m_top + c_q_low + c_m_low  # total attention share of the fixed tokens
    if readout == "mean":  # the mean logits directly: six n-vectors, one softmax
        s_l = pq * mu_top / tot_top + (1 - pq) * mu_low / tot_low  # the low tokens' mean share
        L = (
            pq[:, None] * u_m
            + ((1 - pq) / mm)[:, None] * cu_m
            + (c_q_top + c_m_top + c_m_low)[:, None] * ev_m
            + ((c_q_low + s_l) / mm)[:, None] * cev_m
            + (c_q_top + c_q_low)[:, None] * pv_last
            + (c_m_top + c_m_low + s_l)[:, None] * pv_mix
        )
        counter.add(R * cost["vectors"], "coarse_vectors")
        with np.errstate(over="ignore"):
            out = 1.0 / np.exp(L - L[r_, col][:, None]).sum(axis=1)
        counter.add(R * cost["logits"], "coarse_readout")
        return out
    u_bar = pq[:, None] * u_m + ((1 - pq) / mm)[:, None] * cu_m
    nfix = (
        (c_q_top + c_m_top + c_m_low)[:, None] * ev_m
        + (c_q_low / mm)[:, None] * cev_m
        + (c_q_top + c_q_low)[:, None] * pv_last
        + (c_m_top + c_m_low)[:, None] * pv_mix
    )
    mu_fix = nfix / np.maximum(fix_sh, _LN_EPS)[:, None]
    v_low = cev_m / mm[:, None] + pv_mix
    A = u_bar + mu_fix
    B = v_low - mu_fix
    A -= A[r_, col][:, None]
    B -= B[r_, col][:, None]
    counter.add(R * cost["vectors"], "coarse_vectors")
    out = _readout(A, B, d_mix, mu_mix, var_mix, readout, _nodes(readout, n_bins))
    counter.add(R * _row_cost(cost, "law", "logits"), "coarse_readout")
    return out


def dispatch(
    method: str,
    tables: CircuitTables,
    dist: Distribution,
    counter: FlopCounter,
    *,
    strata: str,
    readout: str,
    n_bins: int,
    heavy: int,
    outputs: int | None,
    full_only: dict[str, tuple[object, object]],
) -> EstimateValue | None:
    """The coarse setting of estimator ``method`` when ``strata`` is not "full" (None when it is,
    after checking that ``heavy``/``outputs`` were left unset). ``full_only``: option -> (value,
    default) of the options only the full estimator reads; a MaxkError if any was changed."""
    if strata == "full":
        if heavy != 0 or outputs is not None:
            raise MaxkError(f"{method!r}: heavy and outputs apply to the coarse strata ({', '.join(STRATA)}) only")
        return None
    changed = sorted(name for name, (value, default) in full_only.items() if value != default)
    if changed:
        raise MaxkError(
            f"{method!r} with strata={strata!r}: option(s) {', '.join(changed)} apply to strata='full' only"
        )
    est, per_max = coarse_propagation(tables, dist, strata, readout, n_bins, counter, heavy, outputs)
    details = {"strata": strata, "readout": readout, "heavy": int(heavy), "outputs": outputs}
    if readout == "bins":
        details["n_bins"] = int(n_bins)
    return EstimateValue(est, details={**details, "per_max": per_max.tolist()})
