"""The splits a run trains and evaluates on, text or images, behind one call per use."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from textvae.config import ImageDataConfig, Recipe
from textvae.data.batching import TokenizedSplit
from textvae.data.images import ImageSplit, load_image_split
from textvae.data.text import prepare_corpus
from textvae.data.tokenizers import TextTokenizer
from textvae.errors import TextVAEError

Split = TokenizedSplit | ImageSplit


def _image_split(cfg: ImageDataConfig, name: str, limit: int | None = None) -> ImageSplit:
    path = getattr(cfg, name)
    binarization = cfg.train_binarization if name == "train" else "fixed"
    return load_image_split(path, binarization, seed=cfg.binarization_seed, limit=limit)


def _provenance(manifest: Path) -> dict:
    """What `textvae data prepare` recorded about the data's source (e.g. "not the benchmark split")."""
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {"dataset": record.get("dataset"), "source": record.get("source"), "warnings": record.get("warnings", [])}


def training_splits(
    recipe: Recipe, tokenizer: TextTokenizer | None = None
) -> tuple[Split, Split, TextTokenizer | None, dict]:
    """(train, valid, tokenizer (None for images), statistics for data_stats.json) of a recipe; the tokenizer
    is built on the training data unless given (a resumed run's)."""
    cfg = recipe.data
    if isinstance(cfg, ImageDataConfig):
        train, valid = _image_split(cfg, "train", cfg.limit_train), _image_split(cfg, "valid")
        stats = {
            name: {"images": len(s), "shape": list(s.image_shape)} for name, s in (("train", train), ("valid", valid))
        }
        return train, valid, None, {**stats, **_provenance(Path(cfg.train).parent / "manifest.json")}
    splits, tokenizer, stats = prepare_corpus(cfg, tokenizer, splits=("train", "valid"))
    train, valid = (TokenizedSplit.from_dataset(splits[name]) for name in ("train", "valid"))
    return train, valid, tokenizer, {k: asdict(v) for k, v in stats.items()}


def evaluation_split(recipe: Recipe, tokenizer: TextTokenizer | None, name: str, limit: int | None) -> Split:
    """The `name` split (valid | test) as a trained run reads it: the run's tokenizer, fixed binarisation."""
    cfg = recipe.data
    if getattr(cfg, name) is None:
        raise TextVAEError(f"data.{name}: the recipe names no {name} file")
    if isinstance(cfg, ImageDataConfig):
        return _image_split(cfg, name, limit)
    splits, _, _ = prepare_corpus(cfg, tokenizer, splits=(name,))
    return TokenizedSplit.from_dataset(splits[name], limit=limit)
