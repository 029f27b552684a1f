"""The modality objects: what evaluation counts and reports for text and for images."""

from __future__ import annotations

import math

import pytest

from textvae.data.batching import TextBatch
from textvae.data.images import ImageBatch
from textvae.modality import IMAGES, MODALITIES, TEXT, of_metrics
from textvae.registries import ARCHITECTURES


def test_text_counts_documents_and_tokens_and_has_a_perplexity():
    assert TEXT.counts(3, 40) == {"n_sentences": 3, "n_tokens": 40}
    assert TEXT.perplexity_of("ppl", 80.0, 40) == {"ppl": pytest.approx(math.exp(2.0))}


def test_images_count_images_and_pixels_and_have_no_perplexity():
    assert IMAGES.counts(2, 1568) == {"n_images": 2, "n_pixels": 1568}
    assert IMAGES.perplexity_of("ppl", 80.0, 40) == {}
    assert not IMAGES.tokenizer and not IMAGES.text_metrics


def test_an_evaluation_shows_its_modality_by_its_count_keys():
    assert of_metrics({"n_images": 10, "iw_nll": 90.0}) is IMAGES
    assert of_metrics({"n_sentences": 10, "iw_nll": 30.0}) is TEXT


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_architecture_and_batch_names_a_known_modality(architecture: str):
    assert ARCHITECTURES.config(architecture).modality in MODALITIES
    assert (TextBatch.modality, ImageBatch.modality) == ("text", "images")
