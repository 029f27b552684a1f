"""Cost of the update rules: seconds per training step of each recipe, relative to the first one.

    python benchmarks/update_rules.py recipes/yahoo-mini/vanilla.yaml recipes/yahoo-mini/aggressive.yaml \
        recipes/yahoo-mini/savae.yaml --steps 30

Every recipe trains a freshly initialised model (same seed) on the same first `--steps` batches of
its training data; the table gives the mean wall-clock per outer step and, for aggressive training,
the encoder-only inner steps per outer step. Training data must be prepared (`textvae data prepare`).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from textvae.config import Recipe, load_recipe
from textvae.data.batching import TokenizedSplit, make_loader
from textvae.data.text import prepare_corpus
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.training.trainer import flush_denormals, random_training_batches, seed_everything
from textvae.training.updates import UpdateContext, build_update


def time_recipe(path: str, steps: int, overrides: list[str]) -> dict:
    return {"recipe": path, **time_rule(load_recipe(path, overrides), steps)}


def time_rule(recipe: Recipe, steps: int, device: str = "cpu", warmup: int = 0) -> dict:
    """Mean seconds per outer step of the recipe's update rule over `steps` timed steps (after `warmup` untimed
    ones), on a freshly initialised model on `device`; for aggressive training the inner steps per outer step."""
    splits, tokenizer, _ = prepare_corpus(recipe.data, splits=("train",))
    train = TokenizedSplit.from_dataset(splits["train"])
    seed_everything(recipe.train.seed)
    model = build_model(recipe.model, tokenizer.vocab_size).to(device).train()
    model.set_precision(recipe.train.precision)
    loader = make_loader(train, recipe.data.batch_size, shuffle=True, seed=recipe.train.seed)
    objective = build_objective(recipe.objective, len(loader), recipe.train.epochs)
    batches = random_training_batches(recipe, train)
    ctx = UpdateContext(model, objective, recipe.optim, recipe.update, recipe.optim.lr, lambda: batches().to(device))
    update = build_update(ctx)
    cuda = device.startswith("cuda")
    seconds, inner, tokens = [], [], 0
    with flush_denormals(torch.device(device)):
        for step, batch in enumerate(itertools.islice(loader, warmup + steps)):
            batch = batch.to(device)
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            terms = update(batch, step)
            if cuda:
                torch.cuda.synchronize()
            if step >= warmup:
                seconds.append(time.perf_counter() - started)
                inner.append(terms.get("inner_steps", 0.0))
                tokens += batch.n_predicted
    return {
        "update": recipe.update.type,
        "s_per_step": statistics.mean(seconds),
        "inner_mean": statistics.mean(inner),
        "inner_max": max(inner),
        "tokens_per_s": tokens / sum(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} outer steps per recipe")
    rows = [time_recipe(path, args.steps, args.overrides) for path in args.recipes]
    base = rows[0]["s_per_step"]
    print(f"{'recipe':48} {'update':10} {'s/step':>8} {'x first':>8} {'inner/outer':>12} {'tokens/s':>9}")
    for row in rows:
        inner = f"{row['inner_mean']:.1f} (max {row['inner_max']:.0f})" if row["update"] == "aggressive" else "-"
        print(
            f"{row['recipe']:48} {row['update']:10} {row['s_per_step']:8.3f} {row['s_per_step'] / base:8.2f} "
            f"{inner:>12} {row['tokens_per_s']:9.0f}"
        )


if __name__ == "__main__":
    main()
