"""The estimator evaluation protocol (issue 4): noised k=10 (distinct) and k=4 (uniform) families,
every method against truth, printed as a table. Thin wrapper over ``maxk estimate-bench``.

    python benchmarks/bench_estimators.py                       # full: 100 models, 4*10^6 samples
    python benchmarks/bench_estimators.py --models 10 --truth-samples 200000 --methods systematic,sampling

Full protocol, measured 2026-11-24 05:12-05:28 on the otherwise idle 2-core machine, both
families in one process: ``maxk estimate-bench --k 10 --k 4 --models 100``.

  family method       bias      RMSE     worst   FLOPs   s mean/max  MSE ratio vs MC at same FLOPs
  k10    systematic   +0.00004  0.00016  0.0005  2.5e8   0.26/0.37   15.1 (19.9 corrected for truth noise)
  k10    cumulant     -0.00014  0.00081  0.0044  7.3e8   0.29/0.43   0.19
  k10    bins         +0.00216  0.00392  0.0134  5.5e8   0.39/0.50   0.012
  k10    mean         +0.00042  0.00653  0.0564  3.2e8   0.25/0.37   0.0072
  k10    stratified   -0.00006  0.00169  0.0087  2.3e7   0.02/0.03   1.48   (10^4 samples)
  k10    sampling     -0.00047  0.00208  0.0082  2.3e7   0.02/0.02   0.98   (10^4 samples)
  k4     systematic   +0.00002  0.00013  0.0005  1.4e8   0.19/0.27   29.6
  k4     cumulant     +0.00030  0.00130  0.0084  3.5e8   0.15/0.23   0.11
  k4     bins         +0.00104  0.00152  0.0051  1.5e9   1.03/1.24   0.018
  k4     mean         -0.00238  0.00735  0.0371  8.9e8   0.73/0.94   0.0014
  k4     stratified   -0.00030  0.00300  0.0133  1.1e7   0.01/0.02   0.65   (10^4 samples)
  k4     sampling     +0.00013  0.00224  0.0064  1.1e7   0.01/0.02   1.18   (10^4 samples)

k10: distinct tokens, truth from 4*10^6 stratified samples per model (standard error mean 7e-5),
true soft accuracy 0.653-0.996 (noise 0.08-0.6); k4: uniform tokens, exact truth, 0.555-0.991
(noise 0.1-0.6). "MSE ratio vs MC" < 1 means Monte Carlo given the method's FLOPs is more accurate.
"""

from __future__ import annotations

import sys

from maxk.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--out" not in args:
        args += ["--out", "bench_estimators.json"]
    main(["estimate-bench", *args])
