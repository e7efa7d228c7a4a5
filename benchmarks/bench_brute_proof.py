"""Brute force against exact evaluation of the same model, in the same run.

For each of ``--seeds`` recipe-trained models (n = 64, k = ``--k``, d_model = d_head = 32, cached),
times ``maxk.exact.evaluate`` (what ``maxk eval`` runs) and ``prove(model, "brute")`` on every
input of ``--dist``, and prints both times, the ratio brute / eval (goal at k = 5: <= 2), the
certified count against the exact count of correct inputs, and brute force's FLOPs. The order of
the two runs alternates between seeds so that a drift in machine load does not favour one.

    python benchmarks/bench_brute_proof.py [--k 5] [--seeds 1] [--dist uniform] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from maxk.config import ModelConfig
from maxk.exact import evaluate
from maxk.proofs.registry import prove
from maxk.train import trained_model


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--dist", default="uniform", choices=["uniform", "distinct"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig(d_vocab=64, n_ctx=args.k, d_model=32, d_head=32)
    print(f"n=64 k={args.k} d=32, dist={args.dist}, {args.threads} threads")
    print(
        f"{'seed':>4s} {'eval s':>9s} {'brute s':>9s} {'brute/eval':>10s} {'correct':>14s} "
        f"{'certified':>14s} {'brute FLOPs':>12s}"
    )
    ratios = []
    for seed in range(args.seeds):
        model = trained_model(cfg, seed=seed)
        if seed % 2 == 0:
            ev = evaluate(model, args.dist)
            pr = prove(model, "brute", args.dist)
        else:
            pr = prove(model, "brute", args.dist)
            ev = evaluate(model, args.dist)
        assert pr.certified is not None and pr.flops is not None and ev.correct is not None
        assert pr.certified <= ev.correct, "unsound: brute force certified more than are correct"
        ratios.append(pr.seconds / ev.seconds)
        print(
            f"{seed:4d} {ev.seconds:9.2f} {pr.seconds:9.2f} {ratios[-1]:10.3f} {ev.correct:14d} "
            f"{pr.certified:14d} {pr.flops:12.3g}",
            flush=True,
        )
    print(f"worst brute/eval ratio {max(ratios):.3f} (goal <= 2)")


if __name__ == "__main__":
    main()
