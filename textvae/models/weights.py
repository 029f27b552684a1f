"""Model weights come from safetensors files only, never from a pickle (pytorch_model.bin, *.pt, ...).

`transformers` `from_pretrained(..., use_safetensors=True)` still reads a pickle (through `torch.load`) in two
cases: a config.json naming `"transformers_weights": "adapter_model.bin"`, and a PEFT adapter directory
(adapter_config.json) without adapter_model.safetensors when `peft` is installed. `check_weights` refuses
both, and checks that every safetensors file transformers would read parses as safetensors, so a pickle
renamed model.safetensors is a one-line error instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open

from textvae.errors import TextVAEError
from textvae.jsonfiles import read_json_object

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SAFE_ONLY = "model weights are read from safetensors only, never from a pickle"


def check_safetensors(path: Path) -> None:
    """Raise a one-line TextVAEError unless `path` is a safetensors file (only its header is parsed)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (OSError, SafetensorError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TextVAEError(f"{path}: not a safetensors file ({reason}); {SAFE_ONLY}") from err


def _inside(directory: Path, name: str, where: Path) -> Path:
    path = (directory / name).resolve()
    if not name.endswith(".safetensors") or not path.is_relative_to(directory.resolve()):
        raise TextVAEError(f"{where}: names weights file {name!r}; {SAFE_ONLY}")
    return path


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files `from_pretrained(directory, use_safetensors=True)` reads; TextVAEError where it
    would read a pickle instead or find no safetensors weights."""
    config = directory / "config.json"
    named = read_json_object(config).get("transformers_weights") if config.is_file() else None
    if named is not None:
        files = [_inside(directory, str(named), config)]
    elif (directory / WEIGHTS).is_file():
        files = [directory / WEIGHTS]
    elif (directory / INDEX).is_file():
        shards = read_json_object(directory / INDEX).get("weight_map")
        if not isinstance(shards, dict) or not shards:
            raise TextVAEError(f"{directory / INDEX}: no weight_map")
        files = [_inside(directory, str(name), directory / INDEX) for name in sorted(set(shards.values()))]
    else:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"})
        found = f" (found {', '.join(pickles)})" if pickles else ""
        raise TextVAEError(f"{directory}: no {WEIGHTS}{found}; {SAFE_ONLY}")
    if (directory / ADAPTER_CONFIG).is_file():  # a PEFT adapter: loaded (when peft is installed) .bin or not
        files.append(directory / ADAPTER_WEIGHTS)
    return files


def check_weights(directory: Path) -> None:
    """Refuse a model directory whose weights would not come from (valid) safetensors files alone."""
    for path in weight_files(directory):
        if not path.is_file():
            raise TextVAEError(f"{path}: missing; {SAFE_ONLY}")
        check_safetensors(path)
