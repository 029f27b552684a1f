"""Using the latent space: interpolation paths, encoding raw texts, and the Run API (sample, reconstruct,
interpolate) on a small trained run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import WORDS, random_sentences

from textvae import api
from textvae.config import build_recipe
from textvae.data.batching import collate
from textvae.generation.decoding import DecodingConfig, decode
from textvae.generation.latent_space import (
    encode_texts,
    interpolation_path,
    lerp,
    slerp,
    tokenize_texts,
)


def test_lerp_and_slerp_hit_the_ends_and_their_closed_forms():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(lerp(a, b, t), torch.stack([a, (a + b) / 2, b]))
    s = slerp(a, b, t)
    assert torch.allclose(s[0], a) and torch.allclose(s[2], b, atol=1e-6)
    # 90 degrees apart: at t = 1/2 the weights are sin(pi/4) / sin(pi/2) = 1/sqrt(2) each
    assert torch.allclose(s[1], (a + b) / math.sqrt(2), atol=1e-6)


def test_slerp_keeps_the_norm_between_equal_norm_ends_where_lerp_shrinks_it():
    torch.manual_seed(0)
    a, b = torch.randn(32), torch.randn(32)
    b = b / b.norm() * a.norm()
    spherical = interpolation_path(a, b, 9, spherical=True)
    linear = interpolation_path(a, b, 9)
    assert torch.allclose(spherical.norm(dim=1), a.norm().expand(9), rtol=1e-5)
    assert float(linear[4].norm()) < 0.9 * float(a.norm())  # the straight line cuts towards the origin


def test_slerp_of_parallel_ends_falls_back_to_lerp():
    a = torch.tensor([1.0, 2.0])
    t = torch.linspace(0, 1, 5)
    assert torch.allclose(slerp(a, 3 * a, t), lerp(a, 3 * a, t))


def test_an_interpolation_needs_both_ends():
    with pytest.raises(ValueError, match="at least 2"):
        interpolation_path(torch.zeros(2), torch.ones(2), 1)


@pytest.fixture(scope="module")
def run(tmp_path_factory, write_corpus, torch_single_thread) -> api.Run:
    """A tiny LSTM VAE trained for one epoch (a few seconds)."""
    root = tmp_path_factory.mktemp("latent")
    write_corpus(root / "train.txt", 300, seed=1)
    write_corpus(root / "valid.txt", 40, seed=2)
    write_corpus(root / "test.txt", 30, seed=3)
    recipe = build_recipe(
        {
            "name": "tiny",
            "data": {
                "train": str(root / "train.txt"),
                "valid": str(root / "valid.txt"),
                "test": str(root / "test.txt"),
                "cache_dir": str(root / "hf-cache"),
                "max_length": 12,
            },
            "model": {"embed_dim": 16, "hidden_dim": 32, "latent_dim": 4, "word_dropout": 0.3},
            "train": {"epochs": 1},
        },
        "tiny recipe",
    )
    api.train(recipe, root / "run")
    return api.load_run(root / "run")


def test_encode_keeps_the_input_order_and_matches_the_encoder(run):
    texts = random_sentences(9, seed=5, min_len=1, max_len=8)  # unequal lengths: batches are length-sorted
    means = encode_texts(run.model, run.tokenizer, texts, batch_size=4)
    split = tokenize_texts(run.tokenizer, texts)
    for i in (0, 3, 8):
        batch = collate([(0, split.ids[i])])
        with torch.inference_mode():
            expected = run.model.encode(batch.tokens, batch.lengths).mean[0]
        assert torch.allclose(means[i], expected, atol=1e-5)


def test_texts_are_truncated_like_the_training_data_and_empty_ones_refused(run):
    long_text = " ".join(WORDS * 5)
    assert len(tokenize_texts(run.tokenizer, [long_text], max_length=12).ids[0]) == 12
    assert torch.allclose(run.encode([long_text]), run.encode([" ".join(long_text.split()[:12])]))
    with pytest.raises(ValueError, match="text 2 is empty"):
        run.encode(["a", "  "])


def test_samples_are_reproducible_per_seed_and_respect_the_length(run):
    first = run.sample(6, seed=3, max_length=5)
    assert first == run.sample(6, seed=3, max_length=5)
    assert first != run.sample(6, seed=4, max_length=5)
    assert all(len(text.split()) <= 5 for text in first)
    greedy = run.sample(4, seed=3, strategy="greedy")
    beam = run.sample(4, seed=3, strategy="beam", beam_size=3)
    assert len(greedy) == len(beam) == 4


def test_reconstruction_is_the_greedy_decode_of_the_posterior_mean(run):
    texts = random_sentences(5, seed=7)
    expected_ids = decode(
        run.model.decoder,
        run.encode(texts),
        DecodingConfig(max_length=12),
        max_lengths=[2 * len(run.tokenizer.encode_batch([t])[0]) + 10 for t in texts],
    )
    assert run.reconstruct(texts) == [run.tokenizer.decode(ids) for ids in expected_ids]


def test_interpolation_starts_and_ends_at_the_two_texts(run):
    a, b = " ".join(WORDS[:4]), " ".join(WORDS[4:8])  # same length: same decoding limit as their reconstructions
    path = run.interpolate(a, b, steps=5, slerp=True)
    assert [t for t, _ in path] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert path[0][1] == run.reconstruct([a])[0] and path[-1][1] == run.reconstruct([b])[0]


def test_decoding_options_are_validated(run):
    with pytest.raises(ValueError, match="top_p"):
        run.sample(2, top_p=1.5)
    assert run.decoding().max_length == 12  # the recipe's data.max_length
    assert run.decoding(DecodingConfig(max_length=3), strategy="beam").max_length == 3


def test_word_dropout_is_saved_and_acts_only_in_training(run):
    model = run.model
    assert model.decoder.word_dropout == 0.3
    tokens = collate([(0, [5, 6, 7, 8, 9, 10])]).tokens
    z = torch.zeros(1, 1, model.latent_dim)
    model.eval()
    assert torch.equal(model.decoder.log_prob(tokens, z), model.decoder.log_prob(tokens, z))
    model.decoder.train()
    torch.manual_seed(0)
    noisy = torch.stack([model.decoder.log_prob(tokens, z) for _ in range(20)])
    model.decoder.eval()
    assert noisy.std() > 0  # different words hidden each time
    model.eval()


def test_word_dropout_hides_words_but_never_the_start_or_padding():
    from textvae.data.tokenizers import BOS, PAD, UNK
    from textvae.models.base import drop_words

    inputs = torch.tensor([[BOS, 5, 6, 7, PAD], [BOS, 8, PAD, PAD, PAD]])
    assert torch.equal(drop_words(inputs, 0.0), inputs)
    hidden = drop_words(inputs, 1.0)
    assert torch.equal(hidden, torch.tensor([[BOS, UNK, UNK, UNK, PAD], [BOS, UNK, PAD, PAD, PAD]]))
    torch.manual_seed(0)
    rate = (drop_words(torch.full((200, 50), 9), 0.3) == UNK).float().mean()
    assert abs(float(rate) - 0.3) < 0.02


def test_language_model_runs_sample_but_not_encode(run):
    from textvae.models.model import build_model

    lm_model = build_model(run.recipe.model.model_copy(update={"type": "lstm_lm"}), run.tokenizer.vocab_size)
    lm = api.Run(run.directory, run.recipe, lm_model.eval(), run.tokenizer)
    assert len(lm.sample(3, max_length=4)) == 3
    with pytest.raises(TypeError, match="language model"):
        lm.reconstruct(["a b"])


def test_a_run_records_its_environment(run):
    import json

    env = json.loads((run.directory / "environment.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["python"].count(".") == 2 and env["cpu_count"] >= 1 and env["started_utc"].endswith("+00:00")
