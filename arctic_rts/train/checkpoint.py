"""Training checkpoints without pickle: tensors in safetensors, everything else as JSON.

A checkpoint is any nesting of dicts (string or integer keys), lists, tuples, tensors, numbers,
strings, booleans and None, such as a model's, an optimiser's and a scheduler's state dicts. The
tensors go into one safetensors file and the structure around them, as JSON, into that file's
metadata, so a checkpoint is one file written atomically and reading it back runs no code:
loading is parsing JSON and copying tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from arctic_rts.errors import TrainingError
from arctic_rts.files import atomic_write

#: The metadata key that holds the JSON structure.
_STRUCTURE = "arctic_rts_state"


def save_state(path: str | Path, state: Any) -> None:
    """Write ``state`` to ``path`` (safetensors) atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    structure = json.dumps(_encode(state, tensors))
    atomic_write(
        Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={_STRUCTURE: structure})
    )


def load_state(path: str | Path) -> Any:
    """Read what :func:`save_state` wrote (tensors on the CPU).

    Raises:
        TrainingError: the file is no checkpoint of this kind (unreadable, or no structure).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            structure = (f.metadata() or {}).get(_STRUCTURE)
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as err:
        raise TrainingError(f"cannot read the checkpoint {path}: {err}") from err
    if structure is None:
        raise TrainingError(f"{path} is a safetensors file but no training checkpoint.")
    return _decode(json.loads(structure), tensors)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {"tensor": key}
    if isinstance(value, dict):
        return {"dict": [[k, _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v, tensors) for v in value]}
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": value}
    raise TypeError(f"a checkpoint cannot hold a {type(value).__name__}.")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    ((kind, body),) = node.items()
    if kind == "tensor":
        return tensors[body]
    if kind == "dict":
        return {k: _decode(v, tensors) for k, v in body}
    if kind == "tuple":
        return tuple(_decode(v, tensors) for v in body)
    if kind == "list":
        return [_decode(v, tensors) for v in body]
    return body
