"""The published numbers the report sets beside a sweep's (Gross et al. 2024, as DESIGN §5 quotes
them: n = 64, k = 4, d = 32, 151 seeds) and the strategy families they are given for."""

from __future__ import annotations

from dataclasses import dataclass

PAPER_CONFIG = (4, 64, 32)  # (k, n, d_model) of the published table
PAPER_SEEDS = 151
PAPER_ACCURACY = (0.9992, 0.0015)  # mean ± std of exhaustive accuracy over the seeds
PAPER_WORST_ACCURACY = 0.9915


@dataclass(frozen=True)
class Family:
    """A group of strategies the paper reports as one row: per seed the best bound of the members
    that ran, then mean ± std over seeds of that bound relative to accuracy."""

    name: str
    members: tuple[str, ...]
    cost: str
    paper_relative: tuple[float, float] | None  # published mean ± std of bound / accuracy
    paper_log2_flops: float | None  # published FLOPs, as a power of two (None: DESIGN gives none)


FAMILIES = (
    Family("brute force", ("brute",), "n^k forward passes", (1.0, 0.0), 47.0),
    Family("cubic", ("cubic",), "O(n^3 k^2)", (0.954, 0.008), 25.0),
    Family(
        "subcubic",
        ("subcubic", "subcubic-svd", "subcubic-meandiff", "subcubic-split", "subcubic-coupled"),
        "O(n^2 k^2 + n^2 d)",
        (0.70, 0.04),
        None,
    ),
    Family(
        "attention-quadratic + direct-quadratic",
        ("attention-quadratic", "direct-quadratic"),
        "O(n d) pieces",
        (0.28, 0.04),
        None,
    ),
)


def family_of(method: str) -> Family | None:
    """The paper family strategy ``method`` belongs to (None for a strategy outside them)."""
    for f in FAMILIES:
        if method in f.members:
            return f
    return None
