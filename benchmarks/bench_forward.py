"""Per-input forward pass through the circuit tables (what every sampling estimator and the
benchmark truth spend their time on): ``CircuitTables.logits_torch``, which sums the attention-
weighted value rows with ``torch.embedding_bag``, against the straightforward gather of a
[b, k, n] block and an einsum, in the same run, on the same inputs.

    python benchmarks/bench_forward.py [--inputs 100000] [--repeats 5]

Both single-threaded (as the estimators run them), n = 64, k = 10, distinct inputs, in chunks
of 8192 inputs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import resolve
from maxk.model import MaxKTransformer

CHUNK = 1 << 13


def gather_einsum(tab, tokens: torch.Tensor) -> torch.Tensor:
    """The straightforward way: gather EVOU rows into [b, k, n], contract with the attention."""
    eqke, eqkp = torch.as_tensor(tab.eqke[0]), torch.as_tensor(tab.eqkp[0])
    evou, pvou = torch.as_tensor(tab.evou[0]), torch.as_tensor(tab.pvou[0])
    q = tokens[:, -1]
    att = torch.softmax(eqke[q[:, None], tokens] + eqkp[q], dim=-1)
    return torch.as_tensor(tab.eupu)[q] + torch.einsum("bk,bkn->bn", att, evou[tokens]) + att @ pvou


def timed(fn, chunks, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in chunks:
            fn(c)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    assert __doc__ is not None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    model = MaxKTransformer(ModelConfig(d_vocab=64, n_ctx=10, d_model=32, d_head=32))
    model.init_weights(g)
    tab = circuit_tables(model)
    toks = torch.as_tensor(resolve("distinct", 64, 10).sample(64, 10, args.inputs, np.random.default_rng(0)))
    chunks = list(torch.split(toks, CHUNK))
    diff = max(float((tab.logits_torch(c) - gather_einsum(tab, c)).abs().max()) for c in chunks)
    ours = timed(tab.logits_torch, chunks, args.repeats)
    base = timed(lambda c: gather_einsum(tab, c), chunks, args.repeats)
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"{args.inputs} inputs, n=64, k=10, one thread, median of {args.repeats}:")
    print(f"  embedding_bag (logits_torch) {mo:.3f} s   gather + einsum {mb:.3f} s   ratio {mb / mo:.1f}x")
    print(f"  max |logit difference| {diff:.2e}")


if __name__ == "__main__":
    main()
