"""Nested training state (dicts, lists, tuples, numbers, strings, tensors) as safetensors + JSON: no pickle.

`save_tree` stores every tensor in NAME.safetensors and the structure, with each tensor replaced by a
reference, in NAME.json; `load_tree` reverses it. Dicts with non-string keys (an optimiser's per-parameter
state is keyed by int) and tuples keep their types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from textvae.errors import TextVAEError
from textvae.jsonfiles import read_json

TENSOR, TUPLE, ITEMS = "__tensor__", "__tuple__", "__items__"


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()  # own storage: safetensors refuses shared
        return {TENSOR: key}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _flatten(v, tensors) for k, v in value.items()}
        return {ITEMS: [[k, _flatten(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {TUPLE: [_flatten(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_flatten(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {TENSOR}:
            return tensors[value[TENSOR]]
        if set(value) == {TUPLE}:
            return tuple(_unflatten(v, tensors) for v in value[TUPLE])
        if set(value) == {ITEMS}:
            return {k: _unflatten(v, tensors) for k, v in value[ITEMS]}
        return {k: _unflatten(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def save_tree(tree: Any, directory: Path, name: str) -> None:
    """Write `tree` as directory/NAME.safetensors and directory/NAME.json."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(tree, tensors)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(structure), encoding="utf-8")


def load_tree(directory: Path, name: str) -> Any:
    """Read what `save_tree` wrote (tensors on the CPU); a missing, truncated or corrupted file is a
    TextVAEError naming it."""
    structure_file, tensor_file = directory / f"{name}.json", directory / f"{name}.safetensors"
    structure = read_json(structure_file)
    try:
        tensors = load_file(str(tensor_file))
    except (OSError, SafetensorError, ValueError) as err:
        raise TextVAEError(f"{tensor_file}: unreadable checkpoint file ({str(err).splitlines()[0]})") from err
    try:
        return _unflatten(structure, tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise TextVAEError(f"{structure_file}: does not match {tensor_file.name} ({err!r})") from err
