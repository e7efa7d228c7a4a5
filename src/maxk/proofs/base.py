"""What every proof strategy returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ProofResult:
    """A certified lower bound on accuracy and what checking it cost.

    bound:      certified / n_sequences, a lower bound on the exact real-number model's accuracy
    certified:  number of inputs (weighted count, exact integer) certified correct
    flops:      floating-point operations the verification performed (counted as it ran)
    cost:       asymptotic form, e.g. "O(n^3 k^2)"
    """

    strategy: str
    bound: float
    certified: int
    n_sequences: int
    flops: int
    seconds: float
    cost: str
    dist: str = "uniform"

    def to_dict(self) -> dict:
        return asdict(self)
