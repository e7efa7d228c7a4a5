"""Formatting shared by the benchmark scripts."""

import statistics as stats


def mean_sd(xs: list[float], fmt: str) -> str:
    """'mean ± sample standard deviation' of ``xs``, each formatted with ``fmt``."""
    sd = stats.stdev(xs) if len(xs) > 1 else 0.0
    return f"{format(stats.mean(xs), fmt)} ± {format(sd, fmt)}"
