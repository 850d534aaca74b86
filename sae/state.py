"""Training state on disk: tensors in safetensors, everything else in JSON, never pickle.

A state is a folder `train_state/` holding `state.safetensors` + `state.json`. It is written
to a temporary sibling folder and renamed into place, so a crash leaves either the old
state or the new one, never half of one.

Nested Python state (optimizer state dicts, a data source's `state_dict()`) is split by
`pack` into a JSON-able tree, with every tensor replaced by {"__tensor__": key} and stored
under that key; `unpack` reverses it. Dicts with int keys and tuples survive the trip.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

TENSORS_FILE = "state.safetensors"
META_FILE = "state.json"
FORMAT = "sae-train-state"
VERSION = 1


def pack(obj: Any, tensors: dict[str, Tensor], prefix: str) -> Any:
    """JSON-able copy of obj; tensors go into `tensors` under keys starting with prefix."""
    if isinstance(obj, Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: pack(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in obj):
            return {
                "__int_keys__": {str(k): pack(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
            }
        raise ValueError(f"cannot save state {prefix}: dict keys must be all str or all int")
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if type(obj).__module__ == "numpy":
        if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
            return pack(obj.item(), tensors, prefix)
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = torch.as_tensor(obj).clone().contiguous()
        return {"__ndarray__": key}
    raise ValueError(f"cannot save state {prefix}: unsupported type {type(obj).__name__}")


def unpack(obj: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of `pack`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__ndarray__"}:
            return tensors[obj["__ndarray__"]].numpy()
        if set(obj) == {"__int_keys__"}:
            return {int(k): unpack(v, tensors) for k, v in obj["__int_keys__"].items()}
        if set(obj) == {"__tuple__"}:
            return tuple(unpack(v, tensors) for v in obj["__tuple__"])
        return {k: unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


def save_state(folder: str | Path, meta: dict, tensors: dict[str, Tensor]) -> None:
    """Atomically replace `folder` with a state made of meta (JSON-able) and tensors."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / TENSORS_FILE))
        with open(tmp / META_FILE, "w") as f:
            json.dump({"format": FORMAT, "version": VERSION, **meta}, f)
        for name in (TENSORS_FILE, META_FILE):  # durable before the rename makes it visible
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        old = folder.parent / f".{folder.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def state_exists(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() or (folder.parent / f".{folder.name}.old").is_dir()


def load_state(folder: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(meta, tensors) of a state written by `save_state`. ValueError if missing or corrupt."""
    folder = Path(folder)
    if not folder.is_dir():
        # A crash between the two renames of save_state leaves only the previous state.
        old = folder.parent / f".{folder.name}.old"
        if not old.is_dir():
            raise ValueError(f"no training state at {folder}")
        folder = old
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt training state {folder}: {META_FILE}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{folder} is not a training state written by this library")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"training state {folder} has version {meta.get('version')}, expected {VERSION}"
        )
    try:
        tensors = load_file(str(folder / TENSORS_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt training state {folder}: {TENSORS_FILE}: {err}") from None
    return meta, tensors
