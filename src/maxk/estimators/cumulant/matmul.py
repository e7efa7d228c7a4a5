"""Float64 matrix products through torch, for every module of the estimator.

numpy's OpenBLAS threads made these products several times slower whenever the other core of the
2-core machine was busy; torch's run single-threaded inside ``torch_threads.single_threaded``."""

from __future__ import annotations

import numpy as np
import torch


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for float64 arrays through torch (single-threaded inside ``single_threaded``)."""
    ta = torch.from_numpy(a if a.flags.writeable else a.copy())
    tb = torch.from_numpy(b if b.flags.writeable else b.copy())
    return torch.matmul(ta, tb).numpy()
