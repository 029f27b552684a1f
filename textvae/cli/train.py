"""`textvae train RECIPE.yaml -o RUN_DIR`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from textvae.cli.app import quiet_libraries, setup_logging


def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/yahoo/anneal.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to create (recipe, model, metrics.jsonl)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe value: --set train.epochs=5 --set model.latent_dim=16 (repeatable)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda[:N] (default: the recipe's train.device)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty run directory."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Train a model from a recipe into a new run directory.

    Data-parallel on N processes (CPU or one GPU each): `torchrun --nproc_per_node N -m textvae train ...`.

    The run directory receives the resolved recipe (recipe.yaml), the tokenizer and best model
    (model/), the last checkpoint (checkpoints/last/), metrics.jsonl (one JSON line per logged step
    and per epoch) and data_stats.json. Then run `textvae eval RUN_DIR`.
    """
    setup_logging(verbose)
    quiet_libraries()
    from textvae.api import train as run_training
    from textvae.cli.progress import RichProgress
    from textvae.config import load_recipe
    from textvae.training.distributed import is_main

    main = is_main()  # under torchrun only rank 0 logs, shows progress and reports
    if not main:
        logging.getLogger().setLevel(logging.WARNING)
    extra = [f"train.device={device}"] if device else []
    cfg = load_recipe(recipe, [*overrides, *extra])
    progress = RichProgress()
    try:
        run_training(cfg, out, overwrite=overwrite, callbacks=[progress] if main else [])
    finally:
        progress.close()
    if main:
        typer.echo(f"trained: {out}  (next: textvae eval {out})")
