"""Counting floating-point operations where they happen.

A ``FlopCounter`` is threaded through the code that does the work; each step adds what it
performed (``counter.add(n)``, or the helpers for common operations), so reported FLOPs are
counted by the code that performs them rather than typed in beside it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class FlopCounter:
    """Running total of floating-point operations (add, multiply, compare, exp each count 1)."""

    total: int = 0
    by_label: dict[str, int] = field(default_factory=dict)

    def add(self, n: int, label: str = "other") -> None:
        n = int(n)
        self.total += n
        self.by_label[label] = self.by_label.get(label, 0) + n

    def matmul(self, m: int, k: int, n: int, label: str = "matmul") -> None:
        """An [m, k] @ [k, n] product: m·n·(2k - 1) operations."""
        self.add(m * n * max(2 * k - 1, 0), label)

    def elementwise(self, size: int, ops: int = 1, label: str = "elementwise") -> None:
        """``ops`` operations on each of ``size`` elements."""
        self.add(size * ops, label)

    def merge(self, other: FlopCounter) -> None:
        """Add ``other``'s total and labels to this counter (e.g. a worker thread's own)."""
        self.total += other.total
        for label, n in other.by_label.items():
            self.by_label[label] = self.by_label.get(label, 0) + n

    @contextmanager
    def uncounted(self) -> Iterator[None]:
        """Work inside the block is not kept: the total and labels are restored on exit (e.g. a
        proof's search, whose result is then verified and counted)."""
        total, labels = self.total, dict(self.by_label)
        try:
            yield
        finally:
            self.total = total
            self.by_label.clear()
            self.by_label.update(labels)
