"""Proofs on trained several-head models: every strategy's bound / exact accuracy and FLOPs.

Recipe-trained models (n = 64, k = 4, d_model = 32, cached) with H heads of d_head each
(``--config H:d_head``, default 2:16, 2:32, 4:8, 4:32): brute force is left out; cubic handles
any number of heads; the threshold proofs (the subcubic family, ``subcubic-coupled``, ``hybrid``'s
base) split the margin between the heads (``maxk.proofs.head_split``). The rows "..., views"
are the old way (``maxk.proofs.per_head``: the minimum over the heads' one-head views of their
thresholds, every head alone), for ``subcubic-coupled`` and ``subcubic-split``, measured in the
same run: the before of the split.

    python benchmarks/bench_multi_head_proofs.py [--config 2:16 --config 4:8] [--seeds 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from maxk.config import ModelConfig
from maxk.exact import evaluate
from maxk.flops import FlopCounter
from maxk.proofs.per_head import per_head_thresholds
from maxk.proofs.registry import STRATEGIES, prove
from maxk.proofs.subcubic import SUBCUBIC_VARIANTS, count_certified, subcubic_thresholds
from maxk.proofs.subcubic_coupled import coupled_thresholds
from maxk.train import trained_model

CONFIGS = ("2:16", "2:32", "4:8", "4:32")


def views_rows(model) -> list[tuple[str, int, float, float]]:
    """subcubic-coupled and subcubic-split the old way (every view alone): name, certified
    count, FLOPs, seconds."""
    split = next(v for v in SUBCUBIC_VARIANTS if v.name == "subcubic-split").settings
    rows = []
    for name, th in (
        ("coupled, views", lambda v, c: coupled_thresholds(v, c)),
        ("split, views", lambda v, c: subcubic_thresholds(v, c, **split)),
    ):
        c = FlopCounter()
        t0 = time.perf_counter()
        T = per_head_thresholds(model, lambda v, c=c, th=th: th(v, c))
        rows.append((name, count_certified(T, model.cfg.k, "uniform"), c.total, time.perf_counter() - t0))
    return rows


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", default=[], help="H:d_head (repeatable)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--strategies", default="", help="comma-separated (default: every one but brute)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = [s for s in (args.strategies.split(",") if args.strategies else STRATEGIES.names()) if s != "brute"]
    print(f"{'model':28s} {'strategy':22s} {'bound/acc':>10s} {'FLOPs':>10s} {'s':>7s}")
    for spec in args.config or CONFIGS:
        heads, d_head = (int(x) for x in spec.split(":"))
        cfg = ModelConfig(d_vocab=64, n_ctx=4, d_model=32, d_head=d_head, n_heads=heads)
        for seed in range(args.seeds):
            model = trained_model(cfg, seed=seed)
            acc = evaluate(model).accuracy
            name = f"h={heads} dh={d_head} s{seed} acc {acc:.4f}"
            for row, certified, flops, seconds in views_rows(model):
                bound = certified / 64**4
                print(f"{name:28s} {row:22s} {bound / acc:10.4f} {flops:10.3g} {seconds:7.2f}", flush=True)
            for strategy in names:
                r = prove(model, strategy)
                print(
                    f"{name:28s} {strategy:22s} {r.bound / acc:10.4f} {r.flops or 0:10.3g} {r.seconds:7.2f}", flush=True
                )


if __name__ == "__main__":
    main()
