"""What a resumable checkpoint costs for a recipe's model: seconds to write and to read back, and its size.

    python benchmarks/checkpoint_cost.py recipes/yahoo/vanilla.yaml [--vocab 20001] [--optim adam]

The checkpoint holds the model, the optimiser state after one update step (`--optim` overrides the recipe's
optimiser: SGD without momentum keeps none, Adam two tensors per weight) and the best weights (a copy of the
model), written through `CheckpointStore.save` as training does (flushed to disk before the rename).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from textvae.config import load_recipe
from textvae.models.model import build_model, load_model
from textvae.training.checkpoint import CheckpointStore
from textvae.training.updates import make_optimizer


def directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--vocab", type=int, default=20001, help="vocabulary size (Yahoo: 19,997 words + 4)")
    parser.add_argument("--optim", choices=["sgd", "adam"], default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    optim = recipe.optim if args.optim is None else recipe.optim.model_copy(update={"type": args.optim})
    model = build_model(recipe.model, args.vocab)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], optim, optim.lr)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # optimiser state exists, as after any update
    state = {"update": {"optimizer": optimizer.state_dict()}, "best_weights": copy.deepcopy(model.state_dict())}
    writes, reads = [], []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        store = CheckpointStore(Path(tmp), keep_last=1)
        for step in range(args.repeats):
            started = time.perf_counter()
            checkpoint = store.save(step, model, None, state)
            writes.append(time.perf_counter() - started)
            started = time.perf_counter()
            load_model(checkpoint.directory)
            checkpoint.training_state()
            reads.append(time.perf_counter() - started)
        size = directory_bytes(checkpoint.directory)
        shutil.rmtree(tmp, ignore_errors=True)
    params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "recipe": str(args.recipe),
                "parameters": params,
                "optimizer": optim.type,
                "checkpoint_mb": round(size / 2**20, 1),
                "write_seconds": round(min(writes), 2),
                "read_seconds": round(min(reads), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
