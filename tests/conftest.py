"""Shared fixtures: small models built in memory (no network, no files outside tmp_path)."""
from __future__ import annotations

import os

import pytest
import torch

from maxk.config import ModelConfig
from maxk.model import MaxKTransformer

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Trained-model cache shared by the session's workers, never the user's own."""
    if "MAXK_CACHE" not in os.environ:
        os.environ["MAXK_CACHE"] = str(tmp_path_factory.getbasetemp().parent / "maxk-cache")
    yield


def random_model(n=8, k=3, d_model=8, d_head=4, heads=1, seed=0, scale=0.5, biases=True) -> MaxKTransformer:
    """A model with random weights (and random biases unless ``biases=False``)."""
    cfg = ModelConfig(d_vocab=n, n_ctx=k, d_model=d_model, d_head=d_head, n_heads=heads)
    m = MaxKTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    m.init_weights(g)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if biases or ".W_" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    for p in m.parameters():
        p.requires_grad_(False)
    return m
