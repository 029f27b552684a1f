"""The splits a run trains and evaluates on, behind one call per use: the modality of the recipe's `data:`
section (`textvae.modality`: text corpora, .npz images, a plugin's) loads them."""

from __future__ import annotations

from textvae.config import Recipe
from textvae.data.batching import TokenizedSplit
from textvae.data.images import ImageSplit
from textvae.data.tokenizers import TextTokenizer
from textvae.errors import TextVAEError
from textvae.modality import of_data

Split = TokenizedSplit | ImageSplit


def training_splits(
    recipe: Recipe, tokenizer: TextTokenizer | None = None
) -> tuple[Split, Split, TextTokenizer | None, dict]:
    """(train, valid, tokenizer (None for images), statistics for data_stats.json) of a recipe; the tokenizer
    is built on the training data unless given (a resumed run's)."""
    return of_data(recipe.data).training_splits(recipe.data, tokenizer)


def evaluation_split(recipe: Recipe, tokenizer: TextTokenizer | None, name: str, limit: int | None) -> Split:
    """The `name` split (valid | test) as a trained run reads it: the run's tokenizer, fixed binarisation."""
    cfg = recipe.data
    if getattr(cfg, name) is None:
        raise TextVAEError(f"data.{name}: the recipe names no {name} file")
    return of_data(cfg).evaluation_split(cfg, tokenizer, name, limit)
