"""Crash-safe checkpoints of a run directory: the newest N resumable checkpoints and the best model.

    RUN_DIR/checkpoints/step-00001200/   model (config.json + model.safetensors), tokenizer, and the
                                         training state (training_state.safetensors + .json): optimisers,
                                         RNG states, data position, schedules, best weights, ...; and
                                         checksums.json, the SHA-256 of every other file
    RUN_DIR/model/                       the best model so far (what `textvae eval` loads)
    RUN_DIR/pretrain/                    the pretraining phase of a `train.pretrain` run (the same layout)

A checkpoint is written into a hidden temporary directory, flushed to disk and renamed into place, so a
crash at any moment leaves either the complete new checkpoint or none of it; leftovers of an interrupted
write are removed by the next write or resume. The best model's files are replaced one by one with
`os.replace`, so RUN_DIR/model always holds a complete model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError

from textvae.data.tokenizers import TextTokenizer, save_tokenizer
from textvae.errors import TextVAEError
from textvae.jsonfiles import read_json_object
from textvae.training.tensor_tree import load_tree, save_tree

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST_MODEL = "model"
PRETRAIN_DIR = "pretrain"  # a run's pretraining phase (`train.pretrain`), a run directory of its own
STATE = "training_state"
CHECKSUMS = "checksums.json"
_STEP_DIR = re.compile(r"step-(\d+)")
T = TypeVar("T")


def has_progress(run_dir: Path) -> bool:
    """Whether a run directory holds training to continue: a checkpoint of its own or of its pretraining."""
    return any(any((run_dir / sub / CHECKPOINTS).glob("step-*")) for sub in (".", PRETRAIN_DIR))


def _sync(path: Path) -> None:
    """Flush a file, or a directory's entries (a rename in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_files(directory: Path) -> None:
    for path in directory.iterdir():
        _sync(path)
    _sync(directory)


def _write_model(directory: Path, model, tokenizer: TextTokenizer | None, weights: dict | None = None) -> None:
    """The model's config and weights (`weights` instead of its own, if given) and the tokenizer."""
    model.save_pretrained(directory, safe_serialization=True, state_dict=weights)
    if tokenizer is not None:  # image models have none
        save_tokenizer(tokenizer, directory)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A fresh hidden temporary directory beside `target` to write into, removed whatever happens; a failed
    write (disk full, not writable) is a one-line TextVAEError naming `target`."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        yield tmp
    except (OSError, SafetensorError) as err:
        raise TextVAEError(f"{target}: cannot write ({getattr(err, 'strerror', None) or err})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _write_checksums(directory: Path) -> None:
    sums = {path.name: _sha256(path) for path in sorted(directory.iterdir()) if path.is_file()}
    (directory / CHECKSUMS).write_text(json.dumps(sums, indent=1), encoding="utf-8")


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint directory."""

    directory: Path
    step: int

    def verify(self) -> None:
        """Every file the checksums name is there, unchanged; a TextVAEError names the first that is not."""
        for name, expected in read_json_object(self.directory / CHECKSUMS).items():
            path = self.directory / str(name)
            if not path.is_file() or _sha256(path) != expected:
                raise TextVAEError(f"{path}: damaged checkpoint file (missing, or its SHA-256 differs)")

    def training_state(self) -> dict[str, Any]:
        """The training state tree (tensors on the CPU); a damaged file is a one-line TextVAEError."""
        return load_tree(self.directory, STATE)


class CheckpointStore:
    """Writes, lists and prunes the checkpoints of one run directory."""

    def __init__(self, run_dir: Path, keep_last: int = 2) -> None:
        self.run_dir = Path(run_dir)
        self.directory = self.run_dir / CHECKPOINTS
        self.keep_last = keep_last

    def save(self, step: int, model, tokenizer: TextTokenizer | None, state: dict[str, Any]) -> Checkpoint:
        """Write checkpoint `step` atomically, then delete all but the newest `keep_last`."""
        final = self.directory / f"step-{step:08d}"
        with _staging(final) as tmp:
            _write_model(tmp, model, tokenizer)
            save_tree(state, tmp, STATE)
            _write_checksums(tmp)
            _sync_files(tmp)  # a power cut after the rename below must not leave empty files behind it
            if final.exists():  # a resumed run passing a step it had saved before an unreadable newer one
                shutil.rmtree(final)
            tmp.rename(final)
            _sync(self.directory)
        self._prune()
        return Checkpoint(final, step)

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [
            Checkpoint(path, int(match.group(1)))
            for path in self.directory.iterdir()
            if path.is_dir() and (match := _STEP_DIR.fullmatch(path.name))
        ]
        return sorted(found, key=lambda c: c.step)

    def latest(self, read: Callable[[Checkpoint], T]) -> tuple[Checkpoint, T]:
        """The newest checkpoint whose files match their checksums and that `read` reads without a
        TextVAEError, with what `read` returned; a damaged newer one is skipped with a warning (and removed by
        the next save's pruning)."""
        candidates = self.checkpoints()
        if not candidates:
            raise TextVAEError(
                f"{self.run_dir}: no checkpoint to resume from ({self.directory} is missing or empty: the run "
                "stopped before its first checkpoint; start it again with --overwrite)"
            )
        errors = []
        for checkpoint in reversed(candidates):
            try:
                checkpoint.verify()
                return checkpoint, read(checkpoint)
            except TextVAEError as err:
                logger.warning("skipping damaged checkpoint: %s", err)
                errors.append(str(err))
        raise TextVAEError(f"{self.run_dir}: every checkpoint is damaged (newest: {errors[0]})")

    def remove_leftovers(self) -> None:
        """Delete temporary directories of writes a crash interrupted."""
        for parent in (self.directory, self.run_dir):
            if parent.is_dir():
                for path in parent.glob(".*.tmp-*"):
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def _prune(self) -> None:
        for old in self.checkpoints()[: -self.keep_last]:
            shutil.rmtree(old.directory, ignore_errors=True)
        self.remove_leftovers()

    def publish_best(self, model, tokenizer: TextTokenizer | None, weights: dict | None = None) -> None:
        """Make `model` (with `weights`, if given) RUN_DIR/model: written beside it, then each file moved in with
        an atomic replace (the files that change between epochs are the weights; config and tokenizer stay)."""
        best = self.run_dir / BEST_MODEL
        with _staging(best) as tmp:
            _write_model(tmp, model, tokenizer, weights)
            _sync_files(tmp)
            best.mkdir(exist_ok=True)
            for path in sorted(tmp.iterdir()):
                os.replace(path, best / path.name)
            _sync(best)
