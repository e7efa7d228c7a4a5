"""Surprise accounting (DESIGN §8; docs/surprise.md): how many bits each explanation of the model
costs, S(π) + S(Y | π), computed for no explanation, the weights, every proof strategy and every
estimator.

Modules, one idea each: ``tails`` (binomial tails and Gaussian windows in log space), ``checks``
(a priced check and their sum), ``patterns`` (the prior's symmetry classes of inputs), ``prior``
(initialisations and their cache), ``brute_checks`` / ``cubic_checks`` / ``strategy_checks`` /
``estimator_checks`` (what each explanation relies on, priced), ``weights`` (the description
search), ``dimensionality`` (Gross et al.'s measure), ``table`` (the records), ``hilton``
(Hilton's Boolean-circuit example through the same code), ``accounting`` (``surprise``).
"""

from .accounting import explanation_names, surprise
from .checks import Check
from .hilton import hilton_circuit_rows
from .prior import Prior
from .table import SurpriseRow, SurpriseTable

__all__ = ["Check", "Prior", "SurpriseRow", "SurpriseTable", "explanation_names", "hilton_circuit_rows", "surprise"]
