"""Load and save models: safetensors (ours, config as JSON metadata) and TransformerLens-style
``.pth`` pickles (read by the restricted unpickler in ``safe_pickle``, which runs no code). Both
become a model through ``state_dict.model_from_parts``, which refuses what maxk cannot build."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from .atomic import atomic_path
from .errors import MaxkError
from .model import MaxKTransformer
from .safe_pickle import Record, safe_load_pickle
from .state_dict import model_from_parts, model_from_state_dict  # noqa: F401  (re-exported)

DEFAULT_MODEL = "default"


def default_model_path() -> Path:
    """Path of the shipped paper-config model (n=64, k=4, d=32, seed 0)."""
    return Path(str(resources.files("maxk") / "data" / "max4_n64_seed0.safetensors"))


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
    model = model_from_parts(meta["config"], state, str(path))
    model.training_record = meta.get("training")
    return model


def _config_fields(cfg, source: str) -> dict:
    if isinstance(cfg, Record):
        return cfg.fields()
    if isinstance(cfg, dict):
        return dict(cfg)
    raise MaxkError(f"{source}: checkpoint config is a {type(cfg).__name__}, expected a config record or dict")


def checkpoint_parts(obj, source: str) -> tuple[dict, dict, dict]:
    """Split a loaded TransformerLens-style checkpoint into (config fields, state dict, other fields)."""
    if not isinstance(obj, dict):
        raise MaxkError(f"{source}: expected a dict with 'model' and 'model_config'/'config', got {type(obj).__name__}")
    if "model" not in obj:
        raise MaxkError(f"{source}: checkpoint has no 'model' state dict")
    cfg_obj = obj.get("model_config", obj.get("config"))
    if cfg_obj is None:
        raise MaxkError(f"{source}: checkpoint has no 'model_config' or 'config'")
    state = obj["model"]
    if isinstance(state, Record):
        raise MaxkError(f"{source}: 'model' is a pickled module, not a state dict")
    if not isinstance(state, dict):
        raise MaxkError(f"{source}: 'model' is not a state dict")
    rest = {k: v for k, v in obj.items() if k not in ("model", "model_config", "config")}
    return _config_fields(cfg_obj, source), state, rest


def load_pth(path: str | os.PathLike) -> MaxKTransformer:
    """Load a TransformerLens-style ``.pth`` checkpoint as a ``MaxKTransformer``, running no code."""
    obj = safe_load_pickle(path)
    fields, state, rest = checkpoint_parts(obj, str(path))
    model = model_from_parts(fields, state, str(path))
    model.training_record = {"imported_from": Path(path).name, "fields": sorted(map(str, rest))}
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
    return load_pth(p)
