"""Reading a sweep's runs/ directory (the layout ``maxk sweep`` writes, docs/report.md) into
records the report's tables and figures use. Nothing here computes a figure; a record that is
absent, unfinished or unreadable is kept as a problem to show, never an exception."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import MaxkError
from ..results import Estimate, EvalResult, ProofResult, Result

_SEED_FILE = re.compile(r"^seed-(\d+)\.json$")
_MODEL_FILE = re.compile(r"^seed-(\d+)\.safetensors$")


@dataclass(frozen=True)
class Refusal:
    """A strategy or estimator that declined this seed, and why (as the sweep recorded it)."""

    method: str
    reason: str


@dataclass(frozen=True)
class SeedRun:
    """One finished seed: its parsed results and the raw record.

    proofs / estimates: method name -> its result record or a ``Refusal``, in record order.
    wick / surprise / frontier: the recorded summaries (None when not computed or refused: the
    reason is then in ``extras_refused``); frontier is ``estimators.frontier.model_frontier``'s.
    model_path: the seed's safetensors (it may be missing; the page says so).
    """

    config_name: str
    cfg: ModelConfig
    seed: int
    dist: str
    eval: EvalResult
    proofs: dict[str, ProofResult | Refusal]
    estimates: dict[str, Estimate | Refusal]
    wick: dict[str, Any] | None
    surprise: dict[str, Any] | None
    frontier: dict[str, Any] | None
    extras_refused: dict[str, str]
    seconds: dict[str, float]
    model_path: Path
    model_sha256: str | None
    record: dict[str, Any] = field(repr=False)

    @property
    def label(self) -> str:
        """``k4-n64-d32/seed-0003``: how the page and ``--model`` name this seed."""
        return f"{self.config_name}/seed-{self.seed:04d}"

    def relative_bound(self, method: str) -> float | None:
        """Proof ``method``'s bound divided by the evaluated accuracy (None when refused or absent,
        or when the accuracy is 0)."""
        p = self.proofs.get(method)
        if not isinstance(p, ProofResult) or self.eval.accuracy <= 0:
            return None
        return p.bound / self.eval.accuracy

    def estimate_error(self, method: str) -> float | None:
        """Estimator ``method``'s estimate minus the evaluated soft accuracy (None when refused or
        absent)."""
        e = self.estimates.get(method)
        if not isinstance(e, Estimate):
            return None
        return e.estimate - self.eval.soft_accuracy


@dataclass(frozen=True)
class ConfigRuns:
    """The finished seeds of one configuration (sorted by seed) and what could not be read."""

    name: str
    cfg: ModelConfig
    seeds: list[SeedRun]
    unfinished: list[int]

    @property
    def label(self) -> str:
        """``k=4, n=64, d=32`` (+ heads when more than one)."""
        c = self.cfg
        return f"k={c.n_ctx}, n={c.d_vocab}, d={c.d_model}" + (f", h={c.n_heads}" if c.n_heads > 1 else "")


@dataclass(frozen=True)
class Runs:
    """A whole sweep: its manifest, configurations sorted by (k, n, d, heads), and problems (one
    line each: an unreadable record, a record that disagrees with its folder)."""

    root: Path
    manifest: dict[str, Any] | None
    configs: list[ConfigRuns]
    problems: list[str]

    @property
    def seeds(self) -> list[SeedRun]:
        """Every finished seed of every configuration."""
        return [s for c in self.configs for s in c.seeds]

    def find(self, label: str) -> SeedRun:
        """The seed named ``CONFIG/seed-NNNN`` (or ``CONFIG/N``); MaxkError naming the choices."""
        conf, _, seed = label.strip("/").partition("/")
        m = re.fullmatch(r"(?:seed-)?(\d+)", seed)
        for s in self.seeds:
            if s.config_name == conf and m is not None and s.seed == int(m.group(1)):
                return s
        choices = ", ".join(s.label for s in self.seeds[:6]) + (", ..." if len(self.seeds) > 6 else "")
        raise MaxkError(f"no finished seed {label!r} in {self.root} (finished: {choices or 'none'})")


def _parse_methods(items: Any, kind: type[Result], where: str) -> dict[str, Any]:
    if not isinstance(items, list):
        raise ValueError(f"{where} is not a list")
    out: dict[str, Any] = {}
    for d in items:
        if not isinstance(d, dict):
            raise ValueError(f"an entry of {where} is not an object")
        if d.get("kind") == "refused":
            out[str(d.get("method"))] = Refusal(str(d.get("method")), str(d.get("reason", "")))
            continue
        r = Result.from_dict(d)
        if not isinstance(r, kind):
            raise ValueError(f"an entry of {where} is a {r.kind}, expected {kind.kind}")
        out[r.method] = r
    return out


def _extra(rec: dict[str, Any], key: str, refused: dict[str, str]) -> dict[str, Any] | None:
    v = rec.get(key)
    if not isinstance(v, dict):
        return None
    if v.get("kind") == "refused":
        refused[key] = str(v.get("reason", ""))
        return None
    return v


def _frontier(rec: dict[str, Any], refused: dict[str, str]) -> dict[str, Any] | None:
    v = _extra(rec, "frontier", refused)
    if v is None:
        return None
    if not (
        isinstance(v.get("runs"), dict) and isinstance(v.get("budgets"), list) and isinstance(v.get("methods"), list)
    ):
        raise ValueError("'frontier' lacks its runs, budgets or methods")
    if not all(isinstance(v.get(k), (int, float)) for k in ("var_pop", "mc_flops_per_input")):
        raise ValueError("'frontier' lacks var_pop or mc_flops_per_input")
    return v


def parse_seed(rec: dict[str, Any], folder: Path) -> SeedRun:
    """A ``SeedRun`` from one ``seed-NNNN.json`` object in ``folder``. ValueError/TypeError/
    MaxkError when it does not follow the layout."""
    if rec.get("kind") != "maxk-sweep-seed":
        raise ValueError(f"kind is {rec.get('kind')!r}, expected 'maxk-sweep-seed'")
    cfg = ModelConfig.from_dict(rec["config"])
    ev = Result.from_dict(rec["eval"])
    if not isinstance(ev, EvalResult):
        raise ValueError("'eval' is not an evaluation record")
    seconds = rec.get("seconds") or {}
    refused: dict[str, str] = {}
    return SeedRun(
        config_name=folder.name,
        cfg=cfg,
        seed=int(rec["seed"]),
        dist=str(rec.get("dist", ev.dist)),
        eval=ev,
        proofs=_parse_methods(rec.get("proofs", []), ProofResult, "'proofs'"),
        estimates=_parse_methods(rec.get("estimates", []), Estimate, "'estimates'"),
        wick=_extra(rec, "wick", refused),
        surprise=_extra(rec, "surprise", refused),
        frontier=_frontier(rec, refused),
        extras_refused=refused,
        seconds={str(k): float(v) for k, v in seconds.items() if isinstance(v, (int, float))},
        model_path=folder / str(rec.get("model", f"seed-{int(rec['seed']):04d}.safetensors")),
        model_sha256=rec.get("model_sha256"),
        record=rec,
    )


def _read_config(folder: Path, problems: list[str]) -> ConfigRuns | None:
    seeds: list[SeedRun] = []
    finished: set[int] = set()
    for path in sorted(folder.iterdir()):
        m = _SEED_FILE.match(path.name)
        if m is None:
            continue
        finished.add(int(m.group(1)))
        try:
            run = parse_seed(json.loads(path.read_text()), folder)
        except (OSError, ValueError, TypeError, KeyError, MaxkError) as e:
            problems.append(f"{folder.name}/{path.name}: unreadable record ({type(e).__name__}: {e})")
            continue
        if run.seed != int(m.group(1)):
            problems.append(f"{folder.name}/{path.name}: record says seed {run.seed}; skipped")
            continue
        seeds.append(run)
    models = {int(m.group(1)) for p in folder.iterdir() if (m := _MODEL_FILE.match(p.name))}
    unfinished = sorted(models - finished)
    if not seeds:
        if unfinished:
            problems.append(f"{folder.name}: no finished seed ({len(unfinished)} unfinished)")
        return None
    cfgs = {s.cfg for s in seeds}
    if len(cfgs) > 1:
        problems.append(f"{folder.name}: seeds disagree on the model configuration; kept the first seed's")
        seeds = [s for s in seeds if s.cfg == seeds[0].cfg]
    return ConfigRuns(folder.name, seeds[0].cfg, sorted(seeds, key=lambda s: s.seed), unfinished)


def load_runs(root: str | os.PathLike) -> Runs:
    """Read a runs/ directory: ``manifest.json`` (optional) and every ``CONFIG/seed-NNNN.json``.
    A record that cannot be read becomes a line in ``problems``. MaxkError when ``root`` is not a
    directory or holds no finished seed. Cost: one JSON parse per seed."""
    root = Path(root)
    if not root.is_dir():
        raise MaxkError(f"{root}: not a directory (expected a sweep's runs/ directory)")
    problems: list[str] = []
    manifest = None
    mpath = root / "manifest.json"
    if mpath.exists():
        try:
            manifest = json.loads(mpath.read_text())
            if not isinstance(manifest, dict) or manifest.get("kind") != "maxk-sweep":
                problems.append("manifest.json: not a maxk-sweep manifest")
                manifest = manifest if isinstance(manifest, dict) else None
        except (OSError, ValueError) as e:
            problems.append(f"manifest.json: unreadable ({type(e).__name__}: {e})")
    else:
        problems.append("manifest.json: missing")
    configs = [c for p in sorted(root.iterdir()) if p.is_dir() and (c := _read_config(p, problems)) is not None]
    if not configs:
        raise MaxkError(f"{root}: no finished seed (no CONFIG/seed-NNNN.json record); run `maxk sweep` first")
    configs.sort(key=lambda c: (c.cfg.n_ctx, c.cfg.d_vocab, c.cfg.d_model, c.cfg.n_heads, c.name))
    return Runs(root, manifest, configs, problems)


def method_names(seeds: list[SeedRun], which: str, registered: list[str]) -> list[str]:
    """The method names ``which`` ("proofs" or "estimates") that appear in ``seeds``: registered
    ones in registry order first, then any other in first-seen order."""
    seen: list[str] = []
    for s in seeds:
        for name in getattr(s, which):
            if name not in seen:
                seen.append(name)
    return [n for n in registered if n in seen] + [n for n in seen if n not in registered]


def model_digests(data: bytes, model) -> set[str]:
    """The sha256 digests a record's ``model_sha256`` may hold for a model file: of the file's
    bytes, and of its weights alone (the safetensors serialisation of the state dict without
    metadata, which ``maxk sweep`` records because file metadata order varies)."""
    from safetensors.torch import save

    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    return {hashlib.sha256(data).hexdigest(), hashlib.sha256(weights).hexdigest()}
