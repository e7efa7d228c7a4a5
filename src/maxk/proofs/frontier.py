"""The proof-length / tightness frontier: bound against FLOPs for a set of proof results.

``frontier_runs(cfg)`` lists the (strategy, options) points that ``maxk prove --strategy all
--frontier`` runs: every registered strategy with its defaults, ``subcubic-coupled`` checking more
rivals exactly (everywhere, or in a second pass over the top max tokens or the pairs that gain
most, or the pairs that gain most within a FLOP budget), then the ``hybrid`` proof with
``cubic_top`` = 1, 2, 4, ... (cubic for the top max tokens, subcubic for the rest) and the cubic
proof with less exact work, so that bound against FLOPs is traced from the cheapest proof to
cubic with no wide gap. ``pareto`` keeps the points no other point beats on both axes.
"""

from __future__ import annotations

import os
from typing import Any

from ..atomic import atomic_path
from ..config import ModelConfig
from ..results import ProofResult

CUBIC_STEPS = ({"exact_outputs": 1, "exact_budget": 0.0}, {"exact_outputs": 2, "exact_budget": 0.5})
COUPLED_RIVALS = (2, 4, 8, 12, 16, 24, 32, 48)  # subcubic-coupled's exact_outputs on the frontier (< n; default 0)
# subcubic-coupled's second pass: (refine_outputs, refine_top), rivals for the top max tokens only
COUPLED_REFINE = ((2, 16), (4, 16), (8, 16), (4, 32), (8, 32), (16, 32))
COUPLED_NEAR = (2, 4)  # near_tokens with every output exact
# ... and over every max token, on the refine_pairs pairs it gains most on: (refine_outputs, refine_pairs)
COUPLED_PAIRS = (
    (4, 10),
    (8, 10),
    (16, 10),
    (32, 10),
    (8, 20),
    (16, 20),
    (32, 20),
    (8, 40),
    (16, 40),
    (32, 40),
    (16, 80),
    (32, 80),
    (16, 160),
    (32, 160),
    (8, 320),
    (16, 320),
    (32, 320),
    (8, 640),
    (16, 640),
    (32, 640),
)
# ... and within a FLOP budget for the whole proof: fractions of n³·k² (the cubic proof's order; at n = 64 cubic
# counts ~8–12 n³k² at k = 4, 5 and 10), a factor 1.25 apart, R = COUPLED_BUDGET_RIVALS; a budget below the
# r-rival proof's cost gives that proof
COUPLED_BUDGETS = tuple(round(0.3 * 1.25**j, 4) for j in range(9))  # 0.3 .. 1.79
COUPLED_BUDGET_RIVALS = 32
# ... and, where that pass flattens (k = 10), every output a possible rival and one near token: every other rung
COUPLED_NEAR_BUDGETS = COUPLED_BUDGETS[::2]
# hybrid on a budgeted coupled base (these fractions of n³k², one near token), the cubic proof for the max
# tokens where that base loses most per unit of cubic cost (cubic_pick="loss"), cubic_top = 1, 2, 3, 4, 6, ...
HYBRID_BASE_BUDGETS = (COUPLED_BUDGETS[4], COUPLED_BUDGETS[8])


def budget_scale(cfg: ModelConfig) -> int:
    """n³·k²: the FLOP scale of the cubic proof's order for a model of ``cfg``, which the budgeted
    frontier points (``COUPLED_BUDGETS``) are fractions of. O(1)."""
    return cfg.n**3 * cfg.k**2


def frontier_runs(cfg: ModelConfig, strategies: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(strategy, options) points of the frontier for a model of ``cfg``, cheapest family first:
    ``strategies`` (registered names) with defaults, subcubic-coupled with COUPLED_RIVALS,
    COUPLED_REFINE and COUPLED_PAIRS (rivals below n) and within the FLOP budgets COUPLED_BUDGETS ·
    ``budget_scale(cfg)`` (and COUPLED_NEAR_BUDGETS with every output a rival and one near token),
    hybrid with cubic_top = 1 and the cheapest cubic options, then cubic_top = 1, 2, 3, 4, 6, 8, 12,
    ... < n, on the default base and (cubic_pick "loss") on the budgeted bases HYBRID_BASE_BUDGETS,
    and the cubic proof with the options of CUBIC_STEPS (when
    those strategies are among them)."""
    runs: list[tuple[str, dict[str, Any]]] = [(s, {}) for s in strategies]
    if "subcubic-coupled" in strategies:  # more rivals checked exactly: between it and hybrid
        rivals = sorted({r for r in COUPLED_RIVALS if r < cfg.n} | {cfg.n - 1} - {0})  # n − 1: every output
        runs += [("subcubic-coupled", {"exact_outputs": r}) for r in rivals]
        # every output exact and the tokens just below the threshold one by one: the argument's
        # tightest, between it and hybrid / cubic where those are much dearer (k = 10)
        runs += [("subcubic-coupled", {"exact_outputs": cfg.n - 1, "near_tokens": b}) for b in COUPLED_NEAR]
        runs += [
            ("subcubic-coupled", {"refine_outputs": r, "refine_top": t})
            for r, t in COUPLED_REFINE
            if t <= cfg.n and r < cfg.n
        ]
        runs += [
            ("subcubic-coupled", {"refine_outputs": r, "refine_top": cfg.n, "refine_pairs": p})
            for r, p in COUPLED_PAIRS
            if r < cfg.n
        ]
        R = min(COUPLED_BUDGET_RIVALS, cfg.n - 1)
        runs += [
            (
                "subcubic-coupled",
                {"refine_outputs": R, "refine_top": cfg.n, "flop_budget": round(f * budget_scale(cfg))},
            )
            for f in COUPLED_BUDGETS
            if R > 0
        ]
        runs += [
            (
                "subcubic-coupled",
                {
                    "refine_outputs": cfg.n - 1,
                    "refine_top": cfg.n,
                    "near_tokens": 1,
                    "flop_budget": round(f * budget_scale(cfg)),
                },
            )
            for f in COUPLED_NEAR_BUDGETS
            if cfg.n > 1
        ]
    if "hybrid" in strategies:  # the first step costs the full tables' enclosure: keep it cheap
        runs.append(("hybrid", {"cubic_top": 1, **CUBIC_STEPS[0]}))
        tops = sorted({t for j in range(cfg.n.bit_length()) for t in (1 << j, 3 << j) if t < cfg.n})
        runs += [("hybrid", {"cubic_top": t}) for t in tops]  # 1, 2, 3, 4, 6, 8, 12, ...
        runs += [
            (
                "hybrid",
                {
                    "cubic_top": t,
                    "cubic_pick": "loss",
                    "base_budget": round(f * budget_scale(cfg)),
                    "base_near_tokens": 1,
                },
            )
            for f in HYBRID_BASE_BUDGETS
            for t in tops
        ]
    if "cubic" in strategies:
        runs += [("cubic", dict(o)) for o in CUBIC_STEPS]
    return runs


def pareto(results: list[ProofResult]) -> list[ProofResult]:
    """The results that no other has both fewer (or equal) FLOPs and a higher bound, by FLOPs."""
    out: list[ProofResult] = []
    for r in sorted(results, key=lambda r: (r.flops or 0, -r.bound)):
        if not out or r.bound > out[-1].bound:
            out.append(r)
    return out


def _label(r: ProofResult) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in sorted(r.options.items()))
    return f"{r.method}({opts})" if opts else r.method


def plot_frontier(
    results: list[ProofResult],
    true_accuracy: float | None,
    path: str | os.PathLike,
    title: str = "",
    true_label: str = "true accuracy",
    frontier: bool = False,
) -> None:
    """Draw bound vs FLOPs (log x) for ``results`` -- brute force as its own marker -- with a
    horizontal line at ``true_accuracy``; write a PNG to ``path`` atomically (matplotlib Agg).
    With ``frontier``, the points are small and unlabelled and the Pareto frontier (``pareto``,
    brute force left out) is drawn as a line through its points."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for r in results:
        assert r.flops is not None  # a proof always counts its FLOPs
        flops = max(r.flops, 1)
        if r.method == "brute":
            ax.scatter([flops], [r.bound], marker="*", s=160, color="black", zorder=3, label="brute force")
        elif frontier:
            ax.scatter([flops], [r.bound], s=14, color="tab:gray", zorder=2)
        else:
            ax.scatter([flops], [r.bound], s=40, zorder=3, label=f"{r.method} ({r.bound:.4f})")
    if frontier:
        front = pareto([r for r in results if r.method != "brute"])
        ax.plot(
            [max(r.flops or 1, 1) for r in front],
            [r.bound for r in front],
            "-o",
            color="tab:blue",
            markersize=4,
            zorder=3,
            label=f"frontier ({len(front)} points; best {_label(front[-1])})" if front else "frontier",
        )
    if true_accuracy is not None:
        ax.axhline(
            true_accuracy, color="tab:red", linestyle="--", linewidth=1, label=f"{true_label} {true_accuracy:.4f}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs to check the proof (log scale)")
    ax.set_ylabel("certified lower bound on accuracy")
    ax.set_ylim(min([0.0] + [r.bound for r in results]) - 0.02, 1.02)
    ax.set_title(title or "proof length vs bound")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
