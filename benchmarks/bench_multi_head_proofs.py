"""Proofs on trained several-head models: every strategy's bound / exact accuracy and FLOPs.

Recipe-trained models (n = 64, k = 4, d_model = 32, cached) with ``--heads`` heads of d_head =
32 / heads: brute force and cubic handle any number of heads; the subcubic family,
``subcubic-coupled`` and ``hybrid`` take several heads one at a time (``maxk.proofs.per_head``:
the minimum over the heads' one-head views of their thresholds).

    python benchmarks/bench_multi_head_proofs.py [--heads 2 --heads 4] [--seeds 1]
"""

from __future__ import annotations

import argparse

import torch

from maxk.config import ModelConfig
from maxk.exact import evaluate
from maxk.proofs.registry import STRATEGIES, prove
from maxk.train import trained_model


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, action="append", default=[])
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':22s} {'strategy':20s} {'bound/acc':>10s} {'FLOPs':>10s} {'s':>7s}")
    for heads in args.heads or [2, 4]:
        cfg = ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32 // heads, n_heads=heads)
        for seed in range(args.seeds):
            model = trained_model(cfg, seed=seed)
            acc = evaluate(model).accuracy
            name = f"h={heads} s{seed} acc {acc:.4f}"
            for strategy in STRATEGIES.names():
                if strategy == "brute":
                    continue
                r = prove(model, strategy)
                print(
                    f"{name:22s} {strategy:20s} {r.bound / acc:10.4f} {r.flops or 0:10.3g} {r.seconds:7.2f}", flush=True
                )


if __name__ == "__main__":
    main()
