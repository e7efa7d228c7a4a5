"""Read TransformerLens-style ``.pth`` checkpoints into plain data without running code from
the file (turning that data into a model is ``maxk.state_dict``'s job).

Unpickling can call any importable function, so the unpickler here resolves only a short list
of harmless globals (tensor rebuilding, numpy scalars and arrays, containers) and maps every
``transformer_lens`` class to a plain ``Record`` that just stores its fields. Anything else is
refused with ``UnsafePickleError`` before it is called.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import io
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._utils  # the tensor-rebuild functions below; `import torch` alone does not declare it to pyright

from .errors import MaxkError


class UnsafePickleError(MaxkError):
    """The file asked for a global outside the allow-list."""


class Record:
    """Stand-in for a foreign class (e.g. ``HookedTransformerConfig``): keeps only its fields."""

    _qualname = "Record"

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def fields(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return f"<{self._qualname} record {self.fields()!r}>"


_record_classes: dict[str, type] = {}


def _record_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _record_classes:
        _record_classes[key] = type(name, (Record,), {"_qualname": key})
    return _record_classes[key]


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray as ma  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as ma

    allowed: dict[tuple[str, str], object] = {}

    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = ma.scalar
        allowed[(mod, "_reconstruct")] = ma._reconstruct
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for name in dir(np.dtypes):
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("builtins", "range"): range,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "object"): object,
        # typeshed's copyreg stub omits the (private, but always present) _reconstructor
        ("copyreg", "_reconstructor"): copyreg._reconstructor,  # pyright: ignore[reportAttributeAccessIssue]
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles store bytes
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    allowed[("torch.storage", "_load_from_bytes")] = _storage_from_bytes
    for name in dir(torch):
        obj = getattr(torch, name)
        if isinstance(obj, torch.dtype):
            allowed[("torch", name)] = obj
    allowed.update(_numpy_globals())
    return {k: v for k, v in allowed.items() if v is not None}


_ALLOWED = None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals; foreign model classes become records."""

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "transformer_lens" or module.startswith("transformer_lens."):
            return _record_class(module, name)
        raise UnsafePickleError(f"refusing to load: the file asks for {module}.{name}, which could run code")


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


def _storage_from_bytes(data: bytes):
    """How a tensor inside a plain pickle stores itself: a nested torch.save blob, read safely."""
    return torch.load(io.BytesIO(data), map_location="cpu", pickle_module=safe_pickle_module, weights_only=False)


# The object torch.load takes as ``pickle_module``: our unpickler, the standard everything else.
safe_pickle_module = types.SimpleNamespace(
    Unpickler=RestrictedUnpickler, load=_restricted_load, __name__="maxk.safe_pickle"
)


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Read a torch.save file (zip or legacy) or a plain pickle; return plain data and tensors."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return torch.load(path, map_location="cpu", pickle_module=safe_pickle_module, weights_only=False)
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic[:1] != b"\x80":
            raise MaxkError(f"{path}: not a safetensors file, torch checkpoint or pickle")
        try:
            return torch.load(path, map_location="cpu", pickle_module=safe_pickle_module, weights_only=False)
        except (RuntimeError, pickle.UnpicklingError) as e:
            if "magic number" not in str(e).lower():
                raise
        with open(path, "rb") as fh:
            return _restricted_load(fh)
    except MaxkError:
        raise
    except Exception as e:  # truncated or corrupt files raise many different types
        why = " ".join(str(e).split())[:120]
        raise MaxkError(f"{path}: cannot read checkpoint ({type(e).__name__}: {why})") from None
