"""``maxk wick``: the cumulant explanation input by input, and the inputs that depart most from it."""

from __future__ import annotations

import click
import numpy as np

from .. import checkpoint
from ..atomic import atomic_path
from ..circuits import circuit_tables
from ..distributions import resolve
from ..errors import MaxkError
from ..wick_propagation import wick
from ..wick_propagation.summary import summarize, top_departures
from ._app import dist_option, echo_json, main


def _write_npz(path: str, inputs: np.ndarray, w: np.ndarray, soft: np.ndarray) -> None:
    """inputs (int8 when n <= 127), wick and soft (float32) arrays, written atomically."""
    small = inputs.astype(np.int8) if inputs.size == 0 or int(inputs.max()) < 128 else inputs
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, inputs=small, wick=w.astype(np.float32), soft=soft.astype(np.float32))


@main.command("wick")
@click.argument("model_path", metavar="MODEL", default="default")
@dist_option()
@click.option("--samples", type=int, default=None, help="sampled inputs (default: every input when n^k <= 2e7)")
@click.option("--seed", type=int, default=0, show_default=True, help="sampling seed")
@click.option(
    "--reference-dist",
    "reference",
    default=None,
    help="build the explanation on this law and score --dist's inputs by their departure from it "
    "(anomaly detection: AUROC at finding the inputs outside it, beside the model's confidence)",
)
@click.option("--top", type=int, default=10, show_default=True, help="inputs listed, largest |f - W| first")
@click.option("--json", "as_json", is_flag=True, help="print the summary (and the top inputs) as one JSON object")
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="write inputs, wick, soft (.npz)"
)
def wick_cmd(model_path, dist, samples, seed, reference, top, as_json, out_path) -> None:
    """Per-input Wick values W(x) of the cumulant explanation of MODEL's soft accuracy.

    W(x) splits into the stratum's estimate and the first- and second-order Wick terms of the
    wires the explanation tracks (attention sums); its mean over the distribution is the cumulant
    estimate exactly, and f(x) - W(x) is what the explanation leaves unexplained on x. Prints the
    AUROC of 1 - W at finding the inputs the model gets wrong (beside the first-order explanation
    and the model's own confidence), r2 and the variance ratio, and the inputs that depart most.
    With --reference-dist R the explanation is built on R (e.g. query-unique, the clean law of a
    planted trigger) and --dist's inputs are scored by |f - W|: the AUROC of finding the inputs
    outside R, beside the model's own confidence.
    MODEL is a maxk .safetensors file, a TransformerLens .pth checkpoint, or 'default'."""
    if top < 0:
        raise MaxkError(f"--top must be >= 0, got {top}")
    if samples is not None and samples < 2:
        raise MaxkError(f"--samples must be at least 2, got {samples}")
    model = checkpoint.load(model_path)
    tab = circuit_tables(model)
    d = resolve(dist, tab.n, tab.k)
    ref = d if reference is None else resolve(reference, tab.n, tab.k)
    v = wick(tab, d, samples=samples, seed=seed, reference=None if ref is d else ref)
    summary = summarize(v)
    idx = top_departures(v, top)
    terms = v.explanation.terms(np.asarray(v.inputs[idx], dtype=np.int64)) if len(idx) else []
    rows = [
        {
            "input": [int(t) for t in v.inputs[i]],
            "soft": float(v.soft[i]),
            "wick": float(v.wick[i]),
            "correct": bool(v.correct[i]),
            "stratum": int(v.stratum[i]),
            "constant": float(v.constant[i]),
            "first": float(v.first[i]),
            "second": float(v.second[i]),
            "terms": [[name, float(x)] for name, x in t[:4]],
        }
        for i, t in zip(idx, terms, strict=True)
    ]
    if out_path is not None:
        _write_npz(out_path, np.asarray(v.inputs), np.asarray(v.wick), np.asarray(v.soft))
    if as_json:
        echo_json({**summary, "dist": d.name, "reference_dist": ref.name, "top": rows})
        return
    s = summary
    click.echo(
        f"Wick values of the cumulant explanation ({d.name}, {s['n_inputs']:,} inputs, "
        f"{'every input' if s['exhaustive'] else 'sampled'}; {s['seconds']:.2f} s)\n"
        f"  estimate {s['estimate']:.6f}   mean W {s['mean_wick']:.6f}   mean f {s['mean_soft']:.6f}\n"
        f"  wrong inputs {s['wrong_share']:.3%}: AUROC of 1-W {s['auroc']:.4f}, first order "
        f"{s['auroc_first_order']:.4f}, model's confidence {s['auroc_output']:.4f}\n"
        f"  r2 {s['r2']:.4f} (first order {s['r2_first_order']:.4f}), Var(f)/Var(f-W) {s['variance_ratio']:.3g}"
    )
    a = s["anomaly"]
    if a is not None:
        click.echo(
            f"  explanation built on {a['reference']}; inputs outside it {a['outside_share']:.3%}: AUROC of "
            f"|f-W| {a['auroc']:.4f}, |f-W1| {a['auroc_first_order']:.4f}, 1-W {a['auroc_explanation_only']:.4f}, "
            f"model's confidence {a['auroc_output']:.4f}"
        )
    if rows:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"the {len(rows)} inputs that depart most from the explanation (|f - W|)")
        for col in ("input", "f", "W", "correct", "stratum est.", "1st", "2nd", "largest terms"):
            table.add_column(col, justify="left" if col in ("input", "largest terms") else "right")
        for r in rows:
            terms_txt = "; ".join(f"{name} {x:+.3g}" for name, x in r["terms"][:3])
            table.add_row(
                " ".join(map(str, r["input"])),
                f"{r['soft']:.4f}",
                f"{r['wick']:.4f}",
                "yes" if r["correct"] else "NO",
                f"{r['constant']:.4f}",
                f"{r['first']:+.3g}",
                f"{r['second']:+.3g}",
                terms_txt,
            )
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        console.print(table)
    if out_path is not None:
        click.echo(f"wrote {out_path}")
