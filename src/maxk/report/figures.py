"""The report's sweep figures (matplotlib, Agg, no pyplot state), each returned as a PNG
``data:`` URI so the page needs no other file: accuracy over seeds, bound against FLOPs with the
Pareto frontier, estimator error against FLOPs, and scaling across configurations. Every figure
has a title, axis labels and units; a method that never ran in a panel is simply absent there
(the tables say why)."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ..results import Estimate, ProofResult
from .paper import PAPER_ACCURACY, PAPER_CONFIG
from .runs import ConfigRuns, Runs
from .tables import estimator_summary, pareto_front, proof_summary

FLOPS_LABEL = "FLOPs (operation count, log scale)"
REL_LABEL = "relative bound (bound / accuracy, unitless)"
_MARKERS = "o^sDv<>pPX*h"


def figure(width: float, height: float) -> Figure:
    """A fresh figure (inches), not registered with pyplot."""
    return Figure(figsize=(width, height), dpi=90, layout="constrained")


def data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG ``data:`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def style(names: list[str]) -> dict[str, dict]:
    """One colour and marker per method name, the same in every figure."""
    return {n: {"color": f"C{i % 10}", "marker": _MARKERS[i % len(_MARKERS)]} for i, n in enumerate(names)}


def log_x(ax: Axes) -> None:
    """Log-scale x axis labelled at decades only (minor labels clutter a narrow range)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _log_log(ax: Axes, ylabel: str, title: str) -> None:
    """Finish a per-configuration panel of a quantity against FLOPs: both axes log, labelled."""
    log_x(ax)
    ax.set_yscale("log")
    ax.set_xlabel(FLOPS_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def _panels(fig: Figure, count: int) -> list[Axes]:
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(count)]


def _legend(fig: Figure, axes: list[Axes]) -> None:
    handles: dict[str, Artist] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=4, fontsize=8)


def accuracy_over_seeds(runs: Runs) -> str:
    """Each seed's evaluated accuracy, one column per configuration; the paper's mean ± std band
    where its configuration was swept. Cost O(seeds)."""
    fig = figure(7.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, conf in enumerate(runs.configs):
        acc = [s.eval.accuracy for s in conf.seeds]
        jitter = [i + 0.25 * ((j * 0.618) % 1.0 - 0.5) for j in range(len(acc))]
        sampled = any(s.eval.samples is not None for s in conf.seeds)
        ax.scatter(jitter, acc, s=18, color="C0" if not sampled else "C1", alpha=0.8)
        if (conf.cfg.n_ctx, conf.cfg.d_vocab, conf.cfg.d_model) == PAPER_CONFIG:
            m, sd = PAPER_ACCURACY
            ax.fill_between([i - 0.4, i + 0.4], m - sd, m + sd, color="tab:red", alpha=0.2, label="paper: mean ± std")
            ax.plot([i - 0.4, i + 0.4], [m, m], color="tab:red")
    ax.scatter([], [], s=18, color="C0", label="exhaustive accuracy")
    ax.scatter([], [], s=18, color="C1", label="sampled accuracy (estimate)")
    ax.set_xticks(range(len(runs.configs)), [c.label for c in runs.configs], fontsize=8)
    ax.set_xlabel("configuration")
    ax.set_ylabel("accuracy (fraction of inputs correct)")
    ax.set_title("Accuracy of every seed, by configuration")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return data_uri(fig)


def bound_vs_flops(runs: Runs, strategies: list[str]) -> str:
    """Per configuration, every seed's relative bound against its proof's FLOPs for every
    strategy, with the Pareto frontier over all those points. Cost O(seeds·strategies)."""
    sty = style(strategies)
    fig = figure(11, 3.8 * math.ceil(len(runs.configs) / 3) + 0.8)
    axes = _panels(fig, len(runs.configs))
    for ax, conf in zip(axes, runs.configs, strict=True):
        points: list[tuple[float, float]] = []
        for name in strategies:
            xs, ys = [], []
            for s in conf.seeds:
                p, rel = s.proofs.get(name), s.relative_bound(name)
                if isinstance(p, ProofResult) and p.flops is not None and rel is not None:
                    xs.append(max(p.flops, 1))
                    ys.append(rel)
            if xs:
                ax.scatter(xs, ys, s=16, alpha=0.75, label=name, **sty[name])
                points += zip(xs, ys, strict=True)
        front = [points[i] for i in pareto_front(points)]
        if front:
            fx = [x for x, _ in front] + [max(x for x, _ in points)]
            fy = [y for _, y in front] + [front[-1][1]]
            ax.step(fx, fy, where="post", color="black", linewidth=1.2, label="Pareto frontier")
        else:
            ax.text(0.5, 0.5, "no proof ran", transform=ax.transAxes, ha="center")
        log_x(ax)
        ax.set_xlabel(FLOPS_LABEL)
        ax.set_ylabel(REL_LABEL)
        ax.set_title(f"{conf.label} ({len(conf.seeds)} seeds)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Proof bound against proof length (FLOPs to check), every strategy and seed")
    _legend(fig, axes)
    return data_uri(fig)


def error_vs_flops(runs: Runs, estimators: list[str]) -> str:
    """Per configuration, every seed's |estimate − soft accuracy| against the estimator's FLOPs
    (log–log; an exact zero is drawn at 1e-12). Cost O(seeds·estimators)."""
    sty = style(estimators)
    fig = figure(11, 3.8 * math.ceil(len(runs.configs) / 3) + 0.8)
    axes = _panels(fig, len(runs.configs))
    for ax, conf in zip(axes, runs.configs, strict=True):
        drew = False
        for name in estimators:
            xs, ys = [], []
            for s in conf.seeds:
                e, err = s.estimates.get(name), s.estimate_error(name)
                if isinstance(e, Estimate) and e.flops is not None and err is not None and math.isfinite(err):
                    xs.append(max(e.flops, 1))
                    ys.append(max(abs(err), 1e-12))
            if xs:
                ax.scatter(xs, ys, s=16, alpha=0.75, label=name, **sty[name])
                drew = True
        if not drew:
            ax.text(0.5, 0.5, "no estimator ran", transform=ax.transAxes, ha="center")
        _log_log(ax, "|estimate − soft accuracy| (probability, log scale)", f"{conf.label} ({len(conf.seeds)} seeds)")
    fig.suptitle("Heuristic estimators: error against compute, every estimator and seed")
    _legend(fig, axes)
    return data_uri(fig)


def estimator_frontier(families: list[dict], estimators: list[str]) -> str:
    """Per configuration swept ``--with frontier`` (``tables.frontier_family``): each budgeted
    estimator's RMSE over seeds against its mean FLOPs spent, one point per budget joined by a
    line, and plain Monte Carlo's RMSE at every FLOP count (dashed; from each seed's measured
    per-input variance). Log–log. Cost O(seeds·methods·budgets)."""
    from ..estimators.frontier import mc_reference

    sty = style(estimators)
    fig = figure(11, 3.8 * math.ceil(len(families) / 3) + 0.8)
    axes = _panels(fig, len(families))
    for ax, fam in zip(axes, families, strict=True):
        rows = fam["rows"]
        for name in fam["methods"]:
            pts = sorted((r["flops"], r["rmse"]) for r in rows if r["method"] == name)
            if pts:
                xs, ys = zip(*pts, strict=True)
                extra = sty.get(name, {"color": "gray", "marker": "."})
                ax.plot(xs, [max(y, 1e-12) for y in ys], linewidth=1.2, markersize=5, label=name, **extra)
        grid, mc = mc_reference(fam)
        if len(grid):
            ax.plot(grid, np.sqrt(mc), "k--", linewidth=1.5, label="plain Monte Carlo at those FLOPs")
        else:
            ax.text(0.5, 0.5, "no budgeted estimate ran", transform=ax.transAxes, ha="center")
        _log_log(ax, "RMSE over seeds (probability, log scale)", f"{fam['name']} ({len(fam['models'])} seeds)")
    fig.suptitle("Estimators at every compute budget: RMSE against FLOPs, beside Monte Carlo")
    _legend(fig, axes)
    return data_uri(fig)


_LINESTYLES = ("-", "--", ":", "-.")


def _groups(configs: list[ConfigRuns], vary: str) -> list[tuple[str, list[ConfigRuns]]]:
    """The configurations grouped by everything but ``vary`` ("k" or "n"), each group sorted
    along it; groups with several values of ``vary`` first (those draw a line), then the rest."""
    other = "n" if vary == "k" else "k"
    groups: dict[tuple, list[ConfigRuns]] = {}
    for c in configs:
        fixed = (c.cfg.d_vocab if vary == "k" else c.cfg.n_ctx, c.cfg.d_model, c.cfg.n_heads)
        groups.setdefault(fixed, []).append(c)
    out = []
    for (v, d, h), confs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        confs.sort(key=lambda c: c.cfg.n_ctx if vary == "k" else c.cfg.d_vocab)
        out.append((f"{other}={v}, d={d}" + (f", h={h}" if h > 1 else ""), confs))
    return out


def _scaling_panel(ax: Axes, configs: list[ConfigRuns], names: list[str], summarise, pick, sty, vary: str) -> None:
    """One line per (method, group of configurations that differ only in ``vary``): the picked
    (mean, std) against k or n on a log2 axis; linestyle marks the group."""
    groups = _groups(configs, vary)
    for g, (_, confs) in enumerate(groups):
        for name in names:
            xs, ys, errs = [], [], []
            for conf in confs:
                v = pick(summarise(conf, name))
                if v is not None:
                    xs.append(conf.cfg.n_ctx if vary == "k" else conf.cfg.d_vocab)
                    ys.append(v[0])
                    errs.append(v[1] or 0.0)
            if xs:
                ls = _LINESTYLES[g % len(_LINESTYLES)]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=errs,
                    capsize=3,
                    linewidth=1,
                    markersize=5,
                    linestyle=ls,
                    label=name if g == 0 else None,
                    **sty[name],
                )
    for g, (label, _) in enumerate(groups):
        ax.plot([], [], color="black", linestyle=_LINESTYLES[g % len(_LINESTYLES)], label=label)
    values = sorted({c.cfg.n_ctx if vary == "k" else c.cfg.d_vocab for c in configs})
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("k (sequence length, log2 axis)" if vary == "k" else "n (vocabulary size, log2 axis)")
    ax.grid(True, alpha=0.3)


def scaling(runs: Runs, strategies: list[str], estimators: list[str]) -> str:
    """Each proof's mean relative bound and mean log2 FLOPs, each estimator's RMSE and mean log2
    FLOPs, against k (left column: configurations that share n, d, heads, one linestyle per such
    group) and against n (right column: those that share k); error bars: std over seeds."""
    fig = figure(12.5, 15)
    ax = [[fig.add_subplot(4, 2, 2 * r + c + 1) for c in range(2)] for r in range(4)]
    ps, es = style(strategies), style(estimators)

    def mean_sd(st):
        return None if st is None else (st.mean, st.std)

    def rmse(m):
        return None if m.rmse is None else (max(m.rmse, 1e-12), 0.0)

    panels = (
        (strategies, proof_summary, lambda m: mean_sd(m.value), ps, REL_LABEL, "Proofs: relative bound"),
        (
            strategies,
            proof_summary,
            lambda m: mean_sd(m.log2_flops),
            ps,
            "log2 FLOPs to check (log2 of a count)",
            "Proofs: cost",
        ),
        (estimators, estimator_summary, rmse, es, "RMSE vs soft accuracy (probability, log)", "Estimators: error"),
        (
            estimators,
            estimator_summary,
            lambda m: mean_sd(m.log2_flops),
            es,
            "log2 FLOPs of the estimate (log2 of a count)",
            "Estimators: cost",
        ),
    )
    for row, (names, summarise, pick, sty, ylabel, title) in zip(ax, panels, strict=True):
        for a, vary in zip(row, ("k", "n"), strict=True):
            _scaling_panel(a, runs.configs, names, summarise, pick, sty, vary)
            a.set_ylabel(ylabel)
            a.set_title(f"{title} against {vary}")
            if title == "Estimators: error":
                a.set_yscale("log")
        if row[1].get_legend_handles_labels()[0]:
            row[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Scaling with k and n: provable bounds against heuristic estimates")
    return data_uri(fig)
