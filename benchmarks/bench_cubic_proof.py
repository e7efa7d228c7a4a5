"""The cubic proof at scale: FLOPs and seconds against n and k, and the growth per doubling of n.

For each (k, n) of ``--grid`` (default: k = 4 with n = 64, 128, 256, 512; n = 64 with k = 5, 10,
20; and the paper's (20, 512)), on the recipe-trained model (seed 0, d_model = d_head = 32,
cached), runs ``prove(model, "cubic", exact_budget=B, recheck_share=S)`` for each S of
``--shares`` (default: -1, no limit: every open case that can change the count rechecked
exactly; and 0.16, the default option: the exact rechecks' FLOPs at most 16% of the rest's,
``maxk.proofs.cubic.RecheckPool``) and each B of ``--budgets`` (default: -1, no limit on their
number; 0: no exact recheck) and each P of ``--positions`` (``per_position``; default "shared", the
default option: the worst arrangement per free position formed on the shared rivals only; "all":
on every output, the proof before) and prints its bound, FLOPs, seconds, the FLOPs and seconds ratio
to the previous n with the same k, S, B and P (goal: at most ×9 per doubling, i.e. O(n³) with room
for the log factors), and the bound lost against the unbounded run (S = B = -1) of the same (k,
n) where that ran before it (list -1 first in ``--shares`` and ``--budgets``). ``--full`` also
prints the bound with both -1 where n is at most ``--full-limit``, as the bound to compare with
when other options are run. ``--stages`` prints, for each run, the FLOPs of each stage of the
proof (the ``# stage:`` marks in ``maxk/proofs/cubic.py``; "tables": the enclosed tables,
"count": the final counting) and their ratio to the previous n (run on one thread: the stage walk is not thread-safe).

The proof's shards (``shards``, default 2) run on ``--threads`` workers: child processes
(``maxk.proofs.shard_processes``) from n³k² = 2³⁰ on. ``--one-thread`` also runs each setting on
one thread, the shards in turn (the same count and FLOPs, checked), and prints its seconds and the
speed-up of the parallel run over it; ``--vs-threads`` also runs it with the shards on worker
threads instead of processes (checked the same) and prints that speed-up; all measured in the
same run.

    python benchmarks/bench_cubic_proof.py [--grid 4:64,4:128,...] [--shares -1,0.16] [--budgets -1]
        [--positions shared,all] [--full] [--full-limit 128] [--stages] [--threads 2] [--one-thread]
        [--vs-threads]
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections import Counter
from contextlib import contextmanager

import torch

from maxk.config import ModelConfig
from maxk.flops import FlopCounter
from maxk.proofs import cubic
from maxk.proofs.registry import prove
from maxk.train import trained_model

_GRID = "4:64,4:128,4:256,4:512,5:64,10:64,20:64,20:512"


@contextmanager
def stage_flops():
    """Attribute every FLOP counted while active to the stage of ``certified_sets`` that counts
    it (the last ``# stage:`` mark above the running line), "count" (``MaxCertificate.count``)
    or "tables"; yields the Counter. Slows the proof down (a frame walk per count)."""
    assert cubic.__file__ is not None
    with open(cubic.__file__) as fh:
        marks = [(i, line.split("# stage:")[1].strip()) for i, line in enumerate(fh, 1) if "# stage:" in line]
    lines = [i for i, _ in marks]
    totals: Counter[str] = Counter()
    add = FlopCounter.add

    def counted(self, n, label="other"):
        f = sys._getframe(1)
        stage = "tables"
        while f is not None:
            if f.f_code.co_filename == cubic.__file__ and f.f_code.co_name in ("certified_sets", "count"):
                if f.f_code.co_name == "count":
                    stage = "count"
                else:
                    at = bisect.bisect_right(lines, f.f_lineno) - 1
                    stage = marks[at][1] if at >= 0 else "terms"
                break
            f = f.f_back
        totals[stage] += int(n)
        add(self, n, label)

    FlopCounter.add = counted
    try:
        yield totals
    finally:
        FlopCounter.add = add


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=_GRID, help="comma-separated k:n pairs")
    ap.add_argument("--full", action="store_true", help="also run unbounded (every case exact)")
    ap.add_argument("--full-limit", type=int, default=128, help="largest n for --full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budgets", default="-1", help="comma-separated exact_budget values")
    ap.add_argument("--shares", default="-1,0.16", help="comma-separated recheck_share values")
    ap.add_argument("--positions", default="shared", help="comma-separated per_position values")
    ap.add_argument("--stages", action="store_true", help="print each run's FLOPs per stage of the proof")
    ap.add_argument("--one-thread", action="store_true", help="also run on one thread; print the speed-up")
    ap.add_argument("--vs-threads", action="store_true", help="also run the shards on threads; print the speed-up")
    args = ap.parse_args()
    threads = 1 if args.stages else args.threads
    torch.set_num_threads(threads)
    grid = [tuple(int(x) for x in p.split(":")) for p in args.grid.split(",")]
    shares = [float(x) for x in args.shares.split(",")]
    budgets = [float(x) for x in args.budgets.split(",")]
    runs = [(s, b, p) for p in args.positions.split(",") for s in shares for b in budgets]
    head = f"{'k':>3s} {'n':>4s} {'pos':>6s} {'share':>6s} {'budget':>6s} {'bound':>10s} {'FLOPs':>10s} {'seconds':>8s}"
    one = f" {'1-thread s':>10s} {'speed-up':>8s}" if args.one_thread else ""
    one += f" {'threads s':>10s} {'speed-up':>8s}" if args.vs_threads else ""
    print(f"{head} {'xFLOPs':>7s} {'xsec':>6s} {'loss':>9s} {'full bound':>11s}{one}")
    prev: dict[tuple[int, float, float, str], tuple[int, float, float]] = {}
    prev_stages: dict[tuple[int, float, float, str], tuple[int, Counter[str]]] = {}
    for k, n in grid:
        model = trained_model(ModelConfig(d_vocab=n, n_ctx=k, d_model=32, d_head=32), seed=0)
        full = ""
        if args.full and n <= args.full_limit:
            full = f"{prove(model, 'cubic', exact_budget=-1, recheck_share=-1).bound:11.6f}"
        bounds: dict[tuple[float, float, str], float] = {}
        for s, b, p in runs:
            if args.stages:
                with stage_flops() as stages:
                    r = prove(model, "cubic", exact_budget=b, recheck_share=s, per_position=p)
            else:
                r = prove(model, "cubic", exact_budget=b, recheck_share=s, per_position=p)
            assert r.flops is not None
            bounds[(s, b, p)] = r.bound
            last = prev.get((k, s, b, p))
            if last is not None and last[0] * 2 == n:
                grow = f"{r.flops / last[1]:7.2f} {r.seconds / last[2]:6.2f}"
            else:
                grow = f"{'':7s} {'':6s}"
            prev[(k, s, b, p)] = (n, float(r.flops), r.seconds)
            unbounded = bounds.get((-1.0, -1.0, p))
            loss = f"{unbounded - r.bound:9.2e}" if unbounded is not None else f"{'':9s}"
            line = f"{k:3d} {n:4d} {p:>6s} {s:6g} {b:6g} {r.bound:10.6f} {r.flops:10.3g} {r.seconds:8.2f}"
            line += f" {grow} {loss} {full:11s}"
            if args.one_thread:
                torch.set_num_threads(1)
                r1 = prove(model, "cubic", exact_budget=b, recheck_share=s, per_position=p)
                torch.set_num_threads(threads)
                assert (r1.certified, r1.flops) == (r.certified, r.flops), "threads changed the proof"
                line += f" {r1.seconds:10.2f} {r1.seconds / r.seconds:8.2f}"
            if args.vs_threads:
                cubic._PROCESSES = False
                try:
                    rt = prove(model, "cubic", exact_budget=b, recheck_share=s, per_position=p)
                finally:
                    cubic._PROCESSES = True
                assert (rt.certified, rt.flops) == (r.certified, r.flops), "threads changed the proof"
                line += f" {rt.seconds:10.2f} {rt.seconds / r.seconds:8.2f}"
            print(line, flush=True)
            if args.stages:
                last_st = prev_stages.get((k, s, b, p))
                before = last_st[1] if last_st is not None and last_st[0] * 2 == n else None
                for name, x in stages.most_common():
                    ratio = f" x{x / before[name]:.2f}" if before and before.get(name) else ""
                    print(f"      {name:26s} {x:10.3g} {x / r.flops:6.1%}{ratio}", flush=True)
                prev_stages[(k, s, b, p)] = (n, stages)


if __name__ == "__main__":
    main()
