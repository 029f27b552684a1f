"""The Python API behind the CLI: train a recipe into a run directory, load and evaluate a run."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from textvae.config import Recipe, SVIConfig, build_recipe, load_recipe_dict, save_recipe
from textvae.data.batching import TokenizedSplit
from textvae.data.text import prepare_corpus
from textvae.data.tokenizers import TextTokenizer, load_tokenizer
from textvae.errors import TextVAEError
from textvae.evaluation import evaluate
from textvae.models.model import LatentVariableModel, build_model, load_model
from textvae.training.trainer import Trainer, TrainerCallback, seed_everything

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"


@dataclass
class Run:
    """A trained run loaded from its directory."""

    directory: Path
    recipe: Recipe
    model: LatentVariableModel
    tokenizer: TextTokenizer


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TextVAEError(f"device {device!r}: CUDA is not available on this machine")
    if not (device == "cpu" or device.startswith("cuda")):
        raise TextVAEError(f"device {device!r}: expected cpu or cuda[:N]")
    return device


def claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to reuse a non-empty run directory unless `overwrite`; fail early if it can't be written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TextVAEError(f"{run_dir}: exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise TextVAEError(f"{run_dir}: run directory exists and is not empty (use --overwrite to replace it)")
    parent = run_dir.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TextVAEError(f"{run_dir}: cannot create the run directory ({parent} is not writable)")


def train(
    recipe: Recipe,
    run_dir: Path,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> Run:
    """Train `recipe` into `run_dir` (recipe, tokenizer, model, checkpoints, metrics.jsonl)."""
    run_dir = Path(run_dir)
    check_device(recipe.train.device)
    claim_run_dir(run_dir, overwrite)
    splits, tokenizer, stats = prepare_corpus(recipe.data, splits=("train", "valid"))
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, run_dir / RECIPE_FILE)
    (run_dir / "data_stats.json").write_text(json.dumps({k: asdict(v) for k, v in stats.items()}, indent=1))
    seed_everything(recipe.train.seed)
    model = build_model(recipe.model, tokenizer.vocab_size)
    logger.info("model: %s, %d parameters", recipe.model.type, sum(p.numel() for p in model.parameters()))
    trainer = Trainer(
        recipe,
        model,
        tokenizer,
        TokenizedSplit.from_dataset(splits["train"]),
        TokenizedSplit.from_dataset(splits["valid"]),
        run_dir,
        callbacks,
    )
    trainer.fit()
    return Run(run_dir, recipe, model.eval(), tokenizer)


def load_run(run_dir: Path, device: str = "cpu") -> Run:
    """Load the best model, tokenizer and resolved recipe of a finished run."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE_FILE).is_file():
        raise TextVAEError(f"{run_dir}: not a textvae run directory ({RECIPE_FILE} missing)")
    recipe = build_recipe(load_recipe_dict(run_dir / RECIPE_FILE), str(run_dir / RECIPE_FILE))
    model = load_model(run_dir / "model", check_device(device))
    tokenizer = load_tokenizer(run_dir / "model")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise TextVAEError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} types but the model expects {model.config.vocab_size}"
        )
    return Run(run_dir, recipe, model, tokenizer)


def evaluate_run(
    run: Run,
    split: str = "test",
    iw_samples: int | None = None,
    limit: int | None = None,
    svi_steps: int | None = None,
) -> dict:
    """Run the evaluation protocol on a split of the run's data; returns the eval.json dict.

    `iw_nll_svi` (IW-NLL with the posterior refined by SVI) is added for SA-VAE runs (their training SVI
    settings), for recipes with `eval.svi`, and with `svi_steps` (those settings, or Kim et al.'s defaults).
    """
    cfg = run.recipe.eval.model_copy(
        update={k: v for k, v in {"iw_samples": iw_samples, "limit": limit}.items() if v is not None}
    )
    if cfg.svi is None and run.recipe.update.type == "savae":  # SA-VAE: test-time SVI as in training
        cfg = cfg.model_copy(update={"svi": run.recipe.update.svi})
    if svi_steps is not None:
        cfg = cfg.model_copy(update={"svi": (cfg.svi or SVIConfig()).model_copy(update={"steps": svi_steps})})
    if getattr(run.recipe.data, split) is None:
        raise TextVAEError(f"data.{split}: the recipe names no {split} file")
    splits, _, _ = prepare_corpus(run.recipe.data, run.tokenizer, splits=(split,))
    data = TokenizedSplit.from_dataset(splits[split], limit=cfg.limit)
    metrics = evaluate(run.model, data, run.recipe.data.eval_batch_size, cfg, tokenizer=run.tokenizer)
    metrics.update(
        {
            "split": split,
            "limit": cfg.limit,
            "model_type": run.recipe.model.type,
            "latent_dim": run.model.latent_dim,
            "recipe": run.recipe.name,
        }
    )
    return metrics
