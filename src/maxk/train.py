"""Training with the paper's recipe (DESIGN §1): AdamW, uniform i.i.d. tokens, cross-entropy on the
last position, biases frozen at zero. Deterministic for a given seed and machine."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import MaxkError
from .model import BIAS_NAMES, MaxKTransformer


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
) -> MaxKTransformer:
    """Train a fresh model; returns it with ``training_record`` (seed, steps, ..., final loss).

    Cost: ``steps`` forward/backward passes on ``batch`` sequences. ``progress(step, loss)`` is
    called every step.
    """
    if steps < 1 or batch < 1 or not lr > 0 or weight_decay < 0:
        raise MaxkError("steps and batch must be positive, lr > 0 and weight decay >= 0")
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
            loss = torch.nn.functional.cross_entropy(logits, tokens.max(dim=1).values)
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
