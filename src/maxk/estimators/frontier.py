"""The MSE-versus-FLOPs frontier of the estimators against Monte Carlo (issue 11).

For a noised family (``bench.noised_model``; truth exact or from shared stratified samples, as in
``bench``) every method runs at every budget F through ``estimate(..., budget=F)`` (settings
chosen by ``budget.plan``; FLOPs counted). Per (method, budget) row: bias, RMSE, mean FLOPs
spent, and the **Monte Carlo reference**: plain sampling with B FLOPs draws ⌊B/f⌋ inputs (f =
the FLOPs ``sampling`` counts per input, at least one input), so on model j its MSE is
Var_j[p(x)]/⌊B/f⌋ with Var_j the measured per-input variance of the probability on the right
answer; ``mc_rmse`` is the square root of its mean over the family at each model's FLOPs spent
(the FLOPs on the plot's x-axis), ``mc_rmse_budget`` the same at B = F. ``mse_ratio`` =
MC MSE / the method's MSE (> 1: the method wins). With sampled truth the method's MSE includes
the truth's own variance (mean SE², ``mse_truth_noise``); ``mse_ratio_corrected`` subtracts it.
A budget a method refuses (below its cheapest setting) is counted in ``refused`` and the row
kept only if some model ran.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from rich.table import Table

from ..atomic import atomic_path, write_text_atomic
from ..circuits import circuit_tables
from ..errors import MaxkError
from ..model import MaxKTransformer
from .bench import exact_truth, family_sigmas, noised_model, stratified_truth, truth_sample
from .budget import per_input_flops

DEFAULT_BUDGETS = (1e5, 1e6, 1e7, 1e8, 1e9)
FRONTIER_METHODS = ("wick-residual", "systematic", "allocated", "cumulant", "bins", "mean", "stratified", "sampling")


def parse_budgets(text: str) -> list[float]:
    """'1e5,1e6,...' -> [1e5, 1e6, ...] (positive, finite, ascending order kept); MaxkError otherwise."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise MaxkError(f"budget {part!r} is not a number") from None
        if not (math.isfinite(v) and v > 0):
            raise MaxkError(f"budget {part!r} must be a positive finite number of FLOPs")
        out.append(v)
    if not out:
        raise MaxkError("--budgets names no budget")
    return sorted(set(out))


def mc_mse(var_pop: np.ndarray, flops: np.ndarray, flops_per_input: float) -> np.ndarray:
    """Plain Monte Carlo's MSE with ``flops`` FLOPs on models of per-input variance ``var_pop``:
    Var/⌊flops/f⌋ (at least one input), elementwise."""
    n = np.maximum(1.0, np.floor(np.asarray(flops, dtype=np.float64) / flops_per_input))
    return np.asarray(var_pop, dtype=np.float64) / n


def mc_reference(fam: dict, points: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Plain Monte Carlo's MSE (mean over the family's models) on a log grid of ``points`` FLOP
    counts spanning the family's rows and budgets: (flops [points], mse [points]), the reference
    line of the MSE-against-FLOPs plots. Empty when there are no rows or models."""
    rows = fam["rows"]
    if not rows or not fam["models"]:
        return np.empty(0), np.empty(0)
    lo = min(min(r["flops"] for r in rows), min(fam["budgets"]))
    hi = max(max(r["flops"] for r in rows), max(fam["budgets"]))
    grid = np.geomspace(lo, hi, points)
    var = np.array([m["var_pop"] for m in fam["models"]], dtype=np.float64)
    f = fam["mc_flops_per_input"]
    return grid, np.array([float(np.mean(mc_mse(var, np.full(len(var), g), f))) for g in grid])


def run_frontier(
    name: str,
    base: MaxKTransformer,
    dist: str,
    n_models: int,
    sigmas: tuple[float, float],
    methods: Sequence[str],
    budgets: Sequence[float],
    *,
    truth_samples: int,
    exact: bool,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda s: None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run every method at every budget on a noised family of ``n_models`` models built from
    ``base`` (the same models, truth and seeds as ``bench.run_family``). Returns the family's
    record: meta, per-model truth, variance and results (estimate, FLOPs, seconds, settings or
    refusal), and ``rows`` (``frontier_rows``). With ``out`` the record is written (atomically)
    after every model, so a killed run keeps what it finished."""
    cfg = base.cfg
    sig = family_sigmas(n_models, *sigmas)
    t0 = time.perf_counter()
    ts = truth_sample(dist, cfg.n, cfg.k, min(truth_samples, 1_000_000) if exact else truth_samples, seed=seed + 7)
    log(f"{name}: {len(ts.tokens)} stratified samples drawn in {time.perf_counter() - t0:.1f}s")
    base_tab = circuit_tables(base)
    fam: dict = {
        "name": name,
        "dist": dist,
        "k": cfg.k,
        "n": cfg.n,
        "exact_truth": exact,
        "truth_samples": None if exact else len(ts.tokens),
        "mc_flops_per_input": float(per_input_flops(base_tab) + 2),
        "budgets": [float(b) for b in budgets],
        "methods": list(methods),
        "models": [],
    }
    for j, s in enumerate(sig):
        tab = circuit_tables(noised_model(base, float(s), seed * 100_003 + j))
        truth, se, var = exact_truth(tab, dist, ts) if exact else stratified_truth(tab, ts)
        rec: dict = {"sigma": float(s), "truth": truth, "truth_se": se, "var_pop": var, "runs": {}}
        _run_model(tab, dist, methods, budgets, seed + j, rec["runs"])
        fam["models"].append(rec)
        fam["rows"] = frontier_rows(fam)
        if out is not None:
            write_text_atomic(out, json.dumps(fam, indent=1, default=float))
        if progress is not None:
            progress(j + 1, len(sig))
    fam["rows"] = frontier_rows(fam)
    return fam


def _run_model(tab, dist: str, methods, budgets, seed: int, runs: dict) -> None:
    """Every method at every budget on one model's tables, into ``runs`` (key "method@budget")."""
    from .registry import estimate

    for meth in methods:
        for b in budgets:
            try:
                e = estimate(tab, meth, dist, seed=seed, budget=b)
            except MaxkError as err:
                runs[f"{meth}@{b:g}"] = {"refused": str(err)}
                continue
            opts = {k: v for k, v in e.options.items() if k not in ("seed", "budget")}
            runs[f"{meth}@{b:g}"] = {"estimate": e.estimate, "flops": e.flops, "seconds": e.seconds, "options": opts}


def model_frontier(
    tab,
    dist,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    *,
    methods: Sequence[str] = FRONTIER_METHODS,
    seed: int = 0,
    var_samples: int = 200_000,
    refused: dict[str, str] | None = None,
) -> dict:
    """One model's frontier record (what ``maxk sweep --with frontier`` stores per seed): every
    method at every budget (``runs``, keyed "method@budget" as in ``run_frontier``; a method named
    in ``refused`` is recorded refused at every budget with its reason, unrun), the per-input
    variance Var[p(x)] from ``var_samples`` inputs stratified by the max (what prices Monte Carlo)
    and the FLOPs plain sampling pays per input. Cost: each method within each budget, plus
    ``var_samples`` forward passes through the tables."""
    cfg = tab.cfg
    ts = truth_sample(dist, cfg.n, cfg.k, var_samples, seed=seed + 7)
    var = stratified_truth(tab, ts)[2]
    runs: dict = {}
    refused = refused or {}
    for meth in methods:
        if meth in refused:
            runs.update({f"{meth}@{b:g}": {"refused": refused[meth]} for b in budgets})
    _run_model(tab, dist, [m for m in methods if m not in refused], budgets, seed, runs)
    return {
        "budgets": [float(b) for b in budgets],
        "methods": list(methods),
        "mc_flops_per_input": float(per_input_flops(tab) + 2),
        "var_pop": var,
        "var_samples": len(ts.tokens),
        "runs": runs,
    }


def family_from_models(name: str, dist: str, models: Sequence[tuple[float, float, dict]]) -> dict:
    """A family record like ``run_frontier``'s, with its ``rows``, from per-model records: each
    (truth, the truth's standard error, ``model_frontier`` record). Budgets and methods are the
    union over the models, in first-seen order; Monte Carlo is priced at the first model's
    per-input FLOPs (the same for every model of one configuration)."""
    budgets: dict[float, None] = {}
    methods: dict[str, None] = {}
    for _, _, rec in models:
        budgets.update(dict.fromkeys(rec["budgets"]))
        methods.update(dict.fromkeys(rec["methods"]))
    fam: dict = {
        "name": name,
        "dist": dist,
        "mc_flops_per_input": models[0][2]["mc_flops_per_input"] if models else 1.0,
        "budgets": sorted(budgets),
        "methods": list(methods),
        "models": [
            {"truth": t, "truth_se": se, "var_pop": rec["var_pop"], "runs": rec["runs"]} for t, se, rec in models
        ],
    }
    fam["rows"] = frontier_rows(fam)
    return fam


def rerun(
    fam: dict,
    base: MaxKTransformer,
    methods: Sequence[str],
    budgets: Sequence[float],
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Re-run ``methods`` at ``budgets`` on the models of a family record made by ``run_frontier``
    from ``base`` with ``seed`` (each model rebuilt from its noise scale and seed; truth reused),
    replacing those runs; the rows are recomputed. Returns the record (updated in place)."""
    for b in budgets:
        if float(b) not in fam["budgets"]:
            fam["budgets"] = sorted({*fam["budgets"], float(b)})
    fam["methods"] = [*fam["methods"], *(m for m in methods if m not in fam["methods"])]
    for j, rec in enumerate(fam["models"]):
        tab = circuit_tables(noised_model(base, rec["sigma"], seed * 100_003 + j))
        _run_model(tab, fam["dist"], methods, budgets, seed + j, rec["runs"])
        if progress is not None:
            progress(j + 1, len(fam["models"]))
    fam["rows"] = frontier_rows(fam)
    return fam


def frontier_rows(fam: dict) -> list[dict]:
    """One row per (method, budget) with a result on some model: family, method, budget, flops
    (mean spent), rmse, mc_rmse, mc_rmse_budget, mse_ratio, mse_ratio_corrected, bias, worst,
    seconds, models, refused, settings (the plan on the first model)."""
    f = fam["mc_flops_per_input"]
    se2 = float(np.mean([m["truth_se"] ** 2 for m in fam["models"]])) if fam["models"] else 0.0
    rows = []
    for meth in fam["methods"]:
        for b in fam["budgets"]:
            key = f"{meth}@{b:g}"
            ran = [(m, m["runs"][key]) for m in fam["models"] if "estimate" in m["runs"].get(key, {})]
            refused = sum(1 for m in fam["models"] if "refused" in m["runs"].get(key, {}))
            if not ran:
                continue
            err = np.array([r["estimate"] - m["truth"] for m, r in ran])
            flops = np.array([r["flops"] for _, r in ran], dtype=np.float64)
            var = np.array([m["var_pop"] for m, _ in ran])
            mse = float(np.mean(err**2))
            mc = float(np.mean(mc_mse(var, flops, f)))
            mse_c = max(mse - se2, 0.0)
            rows.append(
                dict(
                    family=fam["name"],
                    method=meth,
                    budget=float(b),
                    flops=float(flops.mean()),
                    max_flops=float(flops.max()),
                    rmse=math.sqrt(mse),
                    mc_rmse=math.sqrt(mc),
                    mc_rmse_budget=math.sqrt(float(np.mean(mc_mse(var, np.full(len(var), b), f)))),
                    mse_ratio=mc / mse if mse > 0 else float("inf"),
                    mse_ratio_corrected=mc / mse_c if mse_c > 0 else float("inf"),
                    mse_truth_noise=se2,
                    bias=float(err.mean()),
                    worst=float(np.abs(err).max()),
                    seconds=float(np.mean([r["seconds"] for _, r in ran])),
                    models=len(ran),
                    refused=refused,
                    settings=ran[0][1]["options"],
                )
            )
    return rows


def plot_frontier(families: list[dict], path: str | os.PathLike) -> None:
    """Log–log MSE against FLOPs, one panel per family, one line per method (its budgets joined),
    plain Monte Carlo as the dashed reference line; a PNG written atomically (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * len(families), 4.6), dpi=120)
    for i, fam in enumerate(families):
        ax = fig.add_subplot(1, len(families), i + 1)
        rows = fam["rows"]
        for meth in fam["methods"]:
            pts = sorted((r["flops"], r["rmse"] ** 2) for r in rows if r["method"] == meth)
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, np.maximum(y, 1e-16), marker="o", markersize=4, label=meth)
        grid, mc = mc_reference(fam)
        if len(grid):
            ax.plot(grid, mc, "k--", linewidth=1.5, label="Monte Carlo (reference)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FLOPs counted")
        ax.set_ylabel("MSE against the truth")
        ax.set_title(f"{fam['name']} ({fam['dist']}, {len(fam['models'])} models)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def rows_table(rows: list[dict]) -> Table:
    """A rich table of frontier rows."""
    t = Table(title="MSE against FLOPs: each method at each budget, against Monte Carlo at the same FLOPs")
    cols = ("family", "method", "budget", "FLOPs", "RMSE", "MC RMSE", "MSE ratio", "(corrected)", "bias", "settings")
    for c in cols:
        t.add_column(c, justify="left" if c in ("family", "method", "settings") else "right")
    for r in rows:
        t.add_row(
            r["family"],
            r["method"],
            f"{r['budget']:.0e}",
            f"{r['flops']:.3g}",
            f"{r['rmse']:.2e}",
            f"{r['mc_rmse']:.2e}",
            f"{r['mse_ratio']:.3g}",
            f"{r['mse_ratio_corrected']:.3g}",
            f"{r['bias']:+.1e}",
            ",".join(f"{k}={v}" for k, v in r["settings"].items()) or "defaults",
        )
    return t
