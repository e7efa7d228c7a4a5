"""Gross et al.'s unexplained dimensionality (arXiv 2406.11779, Fig. 1 and Appendix A.2), beside
each row, and the bits it implies at one float32 (32 bits) per dimension.

Published: brute force n^(k+1) (2^30 at n = 64, k = 4); cubic |EUPU| + |PVOU| + |EQKE| + |EQKP|
+ |EVOU| = n² + k·n + n² + n·k + n² (12,800 at n = 64, k = 4). For the subcubic family the
paper gives "each its own estimate plus n + n²"; maxk's estimates (its own, not the paper's) count
the free numbers of what each variant's bound reads beside the n + n² (per-(max, query) gaps and
the decoupled value tables' n x n part): the EQKE representation (mean + difference: a mean row
n, per-row error n; key direction kept: + n; rank-r SVD: 2·r·n + n), EQKP (n·k), the positional
values (k·n) and the direct path (n² as a table, or n·d from O(n·d) pieces). Estimators and the
other rows have none (None).
"""

from __future__ import annotations

PER_DIMENSION_BITS = 32


def unexplained_dimensionality(name: str, n: int, k: int, d_model: int) -> int | None:
    """The unexplained dimensionality of strategy ``name`` at (n, k, d_model), or None."""
    base = n + n * n
    eqkp_pos = n * k + k * n
    direct_table, direct_pieces = n * n, n * d_model
    table = {
        "brute": n ** (k + 1),
        "cubic": 3 * n * n + 2 * n * k,
        "subcubic": base + 3 * n + eqkp_pos + direct_table,
        "subcubic-split": base + n + 3 * n + eqkp_pos + direct_table,
        "subcubic-svd": base + (2 * 2 * n + n) + eqkp_pos + direct_table,
        "subcubic-meandiff": base + 2 * n + eqkp_pos + direct_table,
        "direct-quadratic": base + 3 * n + eqkp_pos + direct_pieces,
        "attention-quadratic": base + 2 * n + eqkp_pos + direct_pieces,
    }
    return table.get(name)
