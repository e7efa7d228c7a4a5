"""The cubic proof's hot rounding steps: ``maxk.proofs.enclose``'s ``down``, ``up``,
``sum_lower`` and ``mul_lower`` with bit-identical results and FLOP counts, faster.

``np.nextafter`` costs about twelve additions per element; ``torch.nextafter`` (the same IEEE
operation, one step toward -inf or +inf) about three, and it can write into the array it rounds
when that array is a temporary. It is run in pieces of torch's grain size, which torch does
not split over threads: on a loaded machine its thread pool made the proof twice as slow.
tests/test_proofs_cubic_scale.py holds every function here equal, bit for bit, to its
``enclose`` counterpart (signed zeros, subnormals, infinities and NaN included).
"""

from __future__ import annotations

import numpy as np
import torch

from ..flops import FlopCounter

_SERIAL = 1 << 15  # torch's grain size: smaller pieces run on the calling thread
_TO_NEG = torch.tensor(-np.inf, dtype=torch.float64)
_TO_POS = torch.tensor(np.inf, dtype=torch.float64)


def _step(x, toward: torch.Tensor, counter: FlopCounter, inplace: bool) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    counter.add(a.size, "rounding")
    if not (inplace and a.flags.writeable and a.flags.c_contiguous and a.base is None):
        a = np.array(a, dtype=np.float64, order="C")
    t = torch.from_numpy(a).view(-1)
    for s in range(0, t.numel(), _SERIAL):  # pieces torch runs on one thread
        piece = t[s : s + _SERIAL]
        torch.nextafter(piece, toward, out=piece)
    return a


def down(x, counter: FlopCounter, *, inplace: bool = False) -> np.ndarray:
    """Next float below x (elementwise), as ``enclose.down``. ``inplace``: x is a temporary the
    caller no longer needs, rounded in place when it owns its memory. Cost: one op per element."""
    return _step(x, _TO_NEG, counter, inplace)


def up(x, counter: FlopCounter, *, inplace: bool = False) -> np.ndarray:
    """Next float above x (elementwise), as ``enclose.up``. Cost: one op per element."""
    return _step(x, _TO_POS, counter, inplace)


def sum_lower(terms: list, counter: FlopCounter) -> np.ndarray:
    """A float lower bound on the exact sum of the (broadcast) arrays ``terms``, added left to
    right with a rounding down after each addition, as ``enclose.sum_lower``. Cost: 2 ops per
    addition per element."""
    acc = np.asarray(terms[0], dtype=np.float64)
    for t in terms[1:]:
        s = acc + t
        counter.add(s.size, "lower sum")
        acc = down(s, counter, inplace=True)
    return acc


def mul_lower(x_lo, x_hi, y_lo, counter: FlopCounter) -> np.ndarray:
    """A float lower bound on x·y for x in [x_lo, x_hi], x_lo >= 0, y >= y_lo, as
    ``enclose.mul_lower``. Cost: 1 product, 1 select, 1 rounding per element."""
    r = np.where(y_lo >= 0, x_lo, x_hi) * y_lo
    counter.add(2 * r.size, "lower mul")
    return down(r, counter, inplace=True)
