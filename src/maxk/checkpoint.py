"""Load and save models: safetensors (ours, config as JSON metadata) and TransformerLens-style
``.pth`` pickles (read by the restricted unpickler in ``safe_pickle``, which runs no code)."""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch

from .atomic import atomic_path
from .config import ModelConfig
from .errors import MaxkError
from .model import MaxKTransformer

DEFAULT_MODEL = "default"


def default_model_path() -> Path:
    """Path of the shipped paper-config model (n=64, k=4, d=32, seed 0)."""
    return Path(str(resources.files("maxk") / "data" / "max4_n64_seed0.safetensors"))


def _param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in MaxKTransformer(cfg).named_parameters()}


def model_from_state_dict(cfg: ModelConfig, state: dict, source: str = "checkpoint") -> MaxKTransformer:
    """Build a model from a TransformerLens-named state dict, checking names, shapes and finiteness.

    Keys that TransformerLens stores beside the weights (``IGNORE``, ``mask``, hook buffers) are
    ignored; a missing or misshapen weight, or a NaN/Inf entry, is an error.
    """
    shapes = _param_shapes(cfg)
    model = MaxKTransformer(cfg)
    params = dict(model.named_parameters())
    for name, shape in shapes.items():
        if name not in state:
            if name.split(".")[-1].startswith("b_"):
                continue  # absent bias: zero, as TransformerLens' attn-only configs may omit
            raise MaxkError(f"{source}: missing weight {name!r}")
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise MaxkError(f"{source}: {name!r} is not a tensor")
        if tuple(t.shape) != shape:
            raise MaxkError(f"{source}: {name!r} has shape {tuple(t.shape)}, config implies {shape}")
        if not t.is_floating_point():
            raise MaxkError(f"{source}: {name!r} is not a floating-point tensor")
        if not torch.isfinite(t).all():
            raise MaxkError(f"{source}: {name!r} contains NaN or Inf")
        with torch.no_grad():
            params[name].copy_(t.to(torch.float32))
    return model


def save(model: MaxKTransformer, path: str | os.PathLike, training: dict | None = None) -> None:
    """Write weights to safetensors with ``metadata["config"]`` (TransformerLens names) and
    ``metadata["training"]`` (JSON), atomically."""
    from safetensors.torch import save_file

    meta = {"config": model.cfg.to_json(), "format": "maxk"}
    if training is not None:
        meta["training"] = json.dumps(training, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_metadata(path: str | os.PathLike) -> dict:
    """The safetensors metadata of a maxk checkpoint, with JSON fields decoded."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    for key in ("config", "training"):
        if key in meta:
            meta[key] = json.loads(meta[key])
    return meta


def _load_safetensors(path: Path) -> MaxKTransformer:
    from safetensors.torch import load_file

    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except MaxkError:
        raise
    except Exception as e:  # safetensors raises several types for a corrupt file
        raise MaxkError(f"{path}: not a readable safetensors file ({type(e).__name__})") from None
    if "config" not in meta:
        raise MaxkError(f"{path}: safetensors file has no maxk config in its metadata")
    cfg = ModelConfig.from_dict(meta["config"])
    model = model_from_state_dict(cfg, state, str(path))
    model.training_record = meta.get("training")
    return model


def load(path: str | os.PathLike = DEFAULT_MODEL) -> MaxKTransformer:
    """Load a model from a maxk safetensors file or a TransformerLens ``.pth`` checkpoint.

    ``"default"`` names the shipped paper-config model. Pickles are read without running code.
    """
    p = default_model_path() if str(path) == DEFAULT_MODEL else Path(path)
    if not p.exists():
        raise MaxkError(f"{p}: no such file")
    if not p.is_file():
        raise MaxkError(f"{p}: not a file")
    if _is_safetensors(p):
        return _load_safetensors(p)
    from .safe_pickle import load_pth

    return load_pth(p)
