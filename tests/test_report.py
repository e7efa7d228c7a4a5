"""``maxk report``: reading a sweep's runs/, the numbers on the page against the records, the
missing-data paths, the figures embedded, atomic output, the command's errors."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.image import imread

from maxk import checkpoint
from maxk.circuits import circuit_tables
from maxk.errors import MaxkError
from maxk.exact import evaluate
from maxk.report import load_runs, render, report
from maxk.report.model_figures import attention, check_inputs, example_inputs
from maxk.report.paper import FAMILIES
from maxk.report.runs import Refusal
from maxk.report.tables import family_best, frontier_family, pareto_front, stat
from maxk.results import ProofResult
from maxk.sampling import evaluate_sampled

from .report_fixtures import CONFIGS, FRONTIER_BUDGETS, SEEDS, shared_runs
from .test_cli import assert_one_line_error, maxk_cli


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def page_html(report_runs):
    return render(load_runs(report_runs))


@pytest.fixture
def runs_copy(report_runs, tmp_path):
    dst = tmp_path / "runs"
    shutil.copytree(report_runs, dst)
    return dst


def records(runs: Path) -> dict[str, list[dict]]:
    return {
        d.name: [json.loads(p.read_text()) for p in sorted(d.glob("seed-*.json"))]
        for d in sorted(runs.iterdir())
        if d.is_dir()
    }


def text_of(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_load_runs_reads_every_seed_and_refusal(report_runs):
    runs = load_runs(report_runs)
    assert [len(c.seeds) for c in runs.configs] == [len(SEEDS)] * len(CONFIGS)
    assert runs.problems == [] and runs.manifest is not None
    two_heads = [c for c in runs.configs if c.cfg.n_heads == 2][0]
    for s in two_heads.seeds:
        assert isinstance(s.estimates["bins"], Refusal) and "single-head" in s.estimates["bins"].reason
        for name in ("brute", "cubic", "subcubic", "subcubic-coupled", "hybrid"):  # several heads
            assert isinstance(s.proofs[name], ProofResult), name
        assert s.wick is None
    for s in runs.seeds:
        assert s.relative_bound("brute") == pytest.approx(1.0)  # brute force certifies exactly the accuracy
        for name in s.proofs:
            rel = s.relative_bound(name)
            assert rel is None or 0.0 <= rel <= 1.0
    assert runs.find("k3-n6-d8/seed-0001").seed == 1 and runs.find("k3-n6-d8/1").seed == 1
    with pytest.raises(MaxkError, match="no finished seed"):
        runs.find("k3-n6-d8/seed-0099")


def test_paper_table_numbers_are_the_records(report_runs, page_html):
    """The accuracy row and the cubic row equal mean ± sample std computed here from the JSON."""
    text = text_of(page_html)
    assert "0.9992 ± 0.0015" in text and "0.954 ± 0.008" in text
    for name, recs in records(report_runs).items():
        acc = np.array([r["eval"]["accuracy"] for r in recs])
        assert f"{acc.mean():.4f} ± {acc.std(ddof=1):.4f}" in text, name
        cubic = [p for r in recs for p in r["proofs"] if p["method"] == "cubic" and p["kind"] == "proof"]
        if cubic:
            rel = np.array([p["bound"] / r["eval"]["accuracy"] for r, p in zip(recs, cubic, strict=True)])
            assert f"{rel.mean():.4f} ± {rel.std(ddof=1):.4f}" in text, name


def test_family_best_is_its_best_member(report_runs):
    for s in load_runs(report_runs).seeds:
        for fam in FAMILIES:
            best = family_best(s, fam)
            rels = [r for m in fam.members if (r := s.relative_bound(m)) is not None]
            assert (best is None) == (not rels)
            if best is not None:
                assert best[0] == max(rels)


def test_page_is_self_contained_and_every_image_is_a_png(page_html):
    assert not re.search(r"(src|href)=[\"'](?!data:)", page_html), "the page refers to a file or address"
    assert "http://" not in page_html and "https://" not in page_html
    uris = re.findall(r'<img src="(data:[^"]+)"', page_html)
    # accuracy, bound vs FLOPs, estimators, estimators at every budget, scaling, 5 heatmaps, attention
    assert len(uris) == 11
    for uri in uris:
        assert uri.startswith("data:image/png;base64,")
        pixels = imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0
    assert "Content-Security-Policy" in page_html and "default-src 'none'" in page_html


def test_every_figure_has_a_title_and_axis_labels(report_runs, monkeypatch):
    """Every axes drawn on the page has a title and both axis labels (colour bars aside)."""
    from matplotlib.figure import Figure

    from maxk.report import figures, model_figures

    seen = []
    real = figures.data_uri

    def spy(fig: Figure) -> str:
        seen.append(fig)
        return real(fig)

    monkeypatch.setattr(figures, "data_uri", spy)
    monkeypatch.setattr(model_figures, "data_uri", spy)
    render(load_runs(report_runs))
    assert len(seen) == 11
    for fig in seen:
        main_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert main_axes
        has_title = bool(fig.get_suptitle()) or all(ax.get_title() for ax in main_axes)
        assert has_title
        for ax in main_axes:
            assert ax.get_xlabel() and ax.get_ylabel(), (fig.get_suptitle(), ax.get_title())


def test_seed_table_has_every_seed_with_sort_values(report_runs, page_html):
    table = page_html.split('id="seed-table"')[1].split("</table>")[0]
    rows = table.split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == len(CONFIGS) * len(SEEDS)
    accs = sorted(float(re.findall(r'data-v="([^"]+)"', r)[2]) for r in rows)
    want = sorted(r["eval"]["accuracy"] for recs in records(report_runs).values() for r in recs)
    assert accs == pytest.approx(want, abs=0)
    assert "table.sortable" in page_html and "refused" in table


def test_wrong_inputs_agree_with_exact_evaluation(report_runs):
    """The examples are picked from the model run on every input; its wrong count is exact
    evaluation's, and the first example is an input it gets wrong."""
    run = min(load_runs(report_runs).seeds, key=lambda s: s.eval.accuracy)
    model = checkpoint.load(run.model_path)
    tables = circuit_tables(model)
    checked = check_inputs(tables, "uniform")
    ev = evaluate(model, "uniform")
    assert checked.exhaustive and len(checked.tokens) == ev.n_sequences
    assert int(checked.correct.sum()) == ev.correct
    picks = example_inputs(checked, 4)
    assert len(picks) == 4 and len(set(picks)) == 4 and not checked.correct[picks[0]]
    att = attention(tables, checked.tokens[picks[0]])
    assert att.shape == (model.cfg.n_heads, model.cfg.n_ctx) and np.allclose(att.sum(axis=1), 1.0)


def test_model_section_names_the_chosen_seed(report_runs):
    html = render(load_runs(report_runs), model="k3-n8-d8-h2/seed-0001")
    assert "One model: k3-n8-d8-h2/seed-0001" in text_of(html)
    assert "EQKE, head 1" not in html  # titles are inside the PNGs; the section lists the tables
    assert html.count("<h3>EQKE</h3>") == 1


def test_missing_and_broken_data_are_shown_not_raised(runs_copy):
    conf = runs_copy / "k3-n6-d8"
    (conf / "seed-0002.safetensors").unlink()  # the default chosen seed (lowest accuracy) loses its model
    (runs_copy / "k3-n8-d8-h2" / "seed-0000.json").write_text('{"kind": "maxk-sweep-seed", "seed"')  # torn
    (runs_copy / "k3-n8-d8-h2" / "seed-0007.safetensors").write_bytes(b"")  # a seed still running
    rec = json.loads((conf / "seed-0000.json").read_text())
    rec["wick"] = None
    rec["estimates"][0] = {"kind": "refused", "method": rec["estimates"][0]["method"], "reason": "test refusal"}
    (conf / "seed-0000.json").write_text(json.dumps(rec))
    rec = json.loads((conf / "seed-0001.json").read_text())
    rec["wick"] = {"kind": "refused", "method": "wick", "reason": "a test's wick refusal"}
    (conf / "seed-0001.json").write_text(json.dumps(rec))
    (runs_copy / "manifest.json").unlink()
    runs = load_runs(runs_copy)
    assert any("seed-0000.json: unreadable record" in p for p in runs.problems)
    assert "manifest.json: missing" in runs.problems
    assert [c.unfinished for c in runs.configs] == [[], [7]]
    assert runs.find("k3-n6-d8/1").extras_refused == {"wick": "a test's wick refusal"}
    html = render(runs)
    assert 'title="a test&#x27;s wick refusal">refused<' in html  # the seed table's Wick cell
    text = text_of(html)
    assert "The model cannot be drawn" in text
    assert "unreadable record" in text and "manifest.json: missing" in text
    assert "not computed" in text  # Wick of the second configuration, surprise everywhere


def test_a_replaced_model_file_is_flagged(runs_copy):
    conf = runs_copy / "k3-n6-d8"
    shutil.copy(conf / "seed-0001.safetensors", conf / "seed-0000.safetensors")
    runs = load_runs(runs_copy)
    assert "SHA-256 differs" in text_of(render(runs, model="k3-n6-d8/seed-0000"))
    assert "SHA-256 differs" not in text_of(render(runs, model="k3-n6-d8/seed-0001"))


def test_sampled_evaluation_and_a_surprise_table(runs_copy):
    """A configuration evaluated by sampling (as the sweep does where n^k is out of reach) is marked
    so; a seed's surprise rows are tabulated with their own columns."""
    conf = runs_copy / "k3-n8-d8-h2"
    for path in sorted(conf.glob("seed-*.json")):
        rec = json.loads(path.read_text())
        model = checkpoint.load(conf / rec["model"])
        rec["eval"] = evaluate_sampled(model, "uniform", samples=4000, seed=rec["seed"]).to_dict()
        if rec["seed"] == 0:
            # rendering test input in the shape of `maxk surprise --json` rows
            rec["surprise"] = {"rows": [{"explanation": "none", "total_bits": 12.5}, {"explanation": "brute"}]}
        path.write_text(json.dumps(rec))
    html = render(load_runs(runs_copy))
    text = text_of(html)
    assert "sampled" in text
    assert "explanation" in text and "total_bits" in text and "12.5" in text
    assert "k=3, n=6, d=8: not computed" in text


def test_frontier_rows_are_the_records(report_runs, page_html):
    """The budget table's RMSE and Monte Carlo figures, recomputed here from the raw records."""
    runs = load_runs(report_runs)
    conf = runs.configs[0]
    fam = frontier_family(conf)
    assert fam is not None and frontier_family(runs.configs[1]) is None
    assert fam["budgets"] == list(FRONTIER_BUDGETS)
    assert {r["method"] for r in fam["rows"]} >= {"sampling", "cumulant", "systematic"}
    for row in fam["rows"]:
        key = f"{row['method']}@{row['budget']:g}"
        ran = [(s, s.record["frontier"]) for s in conf.seeds if "estimate" in s.record["frontier"]["runs"][key]]
        err = [f["runs"][key]["estimate"] - s.eval.soft_accuracy for s, f in ran]
        assert row["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in err) / len(err)), rel=1e-12)
        per = ran[0][1]["mc_flops_per_input"]
        mc = [f["var_pop"] / max(1, math.floor(f["runs"][key]["flops"] / per)) for _, f in ran]
        assert row["mc_rmse"] == pytest.approx(math.sqrt(sum(mc) / len(mc)), rel=1e-12)
        assert row["flops"] <= row["budget"]
        assert f"RMSE {row['rmse']:.2e}" in page_html
    assert "At every compute budget" in page_html and "Run the sweep with --with frontier" not in page_html


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 20)), min_size=1, max_size=30))
def test_pareto_front_is_exactly_the_undominated_points(points):
    front = set(pareto_front(points))

    def dominated(i):
        x, y = points[i]
        return any((a <= x and b >= y) and (a, b) != (x, y) for a, b in points)

    undominated = {i for i in range(len(points)) if not dominated(i)}
    # among identical undominated points the front keeps one
    assert front <= undominated and {points[i] for i in front} == {points[i] for i in undominated}
    xs = [points[i][0] for i in pareto_front(points)]
    assert xs == sorted(xs)


def test_stat_is_mean_and_sample_std():
    xs = [0.1, 0.5, 0.25, None, float("nan")]
    s = stat(xs)
    assert s is not None and s.count == 3
    assert s.mean == pytest.approx(np.mean([0.1, 0.5, 0.25])) and s.std == pytest.approx(
        np.std([0.1, 0.5, 0.25], ddof=1)
    )
    one = stat([0.3])
    assert one is not None and one.std is None and one.fmt() == "0.3000"
    assert stat([None, math.nan]) is None


def test_report_writes_atomically_and_replaces_only_reports(report_runs, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    page = report(report_runs, out)
    assert page == out / "index.html" and page.stat().st_size > 50_000
    first = page.read_text()
    from maxk.report import build

    def boom(*a, **k):
        raise MaxkError("interrupted while rendering")

    monkeypatch.setattr(build, "render", boom)
    with pytest.raises(MaxkError, match="interrupted"):
        report(report_runs, out)
    assert page.read_text() == first  # the old report is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temporary directory left
    monkeypatch.undo()
    report(report_runs, out)  # a report directory is replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(MaxkError, match="not a maxk report"):
        report(report_runs, other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_report(report_runs, tmp_path):
    out = tmp_path / "r"
    proc = maxk_cli("report", report_runs, "--out", out, "--model", "k3-n6-d8/seed-0000", "--examples", 3)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "index.html") and (out / "index.html").exists()
    assert "One model: k3-n6-d8/seed-0000" in text_of((out / "index.html").read_text())


@pytest.mark.parametrize(
    "args",
    [
        ["report", "{tmp}/nowhere", "--out", "{tmp}/r"],
        ["report", "{tmp}/empty", "--out", "{tmp}/r"],
        ["report", "{runs}", "--out", "{tmp}/r", "--model", "k9-n9-d9/seed-0000"],
        ["report", "{runs}", "--out", "{tmp}/r", "--examples", "0"],
        ["report", "{runs}", "--out", "{tmp}/file"],
    ],
)
def test_cli_report_bad_input_is_one_line(report_runs, tmp_path, args):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    proc = maxk_cli(*[a.format(tmp=tmp_path, runs=report_runs) for a in args])
    assert_one_line_error(proc)
    assert not (tmp_path / "r").exists()
