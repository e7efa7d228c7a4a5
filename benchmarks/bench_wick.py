"""Wick values of the cumulant explanation: what they find, and what they cost.

Part 1 (k = 4, n = 64, uniform, every input): on the shipped model, five noised copies of it
and an undertrained recipe model, the AUROC of the explanation-only score 1 − W(x) at finding
the inputs the model gets wrong (exact correctness), beside the first-order (mean-propagation)
explanation and the model's own confidence 1 − f(x); r2 = 1 − Var(f − W)/Var(f) and
Var(f)/Var(f − W); and the time of `wick` over all 64^4 inputs against `maxk.evaluate` in the
same run (goal: within 3x).
Speed (k = 4, n = 64, uniform, every input): for the shipped model and the undertrained one,
``--repeat`` alternating runs of `maxk.evaluate` and of `wick` in the same process, each run's
wall seconds, the split of wick's time into the explanation and the per-input values, the ratio
wick / evaluate of every run, and the same in CPU seconds of the process (all threads; on a
machine shared with other jobs the steadier figure) (goal: within 3x).
Floor (``--floor``, one thread, CPU seconds): `evaluate`, the part of the kernel no
restructuring of its float64 arithmetic avoids (each input's logits by the group blend and
Σ_o e^(L_o), the model's own probability on the max, in the kernel's tiles), and `wick`.
Part 2 (k = 10, n = 64, distinct): the time of W on 10^5 sampled inputs once the explanation
is built (goal: within 1 s), beside the explanation's own time.

    python benchmarks/bench_wick.py [--noised 5] [--no-k10] [--repeat 3] [--speed-only] [--threads 2] [--floor]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import maxk
from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import DISTINCT
from maxk.estimators.bench import noised_model
from maxk.exact import evaluate
from maxk.flops import FlopCounter
from maxk.train import trained_model
from maxk.wick_propagation import explain, wick
from maxk.wick_propagation.exhaustive import _groups
from maxk.wick_propagation.formula import TorchTables
from maxk.wick_propagation.summary import summarize


def _models(n_noised: int) -> list[tuple[str, maxk.MaxKTransformer]]:
    base = maxk.load("default")
    out = [("shipped", base)]
    for j, sigma in enumerate(np.linspace(0.1, 0.4, n_noised)):
        out.append((f"noised σ={sigma:.2f}", noised_model(base, float(sigma), seed=100 + j)))
    out.append(("undertrained (300 steps)", trained_model(ModelConfig(64, 4, 32, 32), seed=1, steps=300)))
    return out


def part1(n_noised: int) -> None:
    print(
        f"{'model':26s} {'accuracy':>9s} {'AUROC 1-W':>10s} {'1-W1':>8s} {'1-f':>8s} {'r2':>8s} "
        f"{'Var ratio':>10s} {'eval s':>7s} {'wick s':>7s} {'ratio':>6s}"
    )
    for name, model in _models(n_noised):
        tab = circuit_tables(model)
        ev = evaluate(tab)
        t0 = time.perf_counter()
        v = wick(tab)
        tw = time.perf_counter() - t0
        s = summarize(v)
        print(
            f"{name:26s} {ev.accuracy:9.5f} {s['auroc']:10.4f} {s['auroc_first_order']:8.4f} "
            f"{s['auroc_output']:8.4f} {s['r2']:8.4f} {s['variance_ratio']:10.3g} {ev.seconds:7.2f} {tw:7.2f} "
            f"{tw / ev.seconds:6.2f}",
            flush=True,
        )


def _timed(f, *args):
    """(f(*args), wall seconds, CPU seconds of the process: every thread's, the least disturbed
    by other jobs on a shared machine)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = f(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def speed(repeat: int) -> None:
    base = maxk.load("default")
    models = [
        ("shipped", base),
        ("undertrained (300 steps)", trained_model(ModelConfig(64, 4, 32, 32), seed=1, steps=300)),
    ]
    print(
        f"\n{'model':26s} {'run':>3s} {'eval s':>7s} {'wick s':>7s} {'explain':>8s} {'values':>7s} {'ratio':>6s}"
        f" {'eval cpu':>9s} {'wick cpu':>9s} {'cpu ratio':>9s}"
    )
    for name, model in models:
        tab = circuit_tables(model)
        evaluate(tab)  # warm-up: first-call costs of either are not what is compared
        ratios, cpu_ratios = [], []
        for r in range(repeat):
            ev, _, ce = _timed(evaluate, tab)
            v, tw, cw = _timed(wick, tab)
            te = v.explanation.seconds
            ratios.append(tw / ev.seconds)
            cpu_ratios.append(cw / ce)
            print(
                f"{name:26s} {r + 1:3d} {ev.seconds:7.2f} {tw:7.2f} {te:8.2f} {tw - te:7.2f} {ratios[-1]:6.2f}"
                f" {ce:9.2f} {cw:9.2f} {cpu_ratios[-1]:9.2f}",
                flush=True,
            )
            del v
        print(
            f"{name:26s} ratio wick/evaluate: wall best {min(ratios):.2f}, worst {max(ratios):.2f}; "
            f"CPU best {min(cpu_ratios):.2f}, worst {max(cpu_ratios):.2f} (goal <= 3)"
        )


def floor(repeat: int) -> None:
    """What no restructuring of the float64 kernel avoids, timed beside `evaluate` (one thread,
    CPU seconds): every input's logits formed by the group blend and Σ_o e^(L_o), the model's own
    probability on the max, in the kernel's tiles, with nothing else (no rows, no Wick terms,
    no output)."""
    tab = circuit_tables(maxk.load("default"))
    n, k = tab.n, tab.k
    groups, _ = _groups(TorchTables.of(tab), n, k)
    MA, _, MB, lseB = groups[0]
    ia = 16
    ones = torch.ones(n, dtype=torch.float64)
    buf = torch.empty((ia, n, n), dtype=torch.float64)
    sums = torch.empty(ia * n, dtype=torch.float64)

    def softmax_sums() -> None:
        with torch.inference_mode():
            for a0 in range(0, MA.shape[0], ia):
                lam = torch.sigmoid(groups[0][1][a0 : a0 + ia, None, :] - lseB[None])  # [A, j, q]
                lam_q = lam.permute(2, 0, 1).contiguous()
                for q in range(n):
                    torch.lerp(MB[None, :, q], MA[a0 : a0 + ia, q, None], lam_q[q, :, :, None], out=buf)
                    torch.mv(buf.view(-1, n).exp_(), ones, out=sums)

    torch.set_num_threads(1)
    evaluate(tab)
    head = f"{'one thread, CPU s':26s} {'evaluate':>9s} {'blend + Σe^L':>13s} {'wick':>7s}"
    print(f"\n{head} {'ratios to evaluate':>20s}")
    for _ in range(repeat):
        _, _, ce = _timed(evaluate, tab)
        _, _, cs = _timed(softmax_sums)
        _, _, cw = _timed(wick, tab)
        print(f"{'shipped':26s} {ce:9.2f} {cs:13.2f} {cw:7.2f} {cs / ce:9.2f} {cw / ce:9.2f}", flush=True)


def part2() -> None:
    model = trained_model(ModelConfig(64, 10, 32, 32), seed=0)
    tab = circuit_tables(model)
    rng = np.random.default_rng(0)
    x = DISTINCT.sample(64, 10, 100_000, rng)
    t0 = time.perf_counter()
    ex = explain(tab, DISTINCT, counter=FlopCounter())
    t_ex = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        vals = ex.values(x, FlopCounter())
        times.append(time.perf_counter() - t0)
    r = vals["soft"] - vals["wick"]
    print(
        f"\nk=10 n=64 distinct: explanation {t_ex:.2f} s; W on 10^5 sampled inputs {min(times):.3f} s "
        f"(best of 3); Var(f)/Var(f-W) on them {np.var(vals['soft']) / np.var(r):.3g}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--noised", type=int, default=5)
    ap.add_argument("--no-k10", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per model in the speed table")
    ap.add_argument("--speed-only", action="store_true", help="only the speed table")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (worker threads of both)")
    ap.add_argument("--floor", action="store_true", help="only the floor table (one thread)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.floor:
        floor(args.repeat)
        return
    if not args.speed_only:
        part1(args.noised)
    speed(args.repeat)
    if not args.no_k10 and not args.speed_only:
        part2()


if __name__ == "__main__":
    main()
