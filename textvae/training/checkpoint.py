"""Checkpoints: model (safetensors) + tokenizer + JSON trainer state, written atomically as a directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textvae.data.tokenizers import TextTokenizer, save_tokenizer

STATE_FILE = "trainer_state.json"


def save_checkpoint(directory: Path, model, tokenizer: TextTokenizer | None, state: dict | None = None) -> None:
    """Write into a temporary sibling, then swap it in, so a crash never leaves a half-written checkpoint."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:  # image models have none
        save_tokenizer(tokenizer, tmp)
    if state is not None:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
