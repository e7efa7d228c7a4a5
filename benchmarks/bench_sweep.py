"""Sweep throughput: seconds per seed in process against a Dask LocalCluster of ``--workers``
worker processes, on the same seeds of a small configuration in the same run (the records are
checked identical, timings aside). ``--paper`` instead runs ``--seeds`` of each of the paper's six
configurations in process and prints, per configuration, the seconds of each part of a seed and
the methods recorded as refused (the figures in docs/sweep.md).

    python benchmarks/bench_sweep.py [--seeds 0-5] [--k 4] [--vocab 16] [--steps 300] [--workers 2]
    python benchmarks/bench_sweep.py --paper [--seeds 0] [--only 4,64 --only 20,512] [--wick] [--paper-workers]
    python benchmarks/bench_sweep.py --full --out runs-k4 [--seeds 0-150] [--workers 2]

``--full`` is the issue's benchmark: the 151-seed k = 4, n = 64 sweep (training, exact evaluation,
every proof and estimator) on ``--workers`` local processes against the 60-minute goal, then the
paper's table from the records: accuracy mean ± std against 0.9992 ± 0.0015, and each strategy's
mean ± std relative bound beside the paper's family figures. A folder already swept is only
summarised (finished seeds are skipped; the wall time is then the sum of the records' seconds
divided by the workers, marked as such).

Wall-clock seconds on this machine, which other work shares: "cpu" is this process's CPU time
(in process only), to show how much a slow wall time owes to sharing the cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import maxk
from maxk.sweep import read_records, without_timings
from maxk.sweep.plan import DEFAULT_BUDGET, PAPER_CONFIGS, model_configs

PARTS = ("train", "eval", "proofs", "estimates", "wick")


def _cpu() -> float:
    return time.process_time()


def _warm() -> None:
    import maxk.sweep.seed  # noqa: F401  (a worker's first task would otherwise pay the imports)


def compare_runners(args: argparse.Namespace) -> None:
    import distributed

    common = dict(seeds=args.seeds, k=args.k, vocab=args.vocab, d_model=args.d_model, steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        here = maxk.sweep(Path(tmp) / "here", **common)
        wall_here, cpu_here = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        local_http: dict = {"dashboard_address": "127.0.0.1:0"}  # a free port, not 8787
        cluster: Any = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, silence_logs=40, **local_http
        )
        client: Any = distributed.Client(cluster)
        with cluster, client:
            client.run(_warm)
            start = time.perf_counter() - t0
            cpu0 = sum(client.run(_cpu).values())
            t0 = time.perf_counter()
            dask = maxk.sweep(Path(tmp) / "dask", scheduler=cluster.scheduler_address, **common)
            wall_dask = time.perf_counter() - t0
            cpu_dask = sum(client.run(_cpu).values()) - cpu0
        same = without_timings(read_records(Path(tmp) / "here")) == without_timings(read_records(Path(tmp) / "dask"))
    seeds = len(here.written)
    print(
        f"sweep of {seeds} seeds, k={args.k} n={args.vocab} d={args.d_model}, {args.steps} training steps "
        f"(every proof and estimator)"
    )
    print(f"{'runner':28s} {'s/seed':>8s} {'cpu s/seed':>10s} {'total s':>8s}")
    print(f"{'in process':28s} {wall_here / seeds:8.2f} {cpu_here / seeds:10.2f} {wall_here:8.1f}")
    name = f"LocalCluster, {args.workers} workers"
    print(f"{name:28s} {wall_dask / seeds:8.2f} {cpu_dask / seeds:10.2f} {wall_dask:8.1f}   (workers' cpu)")
    print(f"cluster start and worker imports: {start:.1f} s (not in the figures above)")
    print(f"ratio in-process / workers (wall per seed): {wall_here / wall_dask:.2f}x")
    print(f"records identical (timings aside): {same}")
    if len(dask.written) != seeds or not same:
        raise SystemExit("the two runs disagree")


def paper_configs(args: argparse.Namespace) -> None:
    wanted = [tuple(int(x) for x in s.split(",")) for s in args.only] if args.only else list(PAPER_CONFIGS)
    print(f"{'config':14s} " + " ".join(f"{p:>9s}" for p in (*PARTS, "total")) + "  refused")
    for kk, n in wanted:
        (cfg,) = model_configs(kk, n, 32)
        with tempfile.TemporaryDirectory() as tmp:
            extras = ["wick"] if args.wick else []
            workers = args.workers if args.paper_workers else None
            maxk.sweep(tmp, seeds=args.seeds, configs=[cfg], extras=extras, budget=args.budget, workers=workers)
            recs = read_records(tmp)
        for rec in recs:
            sec = rec["seconds"]
            parts = rec["proofs"] + rec["estimates"] + [x for x in (rec["wick"], rec["surprise"]) if x is not None]
            refused = [r["method"] for r in parts if r.get("kind") == "refused"]
            cells = " ".join(f"{sec.get(p, 0.0):9.1f}" for p in PARTS)
            name = f"k{kk}-n{n} s{rec['seed']}"
            print(f"{name:14s} {cells} {sum(sec.values()):9.1f}  {', '.join(refused) or '-'}", flush=True)
            if args.json:
                print(json.dumps({"config": [kk, n], "seed": rec["seed"], "seconds": sec, "refused": refused}))


def full_sweep(args: argparse.Namespace) -> None:
    from maxk.report import load_runs
    from maxk.report.paper import FAMILIES, PAPER_ACCURACY, family_of
    from maxk.report.tables import family_summary, proof_summary, stat

    seeds = args.seeds or "0-150"
    t0 = time.perf_counter()
    summary = maxk.sweep(args.out, seeds=seeds, k=4, vocab=64, d_model=32, workers=args.workers)
    wall = time.perf_counter() - t0
    runs = load_runs(args.out)
    (conf,) = [c for c in runs.configs if (c.cfg.n_ctx, c.cfg.d_vocab, c.cfg.d_model) == (4, 64, 32)]
    busy = sum(sum(s.seconds.values()) for s in conf.seeds)
    print(f"seeds finished: {len(conf.seeds)} ({len(summary.written)} run now, {summary.skipped} already there)")
    if summary.skipped:
        print(
            f"wall time not measured here for the skipped seeds; sum of per-seed seconds / workers: "
            f"{busy / args.workers / 60:.1f} min"
        )
    if summary.written:
        print(
            f"wall time of this run: {wall / 60:.1f} min for {len(summary.written)} seeds "
            f"({wall / len(summary.written):.1f} s per seed; goal: 151 seeds in 60 min on 2 cores)"
        )
    acc = stat(s.eval.accuracy for s in conf.seeds)
    assert acc is not None and acc.std is not None
    print(
        f"accuracy: {acc.mean:.5f} ± {acc.std:.5f} (paper {PAPER_ACCURACY[0]} ± {PAPER_ACCURACY[1]}); "
        f"|mean − 0.9992| = {abs(acc.mean - PAPER_ACCURACY[0]):.5f} (goal ≤ 0.001); "
        f"worst {min(s.eval.accuracy for s in conf.seeds):.4f}"
    )
    print(f"{'strategy':22s} {'bound / accuracy':>20s} {'log2 FLOPs':>11s}  paper (its family)")
    for name in maxk.STRATEGIES.names():
        ms = proof_summary(conf, name)
        fam = family_of(name)
        paper = (
            ""
            if fam is None or fam.paper_relative is None
            else f"{fam.paper_relative[0]} ± {fam.paper_relative[1]} ({fam.name})"
        )
        val = "refused" if ms.value is None else ms.value.fmt(4)
        fl = "" if ms.log2_flops is None else f"{ms.log2_flops.mean:.1f}"
        print(f"{name:22s} {val:>20s} {fl:>11s}  {paper}")
    for fam in FAMILIES:
        rel, _ = family_summary(conf, fam)
        if rel is not None and fam.paper_relative is not None:
            print(
                f"family {fam.name}: best member per seed {rel.fmt(4)} "
                f"(paper {fam.paper_relative[0]} ± {fam.paper_relative[1]})"
            )
    over = [(s.label, m) for s in conf.seeds for m in s.proofs if (r := s.relative_bound(m)) is not None and r > 1]
    print(f"proofs above their seed's accuracy: {len(over)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seeds", default=None, help="default 0-5 (runner comparison) or 0 (--paper)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--paper", action="store_true", help="time one seed of each paper configuration")
    ap.add_argument("--only", action="append", default=[], help="with --paper: a 'k,n' pair (repeatable)")
    ap.add_argument("--wick", action="store_true", help="with --paper: add the Wick summary")
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET)
    ap.add_argument("--json", action="store_true", help="with --paper: also one JSON line per seed")
    ap.add_argument(
        "--paper-workers", action="store_true", help="with --paper: run the seeds on --workers local processes"
    )
    ap.add_argument("--full", action="store_true", help="the 151-seed k=4, n=64 sweep and its paper table")
    ap.add_argument("--out", default="runs-k4", help="with --full: the sweep's folder (kept, resumable)")
    args = ap.parse_args()
    if args.full:
        full_sweep(args)
    elif args.paper:
        args.seeds = args.seeds or "0"
        paper_configs(args)
    else:
        args.seeds = args.seeds or "0-5"
        compare_runners(args)


if __name__ == "__main__":
    main()
