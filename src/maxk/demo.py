"""``maxk demo``: the main job on the shipped model (n=64, k=4, d=32, seed 0)."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_demo(out_dir: str | Path) -> None:
    """Evaluate the shipped model exactly and print what each analysis says about it."""
    from . import checkpoint
    from .exact import evaluate

    console = Console()
    model = checkpoint.load("default")
    cfg, rec = model.cfg, getattr(model, "training_record", None) or {}
    console.print(f"[bold]maxk demo[/bold]: shipped model n={cfg.d_vocab} k={cfg.n_ctx} d_model={cfg.d_model} "
                  f"d_head={cfg.d_head} heads={cfg.n_heads}, seed {rec.get('seed')}, {rec.get('steps')} steps, "
                  f"final training loss {rec.get('final_loss', float('nan')):.3g}")
    for dist in ("uniform", "distinct"):
        r = evaluate(model, dist)
        console.print(f"  exact ({dist}) accuracy {r.accuracy:.6f} ({r.correct:,}/{r.n_sequences:,}), "
                      f"soft accuracy {r.soft_accuracy:.6f}, loss {r.loss:.4g}  ({r.seconds:.2f} s)")
