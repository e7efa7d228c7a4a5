"""The proof-length / tightness frontier: bound against FLOPs for a set of proof results."""

from __future__ import annotations

import os

from ..atomic import atomic_path
from ..results import ProofResult


def plot_frontier(
    results: list[ProofResult],
    true_accuracy: float | None,
    path: str | os.PathLike,
    title: str = "",
    true_label: str = "true accuracy",
) -> None:
    """Draw bound vs FLOPs (log x) for ``results`` -- brute force as its own marker -- with a
    horizontal line at ``true_accuracy``; write a PNG to ``path`` atomically (matplotlib Agg)."""
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
        else:
            ax.scatter([flops], [r.bound], s=40, zorder=3, label=f"{r.method} ({r.bound:.4f})")
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
