"""The report's sweep figures (matplotlib, Agg, no pyplot state), each returned as a PNG
``data:`` URI so the page needs no other file: accuracy over seeds, bound against FLOPs with the
Pareto frontier, estimator error against FLOPs, and scaling across configurations. Every figure
has a title, axis labels and units; a method that never ran in a panel is simply absent there
(the tables say why)."""

from __future__ import annotations

import base64
import io
import math

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
        log_x(ax)
        ax.set_yscale("log")
        ax.set_xlabel(FLOPS_LABEL)
        ax.set_ylabel("|estimate − soft accuracy| (probability, log scale)")
        ax.set_title(f"{conf.label} ({len(conf.seeds)} seeds)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Heuristic estimators: error against compute, every estimator and seed")
    _legend(fig, axes)
    return data_uri(fig)


def _scaling_panel(ax: Axes, configs: list[ConfigRuns], names: list[str], summarise, pick, sty) -> None:
    for name in names:
        xs, ys, errs = [], [], []
        for i, conf in enumerate(configs):
            v = pick(summarise(conf, name))
            if v is not None:
                xs.append(i)
                ys.append(v[0])
                errs.append(v[1] or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=errs, capsize=3, linewidth=1, markersize=5, label=name, **sty[name])
    ax.set_xticks(range(len(configs)), [c.label.replace(", d=", "\nd=") for c in configs], fontsize=7)
    ax.set_xlabel("configuration (sorted by k, then n)")
    ax.grid(True, alpha=0.3)


def scaling(runs: Runs, strategies: list[str], estimators: list[str]) -> str:
    """Across configurations (x: sorted by k then n): each proof's mean relative bound and mean
    log2 FLOPs, each estimator's RMSE and mean log2 FLOPs (error bars: std over seeds)."""
    fig = figure(11, 8.6)
    ax = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    ps, es = style(strategies), style(estimators)

    def mean_sd(st):
        return None if st is None else (st.mean, st.std)

    _scaling_panel(ax[0], runs.configs, strategies, proof_summary, lambda m: mean_sd(m.value), ps)
    ax[0].set_ylabel(REL_LABEL)
    ax[0].set_title("Proofs: relative bound")
    _scaling_panel(ax[1], runs.configs, strategies, proof_summary, lambda m: mean_sd(m.log2_flops), ps)
    ax[1].set_ylabel("log2 FLOPs to check the proof (log2 of a count)")
    ax[1].set_title("Proofs: cost")

    def rmse(m):
        return None if m.rmse is None else (max(m.rmse, 1e-12), 0.0)

    _scaling_panel(ax[2], runs.configs, estimators, estimator_summary, rmse, es)
    ax[2].set_yscale("log")
    ax[2].set_ylabel("RMSE of estimate vs soft accuracy (probability, log)")
    ax[2].set_title("Estimators: error")
    _scaling_panel(ax[3], runs.configs, estimators, estimator_summary, lambda m: mean_sd(m.log2_flops), es)
    ax[3].set_ylabel("log2 FLOPs of the estimate (log2 of a count)")
    ax[3].set_title("Estimators: cost")
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.suptitle("Scaling across configurations: provable bounds against heuristic estimates")
    return data_uri(fig)
