"""What depends on the kind of data a model reads, text or images, in one object per kind: how evaluation
counts what it scored, whether a perplexity and the text-only metrics exist, and whether a run has a
tokenizer. A model section names its modality (`ModelSection.modality`), a batch class its own, and an
`eval.json` shows it by its count keys."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Modality:
    name: str
    documents: str  # what a per-document NLL is per, in words ("documents", "images")
    count_keys: tuple[str, str]  # the metric keys of (documents scored, predicted units)
    perplexity: bool  # PPL = exp(NLL / predicted tokens); images: NLL per image only
    text_metrics: bool  # reconstruction BLEU and sample diversity exist (decoded text)
    tokenizer: bool  # a run of this modality saves and loads a tokenizer

    def counts(self, n_documents: int, n_units: int) -> dict[str, int]:
        """How many documents and predicted tokens (images and pixels) an evaluation scored."""
        return dict(zip(self.count_keys, (n_documents, n_units), strict=True))

    def perplexity_of(self, key: str, total_nll: float, n_units: int) -> dict[str, float]:
        """{key: exp(total NLL / predicted tokens)}, or nothing where there is no perplexity."""
        return {key: math.exp(min(total_nll / n_units, 700.0))} if self.perplexity else {}


TEXT = Modality("text", "documents", ("n_sentences", "n_tokens"), perplexity=True, text_metrics=True, tokenizer=True)
IMAGES = Modality("images", "images", ("n_images", "n_pixels"), perplexity=False, text_metrics=False, tokenizer=False)
MODALITIES = {modality.name: modality for modality in (TEXT, IMAGES)}


def of_metrics(metrics: Mapping[str, Any]) -> Modality:
    """The modality an evaluation's metrics (`eval.json`) were measured on, from their count keys."""
    return IMAGES if IMAGES.count_keys[0] in metrics else TEXT
