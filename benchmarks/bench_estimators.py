"""The estimator evaluation protocol (issue 4): noised k=10 (distinct) and k=4 (uniform) families,
every method against truth, printed as a table. Thin wrapper over ``maxk estimate-bench``.

    python benchmarks/bench_estimators.py                       # full: 100 models, 10^6 samples
    python benchmarks/bench_estimators.py --models 10 --truth-samples 200000 --methods cumulant,sampling

Full protocol, measured 2026-11-24 on the quiet 2-core machine (the two families run as two
parallel processes, ~18 min each): ``maxk estimate-bench --k 10 --models 100`` and ``--k 4``.

  family method      bias      RMSE     worst    FLOPs   s      MSE ratio vs MC at same FLOPs
  k10    cumulant    -0.00035  0.00243  0.0221   1.04e9  1.36   0.015
  k10    bins        +0.00222  0.00400  0.0136   5.9e8   0.70   0.010
  k10    mean        +0.00049  0.00656  0.0564   3.1e8   0.39   0.0074
  k10    sampling    -0.00041  0.00204  0.0079   2.3e7   0.05   1.02   (10^4 samples)
  k4     bins        +0.00104  0.00152  0.0051   1.7e9   1.99   0.017
  k4     cumulant    -0.00056  0.00369  0.0228   5.6e8   0.62   0.0082
  k4     mean        -0.00238  0.00735  0.0371   8.5e8   1.25   0.0014
  k4     stratified  -0.00030  0.00300  0.0133   1.1e7   0.013  0.66   (10^4 samples, after the pilot fix)
  k4     sampling    +0.00013  0.00224  0.0064   1.1e7   0.011  1.18   (10^4 samples)

k10: distinct tokens, truth from 10^6 stratified samples per model, true soft accuracy
0.654–0.996 (noise 0.08–0.6); k4: uniform tokens, exact truth, 0.555–0.991 (noise 0.1–0.6).
"MSE ratio vs MC" < 1 means Monte Carlo given the method's FLOPs is more accurate.
"""
from __future__ import annotations

import sys

from maxk.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", "bench_estimators.json"]
    main(["estimate-bench", *args])
