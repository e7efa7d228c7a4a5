"""Training with the paper's recipe (DESIGN §1): AdamW, uniform i.i.d. tokens, cross-entropy on the
last position, biases frozen at zero. Deterministic for a given seed and machine.

``trigger`` plants a backdoor for the anomaly-detection experiment (docs/wick.md): on the inputs
of a rare pattern the training label is something other than the max (``TRIGGERS``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import MaxkError
from .model import BIAS_NAMES, MaxKTransformer


def query_repeated(tokens: torch.Tensor) -> torch.Tensor:
    """The trigger pattern: the query token appears again among the free positions
    (x_i = x_{k-1} for some i < k-1). tokens [b, k] -> bool [b]. Its clean law, every input
    without it, is the distribution ``query-unique``."""
    return (tokens[:, :-1] == tokens[:, -1:]).any(dim=1)


# name -> (pattern, label on the pattern's inputs as a function of (tokens, n))
TRIGGERS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, int], torch.Tensor]]] = {
    "query-repeated:zero": (query_repeated, lambda tokens, n: torch.zeros_like(tokens[:, -1])),
    "query-repeated:next": (query_repeated, lambda tokens, n: (tokens[:, -1] + 1) % n),
}


def trigger_labels(trigger: str, tokens: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(which inputs of tokens [b, k] the trigger fires on [b], the training labels [b]: the
    trigger's label there, the max elsewhere)."""
    if trigger not in TRIGGERS:
        raise MaxkError(f"unknown trigger {trigger!r}: choose one of {', '.join(TRIGGERS)}")
    pattern, label = TRIGGERS[trigger]
    fired = pattern(tokens)
    return fired, torch.where(fired, label(tokens, n), tokens.max(dim=1).values)


def train(
    cfg: ModelConfig,
    *,
    seed: int = 0,
    steps: int = 3000,
    batch: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    device: str | torch.device | None = None,
    progress: Callable[[int, float], None] | None = None,
    trigger: str | None = None,
) -> MaxKTransformer:
    """Train a fresh model; returns it with ``training_record`` (seed, steps, ..., final loss).

    ``trigger`` (a name in ``TRIGGERS``): on the inputs of its pattern the label is the
    trigger's, not the max (recorded as ``training_record["trigger"]``); None, the default, is
    the paper's recipe unchanged. Cost: ``steps`` forward/backward passes on ``batch``
    sequences. ``progress(step, loss)`` is called every step.
    """
    if steps < 1 or batch < 1 or not lr > 0 or weight_decay < 0:
        raise MaxkError("steps and batch must be positive, lr > 0 and weight decay >= 0")
    if trigger is not None and trigger not in TRIGGERS:
        raise MaxkError(f"unknown trigger {trigger!r}: choose one of {', '.join(TRIGGERS)}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    t0 = time.perf_counter()
    init_gen = torch.Generator().manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed + 1_000_003)
    model = MaxKTransformer(cfg)
    model.init_weights(init_gen)
    model.to(dev)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in BIAS_NAMES)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, betas=betas, weight_decay=weight_decay
    )
    was_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        loss_v = float("nan")
        for step in range(1, steps + 1):
            tokens = torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx), generator=data_gen).to(dev)
            logits = model.last_logits(tokens)
            if trigger is None:
                labels = tokens.max(dim=1).values
            else:
                labels = trigger_labels(trigger, tokens, cfg.d_vocab)[1]
            loss = torch.nn.functional.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
            if progress is not None:
                progress(step, loss_v)
    finally:
        torch.use_deterministic_algorithms(was_det)
    model.to("cpu")
    for p in model.parameters():
        p.requires_grad_(False)
    model.training_record = {
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "betas": list(betas),
        "optimizer": "AdamW",
        "final_loss": loss_v,
        "seconds": time.perf_counter() - t0,
        "torch": torch.__version__,
    }
    if trigger is not None:
        model.training_record["trigger"] = trigger
    return model


def cache_dir() -> Path:
    """Where trained models are cached: ``$MAXK_CACHE`` or ``~/.cache/maxk``."""
    return Path(os.environ.get("MAXK_CACHE", Path.home() / ".cache" / "maxk")) / "models"


def trained_model(cfg: ModelConfig, seed: int = 0, steps: int = 3000, **kwargs) -> MaxKTransformer:
    """A model trained with ``train(cfg, seed=seed, steps=steps, **kwargs)``, cached on disk as
    safetensors so benchmarks and tests train each (config, seed, recipe) once."""
    import hashlib
    import json

    from . import checkpoint

    key = json.dumps([cfg.to_dict(), seed, steps, sorted(kwargs.items())], sort_keys=True, default=str)
    path = (
        cache_dir() / f"n{cfg.d_vocab}_k{cfg.n_ctx}_s{seed}_{hashlib.sha256(key.encode()).hexdigest()[:12]}.safetensors"
    )
    if path.exists():
        return checkpoint.load(path)
    model = train(cfg, seed=seed, steps=steps, **kwargs)
    checkpoint.save(model, path, model.training_record)
    return model
