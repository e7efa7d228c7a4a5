"""Exact evaluation (``maxk.exact.evaluate``) against the batched forward pass over every input.

For the shipped trained model (n = 64, k = 4, 16.8M inputs) it times exhaustive evaluation through
the circuit tables (median of ``--repeats`` runs) and the batched forward pass over all inputs
(``maxk.exact.evaluate_forward``, median of ``--forward-repeats``) in the same run, checks that both
count the same correct inputs, and prints the times and their ratio. Goal (issue 2): <= 1 s on
2 cores and >= 15x faster than the forward pass. ``--k5`` also evaluates a trained n = 64, k = 5
model (1.07e9 inputs, cached after its first training; goal <= 90 s), where the forward pass is
timed on a slice of the inputs and extrapolated.

    python benchmarks/bench_exact.py [--repeats 5] [--forward-repeats 1] [--threads 2] [--k5]
                                     [--dist uniform|distinct]

Times are wall-clock seconds; "cpu" is the process's CPU time over the same runs (all threads),
which shows how much of a slow wall time came from sharing the cores with other work.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

import maxk
from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.exact import _accumulate, all_sequences, evaluate, evaluate_forward

T = TypeVar("T")


def _timed(fn: Callable[[], T], repeats: int) -> tuple[T, float, float, list[float]]:
    """(last result, median wall seconds, median cpu seconds) of ``repeats`` calls."""
    walls: list[float] = []
    cpus: list[float] = []
    res: T | None = None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        res = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)  # StatisticsError if repeats < 1
    assert res is not None
    return res, wall, cpu, walls


def _forward_slice_seconds(model, n_inputs: int, batch: int = 1 << 16) -> float:
    """Seconds for the forward pass (as in ``evaluate_forward``) on the first ``n_inputs`` inputs."""
    n, k = model.cfg.d_vocab, model.cfg.n_ctx
    m = model.float()
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, n_inputs, batch):
            toks = torch.as_tensor(all_sequences(n, k, start, min(start + batch, n_inputs)))
            _accumulate(m.last_logits(toks), toks.max(dim=1).values, None)
    return time.perf_counter() - t0


def _row(case, inputs, method, wall, cpu, walls, ratio, note=""):
    spread = f"{min(walls):.3f}-{max(walls):.3f}" if len(walls) > 1 else ""
    print(f"{case:10s} {inputs:>14,d} {method:22s} {wall:9.3f} {spread:>15s} {cpu:8.2f} {ratio:>8s}  {note}")


print = functools.partial(print, flush=True)  # noqa: A001 - progress shows in logs at once


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs of exhaustive evaluation (median)")
    ap.add_argument("--forward-repeats", type=int, default=1, help="runs of the forward pass (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2 = the issue's 2 cores)")
    ap.add_argument("--dist", default="uniform", choices=["uniform", "distinct"])
    ap.add_argument("--k5", action="store_true", help="also n=64, k=5 (trains and caches a model once)")
    ap.add_argument("--k5-repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dist={args.dist}")
    print(
        f"{'case':10s} {'inputs':>14s} {'method':22s} {'median s':>9s} {'range s':>15s} {'cpu s':>8s} {'speedup':>8s}"
    )
    model = maxk.load("default")
    n, k = model.cfg.d_vocab, model.cfg.n_ctx
    evaluate(model, args.dist)  # warm-up (thread pool, allocator)
    ex, ex_wall, ex_cpu, ex_walls = _timed(lambda: evaluate(model, args.dist), args.repeats)
    fw, fw_wall, fw_cpu, fw_walls = _timed(lambda: evaluate_forward(model, args.dist), args.forward_repeats)
    case = f"n={n} k={k}"
    _row(case, ex.n_sequences, "forward pass (batched)", fw_wall, fw_cpu, fw_walls, "1.0x")
    _row(
        case,
        ex.n_sequences,
        "exhaustive (tables)",
        ex_wall,
        ex_cpu,
        ex_walls,
        f"{fw_wall / ex_wall:.1f}x",
        "goal <= 1 s, >= 15x",
    )
    same = ex.correct == fw.correct
    print(
        f"  accuracy {ex.accuracy:.6f} ({ex.correct:,} correct; forward pass {fw.correct:,}: "
        f"{'same' if same else 'DIFFERENT'}), soft accuracy {ex.soft_accuracy:.8f} "
        f"(forward {fw.soft_accuracy:.8f}), loss {ex.loss:.6g}"
    )

    if args.k5:
        cfg = ModelConfig(d_vocab=64, n_ctx=5, d_model=32, d_head=32)
        t0 = time.perf_counter()
        m5 = maxk.trained_model(cfg, seed=0)
        if time.perf_counter() - t0 > 5:
            print(f"  (trained the k=5 model in {time.perf_counter() - t0:.0f} s; cached for next time)")
        tab5 = circuit_tables(m5)
        r5, w5, c5, walls5 = _timed(lambda: evaluate(tab5, args.dist), args.k5_repeats)
        sl = 1 << 22
        fw5 = _forward_slice_seconds(m5, sl) * (64**5 / sl)
        _row(
            "n=64 k=5",
            r5.n_sequences,
            "forward pass (extrap.)",
            fw5,
            float("nan"),
            [fw5],
            "1.0x",
            f"from {sl:,} inputs",
        )
        _row("n=64 k=5", r5.n_sequences, "exhaustive (tables)", w5, c5, walls5, f"{fw5 / w5:.1f}x", "goal <= 90 s")
        print(
            f"  accuracy {r5.accuracy:.6f} ({r5.correct:,} correct), soft accuracy {r5.soft_accuracy:.6f}, "
            f"loss {r5.loss:.6g}"
        )


if __name__ == "__main__":
    main()
