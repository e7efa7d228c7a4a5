"""Every figure the project computes, as exact JSON, so that a refactor can be checked bit for bit.

Prints (or writes with ``--out``) one JSON object: on the shipped model, exact evaluation under
both distributions, every proof strategy's certified count, bound and FLOPs, and every estimator's
estimate and FLOPs (seed 0); on ``--seeds`` recipe-trained models (n = 64, k = 4) every proof
strategy; on a noised k = 10 model, every estimator under ``distinct``. Floats are stored with
``repr`` so equal JSON means bit-identical figures. Timings are left out.

    python benchmarks/figures_snapshot.py [--seeds 10] --out before.json
    python benchmarks/figures_snapshot.py --seeds 10 --out after.json && diff before.json after.json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

import maxk
from maxk.config import ModelConfig
from maxk.estimators.bench import noised_model
from maxk.train import trained_model

ESTIMATORS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("mean", {}),
    ("bins", {}),
    ("cumulant", {}),
    ("sampling", {"samples": 10_000}),
    ("stratified", {"samples": 10_000}),
    ("systematic", {"samples": 10_000}),
)


def _proofs(model, dist: str, names) -> dict:
    out = {}
    for s in names:
        try:
            r = maxk.prove(model, s, dist)
        except maxk.MaxkError as e:
            out[s] = f"refused: {e}"
            continue
        out[s] = {"certified": r.certified, "bound": repr(r.bound), "flops": r.flops}
    return out


def _estimates(model, dist: str) -> dict:
    out = {}
    for method, opts in ESTIMATORS:
        e = maxk.estimate(model, method, dist, **opts)
        out[method] = {
            "estimate": repr(e.estimate),
            "flops": e.flops,
            "spread": None if e.spread is None else repr(e.spread),
        }
    return out


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    snap: dict = {}
    model = maxk.load("default")
    names = list(maxk.STRATEGIES)
    for dist in ("uniform", "distinct"):
        r = maxk.evaluate(model, dist)
        snap[f"shipped/exact/{dist}"] = {
            "correct": r.correct,
            "accuracy": repr(r.accuracy),
            "soft_accuracy": repr(r.soft_accuracy),
            "loss": repr(r.loss),
        }
        snap[f"shipped/proofs/{dist}"] = _proofs(model, dist, names)
        snap[f"shipped/estimates/{dist}"] = _estimates(model, dist)
    cfg = ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32)
    for seed in range(args.seeds):
        snap[f"seed{seed}/proofs/uniform"] = _proofs(
            trained_model(cfg, seed=seed), "uniform", [s for s in names if s != "brute"]
        )
    k10 = trained_model(ModelConfig(d_vocab=64, n_ctx=10, d_model=32, d_head=32), seed=0)
    snap["k10-noised/estimates/distinct"] = _estimates(noised_model(k10, 0.3, 1), "distinct")
    snap["k10/proofs/distinct"] = _proofs(k10, "distinct", ["cubic", "subcubic", "subcubic-split"])
    text = json.dumps(snap, indent=1, sort_keys=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
