"""Running torch single-threaded for a while.

Small tensor operations (per-chunk sampling, per-case blocks) lose more to intra-op thread
start-up and contention than they gain: measured 2-10x slower with two threads on a busy 2-core
machine. Code that parallelises itself (exact evaluation's worker threads) also wants one
intra-op thread per worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_threaded() -> Iterator[int]:
    """Set torch's intra-op threads to 1 for the duration; yields the previous count (restored
    after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield before
    finally:
        torch.set_num_threads(before)
