"""The sections of the report page, each a function of the parsed runs returning HTML. Missing
data (a refusal, a seed without Wick or surprise figures, a model file that is gone) is shown as
such; no section raises on it."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from ..checkpoint import load
from ..circuits import circuit_tables
from ..errors import MaxkError
from ..results import Estimate, ProofResult
from . import figures
from .html import MISSING, Cell, img, missing, para, section, table
from .model_figures import attention_figure, check_inputs, circuit_heatmaps, example_inputs
from .paper import FAMILIES, PAPER_ACCURACY, PAPER_SEEDS, PAPER_WORST_ACCURACY
from .runs import ConfigRuns, Refusal, Runs, SeedRun, model_digests
from .tables import (
    MethodSummary,
    Stat,
    estimator_summary,
    family_summary,
    frontier_family,
    proof_summary,
    stat,
    wick_summary,
)


def _flops(st: Stat | None) -> str:
    return "" if st is None else f"2^{st.mean:.1f}"


def _stat_cell(st: Stat | None, digits: int = 4, extra: str = "", why: str = "", spec: str = "f") -> Cell:
    if st is None:
        return missing("refused" if why else "not run", why)
    return Cell(st.fmt(digits, spec) + (f" · {extra}" if extra else ""), st.mean)


def _refused_why(ms: MethodSummary) -> str:
    return "; ".join(ms.reasons)


def _sampled(conf: ConfigRuns) -> bool:
    return any(s.eval.samples is not None for s in conf.seeds)


def overview(runs: Runs) -> str:
    """Where the runs are from: the manifest's versions and options, seeds per configuration,
    unfinished seeds and the records that could not be read."""
    m = runs.manifest or {}
    facts = [
        f"runs: {runs.root}",
        "versions: " + (", ".join(f"{k} {m[k]}" for k in ("maxk", "torch", "numpy", "python") if k in m) or MISSING),
        f"created: {m.get('created', MISSING)}",
        "sweep options: " + (json.dumps(m["options"], sort_keys=True) if "options" in m else MISSING),
    ]
    rows = [
        [
            c.name,
            c.label,
            Cell(str(len(c.seeds)), len(c.seeds)),
            Cell(str(len(c.unfinished)), len(c.unfinished)),
            "sampled" if _sampled(c) else "exhaustive",
            ", ".join(sorted({s.dist for s in c.seeds})),
        ]
        for c in runs.configs
    ]
    parts = [
        "".join(para(f, "note") for f in facts),
        table(["folder", "configuration", "finished seeds", "unfinished", "evaluation", "distribution"], rows),
    ]
    if runs.problems:
        parts.append("<ul class='warn'>" + "".join(f"<li>{escape(p)}</li>" for p in runs.problems) + "</ul>")
    return section("overview", "The sweep", *parts)


def paper_table(runs: Runs) -> str:
    """Gross et al.'s table (DESIGN §5) beside this sweep's: accuracy mean ± std, and for each
    strategy family the mean ± std over seeds of its best relative bound and that proof's FLOPs;
    one column per configuration swept."""
    headers = ["row", f"paper (k=4, n=64, d=32, {PAPER_SEEDS} seeds)"] + [
        f"{c.label} ({len(c.seeds)} seeds)" for c in runs.configs
    ]
    acc_row: list[Cell | str] = ["accuracy", Cell(f"{PAPER_ACCURACY[0]} ± {PAPER_ACCURACY[1]}", css="paper")]
    worst_row: list[Cell | str] = ["worst seed's accuracy", Cell(f"≈ {PAPER_WORST_ACCURACY}", css="paper")]
    for c in runs.configs:
        st = stat(s.eval.accuracy for s in c.seeds)
        acc_row.append(_stat_cell(st, extra="sampled" if _sampled(c) else ""))
        worst_row.append(Cell(f"{min(s.eval.accuracy for s in c.seeds):.4f}"))
    rows = [acc_row, worst_row]
    for fam in FAMILIES:
        paper = fam.paper_relative
        ptxt = MISSING if paper is None else f"{paper[0]} ± {paper[1]}"
        if fam.paper_log2_flops is not None:
            ptxt += f" · ≈ 2^{fam.paper_log2_flops:.0f} FLOPs"
        row: list[Cell | str] = [f"{fam.name} [{fam.cost}]", Cell(ptxt, css="paper")]
        for c in runs.configs:
            rel, fl = family_summary(c, fam)
            why = "; ".join(r for m in fam.members for r in proof_summary(c, m).reasons)
            row.append(_stat_cell(rel, extra=f"{_flops(fl)} FLOPs" if fl else "", why=why))
        rows.append(row)
    return section(
        "paper",
        "The paper's table beside this sweep",
        para(
            "Relative bound = certified lower bound / evaluated accuracy, per seed; a family's value per seed is "
            "the best bound among its members that ran (brute: brute; cubic: cubic; subcubic: subcubic, "
            "subcubic-svd, subcubic-meandiff, subcubic-split, subcubic-coupled; quadratic: attention-quadratic, "
            "direct-quadratic), "
            "then mean ± std (sample) over seeds; FLOPs are the mean log2 count of that proof's verification. "
            "Where the accuracy is sampled (k ≥ 5 at paper sizes) the bound is normalised by the sampled "
            "accuracy, as the paper does. The paper's FLOPs for the subcubic and quadratic families are not "
            "quoted in DESIGN §5 (—). Hover a 'refused' cell for the reason.",
            "note",
        ),
        table(headers, rows),
    )


def strategy_table(runs: Runs, strategies: list[str]) -> str:
    """Every strategy in every configuration: relative bound, FLOPs, seconds, refusals."""
    rows = []
    for name in strategies:
        row: list[Cell | str] = [name]
        for c in runs.configs:
            ms = proof_summary(c, name)
            txt = []
            if ms.log2_flops:
                txt.append(f"{_flops(ms.log2_flops)} FLOPs")
            if ms.seconds:
                txt.append(f"{ms.seconds.mean:.3g} s")
            if ms.refused and ms.value is not None:
                txt.append(f"refused on {ms.refused}")
            row.append(_stat_cell(ms.value, extra=", ".join(txt), why=_refused_why(ms)))
        rows.append(row)
    return table(["strategy"] + [c.label for c in runs.configs], rows)


def proofs_section(runs: Runs, strategies: list[str]) -> str:
    """Bound against FLOPs over all seeds, with the Pareto frontier, and the per-strategy table."""
    return section(
        "proofs",
        "Proofs: bound against FLOPs",
        para(
            "Each point is one seed's proof: x its verification FLOPs (counted as it ran), y its bound / the "
            "seed's accuracy. The black step is the Pareto frontier over all points of the panel: no other "
            "proof there is both cheaper and tighter.",
            "note",
        ),
        img(figures.bound_vs_flops(runs, strategies), "relative bound against FLOPs per configuration"),
        strategy_table(runs, strategies),
    )


def estimators_section(runs: Runs, estimators: list[str]) -> str:
    """Estimator error against FLOPs, and per configuration each estimator's bias, RMSE, FLOPs."""
    if not estimators:
        return section("estimators", "Heuristic estimators", para("No seed has an estimate.", "missing"))
    rows = []
    for name in estimators:
        row: list[Cell | str] = [name]
        for c in runs.configs:
            ms = estimator_summary(c, name)
            if ms.value is None:
                row.append(missing("refused" if ms.refused else "not run", _refused_why(ms)))
                continue
            txt = f"bias {ms.value.mean:+.2e}, RMSE {ms.rmse:.2e} · {_flops(ms.log2_flops)} FLOPs"
            row.append(Cell(txt, ms.rmse))
        rows.append(row)
    return section(
        "estimators",
        "Heuristic estimators: error against compute",
        para(
            "Error = estimate − the seed's evaluated soft accuracy (exact where evaluated exhaustively; a "
            "sampled soft accuracy carries its own standard error). Bias is the mean error over seeds, RMSE "
            "its root mean square.",
            "note",
        ),
        img(figures.error_vs_flops(runs, estimators), "estimator error against FLOPs per configuration"),
        table(["estimator"] + [c.label for c in runs.configs], rows),
        frontier_part(runs, estimators),
    )


def frontier_part(runs: Runs, estimators: list[str]) -> str:
    """Every budgeted estimator at each budget (``--with frontier``): the RMSE-against-FLOPs
    figure beside Monte Carlo and, per configuration, a table of RMSE, FLOPs spent and the MSE
    ratio to Monte Carlo at those FLOPs."""
    fams = [f for c in runs.configs if (f := frontier_family(c)) is not None]
    if not fams:
        refused = sorted({r for s in runs.seeds if (r := s.extras_refused.get("frontier"))})
        why = f" Refused: {'; '.join(refused)}." if refused else " Run the sweep with --with frontier."
        return "<h3>At every compute budget</h3>" + para(
            f"Not computed: no seed has budgeted estimates.{why}", "missing"
        )
    parts = [
        "<h3>At every compute budget</h3>",
        para(
            "Each estimator run at each FLOP budget (its settings chosen to stay within it; x is the mean FLOPs "
            "it spent), its RMSE over the seeds against their evaluated soft accuracy. Monte Carlo: plain "
            "sampling with the same FLOPs, MSE = Var[p(x)] / ⌊FLOPs / per-input FLOPs⌋, Var measured on each "
            "seed. MSE ratio = Monte Carlo's MSE / the estimator's (above 1: the estimator wins). A cell is "
            "empty where every seed refused the budget (below the method's cheapest setting).",
            "note",
        ),
        img(figures.estimator_frontier(fams, estimators), "estimator RMSE against FLOPs at every budget"),
    ]
    for fam in fams:
        budgets = fam["budgets"]
        rows = []
        for name in fam["methods"]:
            by_budget = {r["budget"]: r for r in fam["rows"] if r["method"] == name}
            row: list[Cell | str] = [name]
            for b in budgets:
                r = by_budget.get(b)
                if r is None:
                    row.append(missing("refused", "below the method's cheapest setting, or over the sweep's budget"))
                    continue
                txt = f"RMSE {r['rmse']:.2e} · {r['flops']:.2g} FLOPs · ratio {r['mse_ratio']:.3g}"
                row.append(Cell(txt, r["mse_ratio"], css="win" if r["mse_ratio"] > 1 else ""))
            rows.append(row)
        parts.append(para(f"{fam['name']}: {len(fam['models'])} seeds", "note"))
        parts.append(f"<div class='scroll'>{table(['estimator'] + [f'{b:.0e} FLOPs' for b in budgets], rows)}</div>")
    return "".join(parts)


def _best(summaries: list[MethodSummary], key) -> MethodSummary | None:
    ran = [m for m in summaries if m.value is not None]
    return max(ran, key=key) if ran else None


def _best_cells(ms: MethodSummary | None, value: Cell) -> list[Cell]:
    """name, value and FLOPs cells of a best method, or missing cells when none ran."""
    if ms is None:
        return [missing("none ran"), missing(), missing()]
    fl = ms.log2_flops
    return [Cell(ms.method), value, Cell(_flops(fl), None if fl is None else fl.mean)]


def scaling_section(runs: Runs, strategies: list[str], estimators: list[str]) -> str:
    """Across configurations: the tightest proof short of brute force and the most accurate
    estimator, with their costs, and the scaling figure."""
    rows = []
    for c in runs.configs:
        proofs = [proof_summary(c, m) for m in strategies if m != "brute"]
        ests = [e for m in estimators if (e := estimator_summary(c, m)).rmse is not None]
        tight = _best(proofs, lambda m: m.value.mean)
        good = _best(ests, lambda m: -(m.rmse or 0.0))
        refused = sorted({m.method for m in proofs if m.value is None and m.refused})
        rows.append(
            [Cell(c.label)]
            + _best_cells(tight, _stat_cell(tight.value) if tight else missing())
            + _best_cells(good, Cell(f"{good.rmse:.2e}", good.rmse) if good else missing())
            + [Cell(", ".join(refused) or MISSING, css="wrap")]
        )
    headers = [
        "configuration",
        "tightest proof (not brute)",
        "its relative bound",
        "its FLOPs",
        "most accurate estimator",
        "its RMSE",
        "its FLOPs",
        "strategies refused",
    ]
    return section(
        "scaling",
        "Scaling across configurations: proofs against heuristic arguments",
        img(figures.scaling(runs, strategies, estimators), "scaling of proofs and estimators across configurations"),
        table(headers, rows),
    )


def wick_section(runs: Runs) -> str:
    """Mean ± std over seeds of the Wick summaries' figures, per configuration."""
    per = {c.name: wick_summary(c) for c in runs.configs}
    keys = list(dict.fromkeys(k for w in per.values() if w for k in w))
    if not keys:
        refused = sorted({r for s in runs.seeds if (r := s.extras_refused.get("wick"))})
        why = f" Refused: {'; '.join(refused)}." if refused else ""
        return section(
            "wick",
            "Wick propagation",
            para(f"Not computed: no seed has a Wick summary (run the sweep with --with wick).{why}", "missing"),
        )
    rows = []
    for k in keys:
        row: list[Cell | str] = [k]
        for c in runs.configs:
            w = per[c.name]
            why = "; ".join(dict.fromkeys(s.extras_refused["wick"] for s in c.seeds if "wick" in s.extras_refused))
            if w is None:
                row.append(missing("refused", why) if why else missing("not computed", "no Wick summary"))
            elif k not in w:
                row.append(missing())
            else:
                row.append(_stat_cell(w[k], digits=4, spec="g"))
        rows.append(row)
    n_with = {c.label: sum(s.wick is not None for s in c.seeds) for c in runs.configs}
    return section(
        "wick",
        "Wick propagation: the cumulant explanation input by input",
        para(
            "Mean ± std over the seeds that have a summary (" + ", ".join(f"{k}: {v}" for k, v in n_with.items()) + ")",
            "note",
        ),
        table(["figure"] + [c.label for c in runs.configs], rows),
    )


def _surprise_rows(seeds: list[SeedRun]) -> tuple[list[str], list[list[Cell]]]:
    """The surprise rows of ``seeds`` merged by explanation: numeric columns as mean ± std over
    the seeds, text from the first seed, lists as their length (nested objects left out)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    cols: list[str] = []
    for s in seeds:
        for i, r in enumerate((s.surprise or {}).get("rows") or []):
            if not isinstance(r, dict) or not r:
                continue
            cols += [k for k, v in r.items() if k not in cols and not isinstance(v, dict)]
            groups.setdefault(str(r.get("explanation", i)), []).append(r)
    rows = []
    for group in groups.values():
        row = []
        for col in cols:
            vals = [r.get(col) for r in group]
            nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            st = stat(nums)
            if st is not None:
                row.append(Cell(st.fmt(4, "g"), st.mean))
            elif isinstance(vals[0], list):
                row.append(Cell(str(len(vals[0])), len(vals[0])))
            elif vals[0] is None or vals[0] == "":
                row.append(missing())
            else:
                row.append(Cell(str(vals[0]), str(vals[0])))
        rows.append(row)
    return cols, rows


def surprise_section(runs: Runs) -> str:
    """Per configuration, the surprise table (bits) over the seeds that have one: each
    explanation's figures as mean ± std over those seeds."""
    parts = []
    for c in runs.configs:
        have = [s for s in c.seeds if s.surprise is not None]
        refused = sorted({r for s in c.seeds if (r := s.extras_refused.get("surprise"))})
        if not have:
            why = f" Refused: {'; '.join(refused)}." if refused else " Run the sweep with --with surprise."
            parts.append(para(f"{c.label}: not computed (no seed has a surprise table).{why}", "missing"))
            continue
        cols, rows = _surprise_rows(have)
        if not rows:
            parts.append(para(f"{c.label}: the surprise records have no rows.", "missing"))
            continue
        parts.append(para(f"{c.label}: mean ± std over the {len(have)} of {len(c.seeds)} seeds that have one", "note"))
        parts.append(f"<div class='scroll'>{table(cols, rows, sortable=True)}</div>")
        left_out = {k: v for s in have for k, v in ((s.surprise or {}).get("refused") or {}).items()}
        if left_out:
            parts.append(para("Left out: " + "; ".join(f"{k}: {v}" for k, v in left_out.items()), "note"))
    return section("surprise", "Surprise accounting (bits)", *parts)


def choose_seed(runs: Runs, label: str | None) -> SeedRun:
    """The seed ``label`` names, or by default the lowest-accuracy seed of the first configuration
    (configurations sorted by k, n): the one with the most to show."""
    if label is not None:
        return runs.find(label)
    return min(runs.configs[0].seeds, key=lambda s: (s.eval.accuracy, s.seed))


def model_section(chosen: SeedRun, examples: int = 4) -> str:
    """Heatmaps of the chosen model's circuit tables and its attention on a few inputs (one it
    gets wrong, if any); a missing or altered model file is said, not raised."""
    title = f"One model: {chosen.label}"
    head = para(
        f"{chosen.label}: accuracy {chosen.eval.accuracy:.6f}, soft accuracy {chosen.eval.soft_accuracy:.6f}, "
        f"loss {chosen.eval.loss:.4g} ({chosen.eval.method}); model file {chosen.model_path.name}.",
        "note",
    )
    try:
        data = chosen.model_path.read_bytes()
        model = load(chosen.model_path)
    except (OSError, MaxkError) as e:
        return section("model", title, head, para(f"The model cannot be drawn: {e}", "missing"))
    parts = [head]
    if chosen.model_sha256 and chosen.model_sha256 not in model_digests(data, model):
        parts.append(para("Warning: the model file's SHA-256 differs from the record's: it was replaced.", "warn"))
    tables = circuit_tables(model)
    heatmaps = [
        f"<div><h3>{name}</h3>{para(meaning, 'note')}{img(uri, f'{name} heatmap')}</div>"
        for name, meaning, uri in circuit_heatmaps(tables)
    ]
    parts.append(f"<div class='grid'>{''.join(heatmaps)}</div>")
    checked = check_inputs(tables, chosen.dist, seed=chosen.seed)
    picks = example_inputs(checked, examples, seed=chosen.seed)
    wrong = int((~checked.correct).sum())
    scope = f"{'every input' if checked.exhaustive else 'sampled inputs'} ({len(checked.tokens):,})"
    found = (
        f"The model gets {wrong:,} of {scope} wrong; the first panel is the most confidently wrong of them, "
        "the next the closest call it gets right."
        if wrong
        else f"The model gets {scope} right: no wrong input to show; the first panel is its closest call."
    )
    parts.append("<h3>Attention patterns</h3>" + para(found, "note"))
    parts.append(img(attention_figure(tables, checked, picks), "attention of the last position on a few inputs"))
    return section("model", title, *parts)


def _method_cell(res: ProofResult | Estimate | Refusal | None, value: float | None, fmt: str) -> Cell:
    if isinstance(res, Refusal):
        return missing("refused", res.reason)
    if res is None or value is None:
        return missing("not run")
    return Cell(format(value, fmt), value)


def seed_table(runs: Runs, strategies: list[str], estimators: list[str]) -> str:
    """Every finished seed in one table a reader sorts by clicking a header."""
    headers = ["configuration", "seed", "accuracy", "soft accuracy", "loss", "evaluation"]
    headers += [f"{m} bound/acc" for m in strategies] + [f"{m} error" for m in estimators]
    headers += ["Wick AUROC", "train s", "total s"]
    rows = []
    for s in runs.seeds:
        row: list[Cell | str] = [
            Cell(s.config_name, s.config_name),
            Cell(str(s.seed), s.seed),
            Cell(f"{s.eval.accuracy:.6f}", s.eval.accuracy),
            Cell(f"{s.eval.soft_accuracy:.6f}", s.eval.soft_accuracy),
            Cell(f"{s.eval.loss:.4g}", s.eval.loss),
            Cell(s.eval.method, s.eval.method),
        ]
        row += [_method_cell(s.proofs.get(m), s.relative_bound(m), ".4f") for m in strategies]
        row += [_method_cell(s.estimates.get(m), s.estimate_error(m), "+.2e") for m in estimators]
        auroc = (s.wick or {}).get("auroc")
        if isinstance(auroc, (int, float)):
            row.append(Cell(f"{auroc:.4f}", auroc))
        elif "wick" in s.extras_refused:
            row.append(missing("refused", s.extras_refused["wick"]))
        else:
            row.append(missing("not computed", "no Wick summary"))
        row.append(Cell(f"{s.seconds['train']:.3g}", s.seconds["train"]) if "train" in s.seconds else missing())
        total = sum(s.seconds.values())
        row.append(Cell(f"{total:.3g}", total) if s.seconds else missing())
        rows.append(row)
    return section(
        "seeds",
        "Every seed (click a header to sort)",
        para("bound/acc: the proof's bound over the seed's accuracy; error: estimate − soft accuracy.", "note"),
        f"<div class='scroll'>{table(headers, rows, sortable=True, id='seed-table')}</div>",
    )
