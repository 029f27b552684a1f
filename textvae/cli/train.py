"""`textvae train RECIPE.yaml -o RUN_DIR` and `textvae train --resume RUN_DIR`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from textvae.cli.app import quiet_libraries, setup_logging
from textvae.errors import TextVAEError


def train(
    recipe: Path | None = typer.Argument(
        None,
        help="Recipe YAML, e.g. recipes/yahoo/anneal.yaml. Its relative data paths resolve against its own folder "
        "where the file exists there, else against the working directory (as the shipped recipes' data/...).",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory to create (recipe, model, metrics)."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue a stopped or killed run from its newest checkpoint (no RECIPE, no -o)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe value: --set train.epochs=5 --set model.latent_dim=16 (repeatable)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda[:N] (default: the recipe's train.device)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty run directory."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Train a model from a recipe into a new run directory, or resume a run.

    Data-parallel on N processes (CPU or one GPU each): `torchrun --nproc_per_node N -m textvae train ...`.

    The run directory receives the resolved recipe (recipe.yaml), the tokenizer and best model
    (model/), resumable checkpoints (checkpoints/step-N/, the newest train.checkpoints.keep_last),
    metrics.jsonl (one JSON line per logged step and per epoch) and data_stats.json. Then run
    `textvae eval RUN_DIR`. A killed run continues exactly with `textvae train --resume RUN_DIR`.
    """
    setup_logging(verbose)
    check_arguments(recipe, out, resume, overrides, overwrite)
    quiet_libraries()
    from textvae import api
    from textvae.cli.progress import RichProgress
    from textvae.config import load_recipe
    from textvae.training.distributed import is_main

    main = is_main()  # under torchrun only rank 0 logs, shows progress and reports
    if not main:
        logging.getLogger().setLevel(logging.WARNING)
    progress = RichProgress()
    callbacks = [progress] if main else []
    try:
        if resume is not None:
            run = api.resume(resume, device, callbacks)
        else:
            cfg = load_recipe(recipe, [*overrides, *([f"train.device={device}"] if device else [])])
            run = api.train(cfg, out, overwrite=overwrite, callbacks=callbacks)
    finally:
        progress.close()
    if main:
        typer.echo(f"trained: {run.directory}  (next: textvae eval {run.directory})")


def check_arguments(
    recipe: Path | None, out: Path | None, resume: Path | None, overrides: list[str], overwrite: bool
) -> None:
    """Either RECIPE -o RUN_DIR (a new run) or --resume RUN_DIR alone."""
    if resume is None:
        if recipe is None or out is None:
            raise TextVAEError("give a RECIPE and --out RUN_DIR (or --resume RUN_DIR to continue a run)")
        return
    clashing = [name for name, given in (("RECIPE", recipe), ("--out", out), ("--set", overrides)) if given]
    clashing += ["--overwrite"] if overwrite else []
    if clashing:
        raise TextVAEError(f"--resume continues a run with its own recipe: drop {', '.join(clashing)}")
