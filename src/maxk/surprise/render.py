"""The surprise table as text: a rich table of the rows and a few summary lines."""

from __future__ import annotations

from rich.table import Table

from .table import SurpriseTable


def _bits(x: float | None, err: float | None = None) -> str:
    if x is None:
        return "-"
    s = f"{x:,.1f}" if abs(x) >= 100 else f"{x:.2f}"
    return s + (f" ± {err:,.2g}" if err else "")


def rows_table(table: SurpriseTable) -> Table:
    """One line per explanation: Y, S(π), S(Y | π), total (bits, ± standard error), kind, the
    presumption-free joint S(π) and Gross et al.'s unexplained dimensionality."""
    title = f"Surprise accounting (bits), {table.dist}, N = {table.n_sequences:,}"
    if table.family:
        title += f", averaged over {table.family['models']} noised models"
    t = Table(title=title)
    for col in ("explanation", "Y", "S(π)", "S(Y|π)", "total", "kind", "S(π) joint ≥", "dims", "dims·32"):
        t.add_column(col, justify="left" if col in ("explanation", "Y", "kind") else "right")
    for r in table.rows:
        kind = r["kind"] + (" (lower)" if SurpriseTable.lower_bound(r) else "")
        if r["explanation"] == "weights":
            kind += " (upper)"
        t.add_row(
            r["explanation"],
            "acc" if r["observed"] == "accuracy" else "soft",
            _bits(r["s_pi"], r["s_pi_error"]),
            _bits(r["s_y_given_pi"], r["s_y_error"]),
            _bits(r["total"], r["total_error"]),
            kind,
            _bits(r["s_pi_joint"]),
            "-" if r["dimensionality"] is None else f"{r['dimensionality']:,}",
            "-" if r["dimensionality_bits"] is None else f"{r['dimensionality_bits']:,.0f}",
        )
    return t


def summary_lines(table: SurpriseTable) -> list[str]:
    """The ranking by total surprise and the gap between the best explanation and the weights."""
    lines = []
    lower = {r["explanation"] for r in table.rows if SurpriseTable.lower_bound(r)}
    for obs in ("accuracy", "soft_accuracy"):
        ranked = table.ranking(obs)
        if ranked:
            lines.append(
                f"ranked ({obs}; ≥ marks a lower bound): "
                + ", ".join(f"{name} {'≥' if name in lower else ''}{total:,.0f}" for name, total in ranked)
            )
    gap = table.gap_to_weights()
    if gap is not None:
        best = table.best("accuracy")
        lines.append(
            f"best explanation of the accuracy (total not a lower bound): {best}; its total minus the "
            f"weights' description bound: {gap:+,.0f} bits"
        )
    if table.refused:
        lines.append("left out: " + "; ".join(f"{k}: {v}" for k, v in table.refused.items()))
    p = table.prior
    lines.append(f"prior: {p.get('samples')} initialisations ({p.get('recipe')}); cache {p.get('cache')}")
    return lines


def checks_table(table: SurpriseTable, name: str, limit: int = 20) -> Table:
    """The itemised checks of row ``name``, largest bits first (at most ``limit``)."""
    row = table.row(name)
    t = Table(title=f"Checks behind S(π) of {name} ({row.presumption})")
    for col in ("check", "count", "prior p", "bits", "±", "kind", "passes/trials"):
        t.add_column(col, justify="left" if col in ("check", "kind") else "right")
    for c in row.checks[:limit]:
        t.add_row(
            c["name"],
            f"{c['count']:,}",
            f"{c['p_pass']:.4g}",
            _bits(c["bits"]),
            "-" if c["error"] is None else f"{c['error']:,.2g}",
            c["kind"],
            f"{c['passes']:,}/{c['trials']:,}",
        )
    return t
