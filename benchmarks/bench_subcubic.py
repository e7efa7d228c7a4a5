"""The subcubic proof family against the cubic proof on trained paper-config models.

For each of ``--seeds`` seeds (default 10; n = 64, k = 4, d_model = d_head = 32, trained with the
paper's recipe and cached), runs ``cubic``, every subcubic strategy and ``subcubic-coupled``
(defaults) and prints per strategy the mean ± std over seeds of bound / true accuracy, FLOPs,
FLOPs / cubic's FLOPs and seconds.

    python benchmarks/bench_subcubic.py [--seeds 10] [--dist uniform]
"""

from __future__ import annotations

import argparse

import torch

from _stats import mean_sd
from maxk.config import ModelConfig
from maxk.exact import evaluate
from maxk.proofs.registry import prove
from maxk.proofs.subcubic import SUBCUBIC_VARIANTS
from maxk.train import trained_model


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--dist", default="uniform", choices=["uniform", "distinct"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=32)
    names = ["cubic", *(v.name for v in SUBCUBIC_VARIANTS), "subcubic-coupled"]
    rel: dict[str, list[float]] = {s: [] for s in names}
    flops: dict[str, list[float]] = {s: [] for s in names}
    ratio: dict[str, list[float]] = {s: [] for s in names}
    secs: dict[str, list[float]] = {s: [] for s in names}
    accs = []
    for seed in range(args.seeds):
        model = trained_model(cfg, seed=seed)
        acc = evaluate(model, args.dist).accuracy
        accs.append(acc)
        res = {s: prove(model, s, args.dist) for s in names}
        cubic_flops = res["cubic"].flops
        assert cubic_flops is not None  # every proof counts its FLOPs
        for s, r in res.items():
            assert r.flops is not None
            rel[s].append(r.bound / acc)
            flops[s].append(float(r.flops))
            ratio[s].append(r.flops / cubic_flops)
            secs[s].append(r.seconds)
        line = "  ".join(f"{s}={res[s].bound / acc:.3f}" for s in names)
        print(f"seed {seed:2d}  acc {acc:.4f}  {line}", flush=True)
    print(f"\nn=64 k=4, {args.seeds} seeds, dist={args.dist}; true accuracy {mean_sd(accs, '.4f')}")
    print(
        f"{'strategy':<21} {'bound / accuracy':>17} {'FLOPs':>21} {'FLOPs / cubic':>17} {'max ratio':>9} "
        f"{'seconds':>15}"
    )
    for s in names:
        print(
            f"{s:<21} {mean_sd(rel[s], '.3f'):>17} {mean_sd(flops[s], '.3g'):>21} {mean_sd(ratio[s], '.4f'):>17} "
            f"{max(ratio[s]):>9.4f} {mean_sd(secs[s], '.3f'):>15}"
        )


if __name__ == "__main__":
    main()
