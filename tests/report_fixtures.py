"""A small runs/ directory in the sweep's on-disk layout, built from real computations, for the
report's tests (imported, never collected).

Two configurations, a few seeds each: tiny models trained with few steps (``maxk.train.train``),
one untrained (randomly initialised) seed, exact evaluation, every registered proof strategy
(a declared refusal recorded as ``{"kind": "refused", ...}``), a few estimators, and the Wick
summary and the budgeted estimates (``frontier``) in one configuration only (null elsewhere), so
every part of the page and its missing-data paths have real numbers behind them. No figure in a
record is typed in.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import maxk
from maxk.atomic import write_text_atomic
from maxk.checkpoint import save
from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.estimators.frontier import model_frontier
from maxk.estimators.registry import ESTIMATORS, estimate
from maxk.exact import evaluate
from maxk.model import MaxKTransformer
from maxk.proofs.registry import STRATEGIES, prove
from maxk.registry import Refused
from maxk.train import train
from maxk.wick_propagation import wick
from maxk.wick_propagation.summary import summarize

#: (k, n, d_model, heads) of the two configurations, small enough that every input is enumerated;
#: the two-head one makes the single-head estimators refuse, as they would in a real sweep
CONFIGS = ((3, 6, 8, 1), (3, 8, 8, 2))
SEEDS = (0, 1, 2)
STEPS = 300
UNTRAINED_SEED = 2  # this seed's model is left as initialised: a model that gets many inputs wrong
ESTIMATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sampling", {"samples": 2000}),
    ("stratified", {"samples": 2000}),
    ("mean", {}),
    ("bins", {}),
)
FRONTIER_BUDGETS = (3e4, 1e5, 1e6)  # the first configuration's budgeted estimates
RECIPE = {"steps": STEPS, "batch": 64, "lr": 1e-3, "weight_decay": 0.01}


def config_dir_name(cfg: ModelConfig) -> str:
    """The sweep's directory name for a configuration: k{k}-n{n}-d{d_model}[-h{heads}]."""
    name = f"k{cfg.n_ctx}-n{cfg.d_vocab}-d{cfg.d_model}"
    return name + (f"-h{cfg.n_heads}" if cfg.n_heads > 1 else "")


def weights_sha256(model: MaxKTransformer) -> str:
    """What ``maxk sweep`` records as ``model_sha256``: the sha256 of the weights' safetensors
    serialisation without metadata."""
    from safetensors.torch import save as save_bytes

    return hashlib.sha256(save_bytes({k: v.contiguous() for k, v in model.state_dict().items()})).hexdigest()


def _refusal(method: str, reason: str) -> dict[str, Any]:
    return {"kind": "refused", "method": method, "reason": reason}


def _model(cfg: ModelConfig, seed: int) -> MaxKTransformer:
    if seed == UNTRAINED_SEED:
        m = MaxKTransformer(cfg)
        m.init_weights(torch.Generator().manual_seed(seed))
        for p in m.parameters():
            p.requires_grad_(False)
        m.training_record = {"seed": seed, "steps": 0, "untrained": True}
        return m
    return train(cfg, seed=seed, steps=STEPS, batch=RECIPE["batch"], lr=RECIPE["lr"])


def seed_record(cfg: ModelConfig, seed: int, folder: Path, with_wick: bool) -> dict[str, Any]:
    """Train (or initialise) one model, save it in ``folder`` and compute its record as the sweep
    does: exact evaluation, every proof strategy, the estimators in ``ESTIMATES``, the Wick summary
    when ``with_wick``."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    model = _model(cfg, seed)
    seconds["train"] = time.perf_counter() - t0
    model_file = folder / f"seed-{seed:04d}.safetensors"
    save(model, model_file, model.training_record)
    t0 = time.perf_counter()
    ev = evaluate(model, "uniform")
    seconds["eval"] = time.perf_counter() - t0
    proofs = []
    uniform = maxk.get_distribution("uniform")
    t0 = time.perf_counter()
    for name, st in STRATEGIES.items():
        reason = st.refusal(model.cfg, uniform)
        if reason is not None:
            proofs.append(_refusal(name, reason))
            continue
        try:
            proofs.append(prove(model, name, "uniform").to_dict())
        except Refused as e:
            proofs.append(_refusal(name, str(e)))
    seconds["proofs"] = time.perf_counter() - t0
    estimates = []
    t0 = time.perf_counter()
    for name, opts in ESTIMATES:
        reason = ESTIMATORS.get(name).refusal(model.cfg, uniform)
        if reason is not None:
            estimates.append(_refusal(name, reason))
            continue
        estimates.append(estimate(model, name, "uniform", seed=seed, **opts).to_dict())
    seconds["estimates"] = time.perf_counter() - t0
    summary = None
    if with_wick:
        t0 = time.perf_counter()
        summary = json.loads(json.dumps(summarize(wick(model, "uniform"))))
        seconds["wick"] = time.perf_counter() - t0
    frontier = None
    if with_wick:  # budgeted estimates too, as ``maxk sweep --with frontier`` records them
        t0 = time.perf_counter()
        rec = model_frontier(circuit_tables(model), "uniform", FRONTIER_BUDGETS, seed=seed, var_samples=5000)
        frontier = json.loads(json.dumps(rec))
        seconds["frontier"] = time.perf_counter() - t0
    return {
        "kind": "maxk-sweep-seed",
        "config": cfg.to_dict(),
        "seed": seed,
        "recipe": dict(RECIPE),
        "dist": "uniform",
        "model": model_file.name,
        "model_sha256": weights_sha256(model),
        "eval": ev.to_dict(),
        "proofs": proofs,
        "estimates": estimates,
        "wick": summary,
        "surprise": None,
        "frontier": frontier,
        "seconds": seconds,
    }


def build_runs(root: Path, configs=CONFIGS, seeds=SEEDS) -> Path:
    """Write a runs/ directory under ``root`` (manifest, one folder per configuration, a model and
    a record per seed; Wick summaries in the first configuration only). Returns its path."""
    runs = Path(root) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    manifest = {
        "kind": "maxk-sweep",
        "maxk": "0.1.0",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": {"seeds": list(seeds), "configs": [list(c) for c in configs], "steps": STEPS, "fixture": True},
    }
    write_text_atomic(runs / "manifest.json", json.dumps(manifest, indent=1))
    for i, (k, n, d, heads) in enumerate(configs):
        cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=d, d_head=d // heads, n_heads=heads)
        folder = runs / config_dir_name(cfg)
        folder.mkdir(exist_ok=True)
        for seed in seeds:
            rec = seed_record(cfg, seed, folder, with_wick=i == 0)
            write_text_atomic(folder / f"seed-{seed:04d}.json", json.dumps(rec, indent=1))
    return runs


def shared_runs(tmp_path_factory) -> Path:
    """The fixture runs/ directory, built once per test run (shared by xdist workers under a lock;
    treat it as read-only: copy it before changing anything). For a session fixture."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxk-report-fixture"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            build_runs(root)
            (root / "done").write_text("ok\n")
    return root / "runs"
