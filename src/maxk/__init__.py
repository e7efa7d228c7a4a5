"""maxk: prove and heuristically explain how well a 1-layer attention-only transformer computes
the maximum of k integers.

Public API (everything the ``maxk`` command does is one of these functions first):
"""

from .checkpoint import default_model_path, load, save
from .circuits import CircuitTables, circuit_tables
from .config import ModelConfig
from .distributions import DISTINCT, DISTRIBUTIONS, UNIFORM, Distribution, get_distribution, register_distribution
from .errors import MaxkError
from .estimators.budget import plan as plan_budget
from .estimators.registry import ESTIMATORS, estimate
from .estimators.residual_cells import explain_cells
from .exact import evaluate, evaluate_forward
from .interop import from_hooked_transformer, to_hooked_transformer
from .model import MaxKTransformer
from .proofs.enclose import enclosed_tables
from .proofs.registry import STRATEGIES, prove, prove_all
from .proofs.subcubic_losses import coupling_study, loss_ladder
from .report import report
from .results import Estimate, EvalResult, ProofResult, Result
from .sampling import evaluate_sampled
from .surprise import SurpriseTable, surprise
from .sweep import sweep
from .train import train, trained_model
from .wick_propagation import WickValues, explain, wick

__all__ = [
    # models and checkpoints
    "ModelConfig",
    "MaxKTransformer",
    "load",
    "save",
    "default_model_path",
    "train",
    "trained_model",
    # TransformerLens interop (the optional extra transformer-lens<4)
    "to_hooked_transformer",
    "from_hooked_transformer",
    # the circuit tables every analysis reads
    "CircuitTables",
    "circuit_tables",
    # input distributions: the one kernel of exact counts and laws
    "DISTRIBUTIONS",
    "DISTINCT",
    "UNIFORM",
    "Distribution",
    "get_distribution",
    "register_distribution",
    # result records (frozen; to_dict / Result.from_dict round-trip through JSON)
    "Result",
    # evaluation
    "EvalResult",
    "evaluate",
    "evaluate_forward",
    "evaluate_sampled",
    # proofs
    "ProofResult",
    "STRATEGIES",
    "enclosed_tables",
    "prove",
    "prove_all",
    "loss_ladder",  # where the subcubic proofs lose, term by term (docs/proofs.md)
    "coupling_study",  # where subcubic-coupled's side columns lose, one term or position at a time
    # heuristic estimators
    "ESTIMATORS",
    "Estimate",
    "estimate",
    "plan_budget",  # the settings estimate(..., budget=F) runs a method with (docs/estimators.md)
    # Wick propagation: the cumulant explanation input by input
    "WickValues",
    "explain",
    "explain_cells",
    "wick",
    # surprise accounting: bits per explanation (docs/surprise.md)
    "SurpriseTable",
    "surprise",
    # the sweep's report: one self-contained HTML page
    "report",
    # sweeps over seeds and configurations, in process or on Dask (docs/sweep.md)
    "sweep",
    "MaxkError",
]
