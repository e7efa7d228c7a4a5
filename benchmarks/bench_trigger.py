"""Anomaly detection with the cumulant explanation: a planted trigger.

A max-of-k model (n = 64, k = 4) is trained with a backdoor: on the inputs whose query token
appears again among the free positions (the pattern, 4.6% of uniform inputs) the label is the
trigger's (``maxk.train.TRIGGERS``), elsewhere the max. The cumulant explanation is built on the
clean law — every input without the pattern, the distribution ``query-unique`` — and every one of
the 64^4 uniform inputs is scored by its departure from it, |f(x) − W(x)| (f the model's
probability on the true max, W its Wick value), never by knowing the pattern. Reported: the
model's accuracy on clean inputs (exact, ``evaluate(model, "query-unique")``) and on the pattern
(its training label), and the AUROC of separating the pattern's inputs from the others by

    |f − W|      second-order Wick value
    |f − W1|     first-order (mean-propagation) value
    1 − W        the explanation alone (no f)
    1 − max_o p  the model's own confidence (output-only baseline)
    1 − f        the model's probability on the true max (a reference that, like |f − W|, uses
                 the true label)

for the trigger model and, as a control, a model trained the same way without the trigger
(the same pattern as the "positive" set: there the AUROCs should be near 0.5).

    python benchmarks/bench_trigger.py [--trigger query-repeated:zero] [--heads 2] [--steps 30000]
                                       [--lr 3e-3] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from maxk.circuits import circuit_tables
from maxk.config import ModelConfig
from maxk.distributions import QUERY_UNIQUE, UNIFORM
from maxk.exact import evaluate
from maxk.metrics import weighted_auroc
from maxk.train import TRIGGERS, trained_model, trigger_labels
from maxk.wick_propagation import explain

_CHUNK = 1 << 20  # inputs per chunk of W and of the forward pass


def scores(model, trigger: str) -> dict:
    """The figures of one model: accuracies, and the AUROC of each score at finding the pattern."""
    n, k = model.cfg.n, model.cfg.k
    tab = circuit_tables(model)
    t0 = time.perf_counter()
    ex = explain(tab, QUERY_UNIQUE)
    t_explain = time.perf_counter() - t0
    xs = UNIFORM.enumerate(n, k)
    N = len(xs)
    fired = np.empty(N, dtype=bool)
    f = np.empty(N)
    W = np.empty(N)
    W1 = np.empty(N)
    top = np.empty(N)  # max_o softmax(logits)_o
    hit = np.empty(N, dtype=bool)  # the argmax is the training label (the trigger's on the pattern)
    wrong = np.empty(N, dtype=bool)  # the max's logit is not strictly above every other
    t0 = time.perf_counter()
    for s0 in range(0, N, _CHUNK):
        x = xs[s0 : s0 + _CHUNK]
        sl = slice(s0, s0 + len(x))
        v = ex.values(x)
        f[sl], W[sl], W1[sl], wrong[sl] = v["soft"], v["wick"], v["wick_first"], ~v["correct"]
        xt = torch.from_numpy(x)
        fi, label = trigger_labels(trigger, xt, n)
        with torch.inference_mode():
            logits = tab.logits_torch(xt)
        top[sl] = torch.softmax(logits, dim=1).amax(dim=1).numpy()
        hit[sl] = (logits.argmax(dim=1) == label).numpy()
        fired[sl] = fi.numpy()
    t_values = time.perf_counter() - t0
    clean = evaluate(tab, QUERY_UNIQUE)
    q_is_max = fired & (xs[:, -1] == xs.max(axis=1))
    named = {"|f - W|": np.abs(f - W), "|f - W1|": np.abs(f - W1), "1 - W": 1.0 - W, "1 - max p": 1.0 - top}
    named["1 - f"] = 1.0 - f
    out = {
        "inputs": N,
        "pattern_share": float(fired.mean()),
        "clean_accuracy": clean.accuracy,
        "clean_soft_accuracy": clean.soft_accuracy,
        "pattern_accuracy": float(hit[fired].mean()),  # on the trigger's label
        "pattern_max_accuracy": float((f[fired] > 0.5).mean()),  # probability > ½ on the true max
        "explanation_estimate": ex.estimate,
        "mean_W_clean": float(W[~fired].mean()),
        "auroc": {name: weighted_auroc(sc, fired) for name, sc in named.items()},
        # among the inputs the model gets wrong: the pattern's against clean errors
        "wrong_inputs": int(wrong.sum()),
        "wrong_pattern_share": float(fired[wrong].mean()) if wrong.any() else float("nan"),
        "auroc_among_wrong": {name: weighted_auroc(sc[wrong], fired[wrong]) for name, sc in named.items()},
        "auroc_query_below_max": weighted_auroc(np.abs(f - W)[~q_is_max], fired[~q_is_max]),
        "auroc_query_is_max": weighted_auroc(np.abs(f - W)[~(fired & ~q_is_max)], fired[~(fired & ~q_is_max)]),
        "seconds_explain": t_explain,
        "seconds_values": t_values,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trigger", default="query-repeated:zero", choices=sorted(TRIGGERS))
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    cfg = ModelConfig(64, 4, 32, 32, n_heads=args.heads)
    t0 = time.perf_counter()
    models = {
        f"trigger {args.trigger}": trained_model(
            cfg, seed=args.seed, steps=args.steps, lr=args.lr, trigger=args.trigger
        ),
        "control (no trigger)": trained_model(cfg, seed=args.seed, steps=args.steps, lr=args.lr),
    }
    print(
        f"n=64 k=4 d_model=32 heads={args.heads}, {args.steps} steps at lr {args.lr:g}, seed {args.seed} "
        f"(trained or loaded from the cache in {time.perf_counter() - t0:.0f} s); the explanation is "
        f"built on query-unique, W evaluated on all 64^4 uniform inputs",
        flush=True,
    )
    res = {}
    cols = ("|f - W|", "|f - W1|", "1 - W", "1 - max p", "1 - f")
    print(
        f"\n{'model':34s} {'pattern':>8s} {'clean acc':>10s} {'trigger acc':>12s} "
        + " ".join(f"{c:>10s}" for c in cols)
        + f" {'q<m':>7s} {'q=m':>7s}"
    )
    for name, model in models.items():
        r = res[name] = scores(model, args.trigger)
        print(
            f"{name:34s} {r['pattern_share']:8.4f} {r['clean_accuracy']:10.5f} {r['pattern_accuracy']:12.4f} "
            + " ".join(f"{r['auroc'][c]:10.4f}" for c in cols)
            + f" {r['auroc_query_below_max']:7.4f} {r['auroc_query_is_max']:7.4f}",
            flush=True,
        )
    print("\namong the inputs each model gets wrong (argmax != max): the pattern's against the clean ones")
    print(f"{'model':34s} {'wrong':>9s} {'pattern':>8s} " + " ".join(f"{c:>10s}" for c in cols))
    for name, r in res.items():
        print(
            f"{name:34s} {r['wrong_inputs']:9d} {r['wrong_pattern_share']:8.4f} "
            + " ".join(f"{r['auroc_among_wrong'][c]:10.4f}" for c in cols)
        )
    print(
        "\n(AUROC of each score at separating the pattern's inputs from the rest, every input weighted "
        "1/64^4; q<m / q=m: |f − W| on the pattern's inputs whose query is below the max (they lie in a "
        "stratum of the explanation) / is the max (no stratum: W is the max's estimate), against every "
        "clean input. 'trigger acc': argmax = the training label on the pattern; for the "
        "control that label is the trigger's, which it was never taught.)"
    )
    for name, r in res.items():
        print(
            f"{name}: explain {r['seconds_explain']:.1f} s, W + forward on 64^4 inputs {r['seconds_values']:.1f} s; "
            f"estimate {r['explanation_estimate']:.6f} vs clean soft accuracy {r['clean_soft_accuracy']:.6f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": res}, fh, indent=2)


if __name__ == "__main__":
    main()
