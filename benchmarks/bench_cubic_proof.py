"""The cubic proof at scale: FLOPs and seconds against n and k, and the growth per doubling of n.

For each (k, n) of ``--grid`` (default: k = 4 with n = 64, 128, 256, 512; n = 64 with k = 5, 10,
20; and the paper's (20, 512)), on the recipe-trained model (seed 0, d_model = d_head = 32,
cached), runs ``prove(model, "cubic", exact_budget=B)`` for each B of ``--budgets`` (default:
-1, the default option: every open case that can change the count rechecked exactly; and 0:
no exact recheck) and prints its bound, FLOPs, seconds, and the FLOPs and seconds ratio to the
previous n with the same k and B (goal: at most ×9 per doubling, i.e. O(n³) with room for the
log factors). ``--full`` also prints the bound with ``exact_budget=-1`` where n is at most
``--full-limit``, as the bound to compare with when other budgets are run.

    python benchmarks/bench_cubic_proof.py [--grid 4:64,4:128,...] [--full] [--full-limit 128]
"""

from __future__ import annotations

import argparse

import torch

from maxk.config import ModelConfig
from maxk.proofs.registry import prove
from maxk.train import trained_model

_GRID = "4:64,4:128,4:256,4:512,5:64,10:64,20:64,20:512"


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=_GRID, help="comma-separated k:n pairs")
    ap.add_argument("--full", action="store_true", help="also run with exact_budget=-1 (every case exact)")
    ap.add_argument("--full-limit", type=int, default=128, help="largest n for --full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budgets", default="-1,0", help="comma-separated exact_budget values")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = [tuple(int(x) for x in p.split(":")) for p in args.grid.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    head = f"{'k':>3s} {'n':>4s} {'budget':>6s} {'bound':>10s} {'FLOPs':>10s} {'seconds':>8s}"
    print(f"{head} {'xFLOPs':>7s} {'xsec':>6s} {'full bound':>11s}")
    prev: dict[tuple[int, float], tuple[int, float, float]] = {}
    for k, n in grid:
        model = trained_model(ModelConfig(d_vocab=n, n_ctx=k, d_model=32, d_head=32), seed=0)
        full = ""
        if args.full and n <= args.full_limit:
            full = f"{prove(model, 'cubic', exact_budget=-1).bound:11.6f}"
        for b in budgets:
            r = prove(model, "cubic", exact_budget=b)
            assert r.flops is not None
            last = prev.get((k, b))
            if last is not None and last[0] * 2 == n:
                grow = f"{r.flops / last[1]:7.2f} {r.seconds / last[2]:6.2f}"
            else:
                grow = f"{'':7s} {'':6s}"
            prev[(k, b)] = (n, float(r.flops), r.seconds)
            print(f"{k:3d} {n:4d} {b:6g} {r.bound:10.6f} {r.flops:10.3g} {r.seconds:8.2f} {grow} {full}", flush=True)


if __name__ == "__main__":
    main()
