"""A safety net under the declared costs: each method of a seed runs with this process's address
space capped (``RLIMIT_AS``), so one that needs far more memory than its declared running time
suggests fails with a MemoryError, recorded as a refusal, instead of exhausting the machine.

No method declares its memory, and time and memory part ways: wick-residual's declared cost grows
31-fold from k = 4, n = 64 to k = 10, n = 128, within the default budget, yet there it needs more
than 6 GB (a sweep without the cap reached 15 GB and was still growing when stopped).
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

_GIB = 1 << 30


def address_space_bytes() -> int:
    """This process's current virtual address-space size (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def memory_cap(gib: float | None) -> Iterator[None]:
    """While the block runs, allocations beyond the process's current address space plus ``gib``
    GiB fail (MemoryError in numpy, RuntimeError from torch's allocator); None: no cap. The
    previous limit is restored after. Where the limit cannot be set (not Linux), no cap."""
    if gib is None or not os.path.exists("/proc/self/statm"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = address_space_bytes() + int(gib * _GIB)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure: MemoryError, or torch's allocator's RuntimeError."""
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))
