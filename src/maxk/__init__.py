"""maxk: prove and heuristically explain how well a 1-layer attention-only transformer computes
the maximum of k integers.

Public API (everything the ``maxk`` command does is one of these functions first):
"""
from .checkpoint import default_model_path, load, save
from .circuits import CircuitTables, circuit_tables
from .config import ModelConfig
from .distributions import DISTRIBUTIONS
from .errors import MaxkError
from .exact import evaluate, evaluate_forward
from .model import MaxKTransformer
from .results import EvalResult
from .train import train, trained_model

__all__ = [
    "CircuitTables",
    "DISTRIBUTIONS",
    "EvalResult",
    "MaxKTransformer",
    "MaxkError",
    "ModelConfig",
    "circuit_tables",
    "default_model_path",
    "evaluate",
    "evaluate_forward",
    "load",
    "save",
    "train",
    "trained_model",
]
