"""The prior over weights: the training recipe's initialisation, sampled and cached per config.

A check's cost is -log2 of its pass probability when the weights are drawn as training draws
them before the first step (``maxk.train.train``: ``MaxKTransformer(cfg).init_weights(
torch.Generator().manual_seed(seed))``, every weight entry i.i.d. N(0, 0.8/sqrt(d_model)), biases
zero). ``Prior`` holds ``samples`` such initialisations (seeds ``seed0 + j``, disjoint from the
training seeds 0..150 of the paper's sweep) and, per itemiser, what the checks gave on them
(*sections*: plain data computed once and cached). The cache is one JSON file per (config,
distribution, samples, seed0) under ``$MAXK_CACHE/surprise`` (default ``~/.cache/maxk``), written
atomically; it records each initialisation's weight hash, so a torch whose generator draws other
numbers is detected rather than silently mixed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import MaxkError
from ..model import MaxKTransformer
from .cache import SectionFile, cache_root

PRIOR_VERSION = 1
DEFAULT_SAMPLES = 6  # initialisations in the default prior (each check's error is stated)
SEED0 = 1_000_000


def init_model(cfg: ModelConfig, seed: int) -> MaxKTransformer:
    """The model ``maxk.train.train(cfg, seed=seed)`` starts from (before any step). Cost
    O(parameters)."""
    model = MaxKTransformer(cfg)
    model.init_weights(torch.Generator().manual_seed(int(seed)))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def weights_hash(model: MaxKTransformer) -> str:
    """sha256 (first 16 hex digits) of every parameter's bytes, in name order."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Prior:
    """``samples`` initialisations of ``cfg`` and the cached results of checks run on them.

    ``section(name, compute)`` returns the cached plain data ``name`` or computes it as
    ``compute(models)`` (models: the initialisations, regenerated from their seeds), stores it and
    rewrites the cache file atomically. ``cache=False`` keeps everything in memory."""

    def __init__(
        self, cfg: ModelConfig, dist: str, samples: int = DEFAULT_SAMPLES, *, seed0: int = SEED0, cache: bool = True
    ) -> None:
        if samples < 2:
            raise MaxkError(f"the prior needs at least 2 initialisations (to state an error), got {samples}")
        self.cfg, self.dist, self.samples, self.seed0, self.cache = cfg, dist, int(samples), int(seed0), cache
        self.seeds = [self.seed0 + j for j in range(self.samples)]
        self._models: list[MaxKTransformer] | None = None
        self._file = SectionFile(
            self.path if cache else None, self.key, lambda: {"seeds": self.seeds, "hashes": self.hashes}
        )
        self.hashes: list[str] | None = self._file.stored_extra.get("hashes")

    @property
    def key(self) -> str:
        """What the cache file is keyed on."""
        return json.dumps(
            [PRIOR_VERSION, self.cfg.to_dict(), self.dist, self.samples, self.seed0], sort_keys=True, default=str
        )

    @property
    def path(self) -> Path:
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:12]
        return cache_root() / f"prior_n{self.cfg.n}_k{self.cfg.k}_{self.dist}_{digest}.json"

    @property
    def sections(self) -> dict[str, Any]:
        """The computed sections by name (plain data)."""
        return self._file.sections

    def models(self) -> list[MaxKTransformer]:
        """The initialisations, regenerated from their seeds and checked against the cached hashes."""
        if self._models is None:
            models = [init_model(self.cfg, s) for s in self.seeds]
            hashes = [weights_hash(m) for m in models]
            if self.hashes is not None and hashes != self.hashes:
                raise MaxkError(
                    f"this torch initialises other weights than the cached prior {self.path} (delete it to rebuild)"
                )
            self.hashes, self._models = hashes, models
        return self._models

    def section(self, name: str, compute: Callable[[list[MaxKTransformer]], Any]) -> Any:
        """Section ``name``: cached, or ``compute(self.models())`` stored and saved."""
        return self._file.get(name, lambda: compute(self.models()))

    def summary(self) -> dict:
        """What the table records about its prior."""
        return {
            "samples": self.samples,
            "seeds": [self.seeds[0], self.seeds[-1]],
            "recipe": "init_weights: every weight i.i.d. N(0, 0.8/sqrt(d_model)), biases zero (maxk.train)",
            "cache": str(self.path) if self.cache else None,
            "sections": sorted(self.sections),
        }


def resolve_prior(prior: Prior | int | None, cfg: ModelConfig, dist: str, cache: bool = True) -> Prior:
    """A ``Prior`` from a ``Prior`` (checked to match cfg and dist), a number of initialisations,
    or None (``DEFAULT_SAMPLES``)."""
    if isinstance(prior, Prior):
        if prior.cfg.to_dict() != cfg.to_dict() or prior.dist != dist:
            raise MaxkError("the prior was made for another config or distribution")
        return prior
    return Prior(cfg, dist, DEFAULT_SAMPLES if prior is None else int(prior), cache=cache)
