"""Posterior means (He et al. 2019, Fig. 2): the grid quadrature against a conjugate Gaussian case, the LSTM
grid scorer against the decoder's own pass, and the tracker's plot and JSON."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

import textvae.evaluation.likelihood as likelihood
import textvae.evaluation.posterior_mean as posterior_mean
from textvae.config import ModelConfig, PosteriorMeanPlotConfig, Recipe
from textvae.data.batching import TokenizedSplit, collate
from textvae.data.tokenizers import WordTokenizer
from textvae.errors import TextVAEError
from textvae.evaluation.posterior_mean import grid_log_likelihood, latent_grid, model_posterior_mean, posterior_means
from textvae.models.model import LatentVariableModel, build_model
from textvae.reports.posterior_plot import load_snapshots_json, plot_posterior_means
from textvae.training.posterior_tracker import PosteriorMeanTracker
from textvae.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("torch_single_thread")

VOCAB = 12  # 4 specials + 8 words
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


TINY = {
    "embed_dim": 8,
    "hidden_dim": 16,
    "dropout_in": 0.0,
    "dropout_out": 0.0,
    "init_scale": 0.5,
    "embed_init_scale": 0.5,
}


def tiny_vae(latent_dim: int = 2, seed: int = 0) -> LatentVariableModel:
    """A random LSTM VAE whose p(x|z) varies noticeably with z."""
    torch.manual_seed(seed)
    return build_model(ModelConfig(latent_dim=latent_dim, **TINY), VOCAB)


def random_docs(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, VOCAB, size=rng.integers(1, 9)).tolist() for _ in range(n)]


# --- the grid --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 2])
def test_latent_grid_covers_the_box_with_trapezoid_weights(dim: int):
    points, log_weights = latent_grid(dim, 5, 2.0)
    assert points.shape == (5**dim, dim) and log_weights.shape == (5**dim,)
    assert points.min() == -2.0 and points.max() == 2.0
    assert log_weights.exp().sum().item() == pytest.approx(4.0**dim)  # the volume of the box, exactly
    weights = dict(zip(map(tuple, points.tolist()), log_weights.exp().tolist()))
    assert weights[(0.0,) * dim] == pytest.approx(1.0)  # interior: the cell volume h^Z, h = 1
    assert weights[(2.0,) * dim] == pytest.approx(0.5**dim)  # corner: halved per boundary coordinate


@pytest.mark.parametrize("dim", [0, 3])
def test_latent_grid_needs_one_or_two_dimensions(dim: int):
    with pytest.raises(ValueError, match="1-d or 2-d"):
        latent_grid(dim, 5, 2.0)


# --- quadrature against a conjugate case ---------------------------------------------------------------


class GaussianDecoder(nn.Module):
    """log p(x|z) = log N(z; a_x, s² I) + const, a_x set by the first word: p(z|x) is Gaussian with mean
    a_x / (1 + s²) under the N(0, I) prior. Records the (documents, z) shape of every pass."""

    def __init__(self, centres: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.centres = centres
        self.scale = scale
        self.passes: list[tuple[int, int]] = []

    def log_prob(self, tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.passes.append((z.shape[0], z.shape[1]))
        centre = self.centres[tokens[:, 1]].unsqueeze(1)
        return -0.5 * (((z - centre) / self.scale) ** 2).sum(-1) - 7.0


@pytest.mark.parametrize("dim", [1, 2])
def test_model_posterior_mean_matches_the_conjugate_closed_form(dim: int, monkeypatch):
    model = tiny_vae(dim)
    scale = 0.7
    centres = torch.empty(VOCAB, dim).uniform_(-2.5, 2.5, generator=torch.Generator().manual_seed(dim))
    model.decoder = GaussianDecoder(centres, scale)
    batch = collate(list(enumerate(random_docs(10))))
    cfg = PosteriorMeanPlotConfig()
    grid = latent_grid(dim, cfg.grid_size, cfg.extent)
    expected = centres[batch.tokens[:, 1]] / (1 + scale**2)
    whole = model_posterior_mean(model, batch.tokens, grid)
    assert expected.std(0).min() > 0.3  # the documents' posteriors really differ
    torch.testing.assert_close(whole, expected, atol=1e-3, rtol=0)

    model.decoder.passes.clear()
    monkeypatch.setattr(likelihood, "LOGIT_BUDGET", batch.tokens.shape[1] * VOCAB * 7)  # 7 (doc, z) rows a pass
    chunked = model_posterior_mean(model, batch.tokens, grid)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    assert len(model.decoder.passes) > 1 and max(docs * n for docs, n in model.decoder.passes) <= 7
    assert sum(docs * n for docs, n in model.decoder.passes) == len(batch) * len(grid.points)


# --- the LSTM grid scorer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lstm_rows", "output_block", "output_scale"),
    [(1024, 256, 1.0), (3, 4, 1.0), (5, 7, 30.0)],  # defaults; tiny passes and blocks; large logits (redone rows)
)
def test_lstm_grid_scorer_matches_the_decoder_pass(monkeypatch, lstm_rows: int, output_block: int, output_scale):
    model = tiny_vae(2).eval()
    with torch.no_grad():
        model.decoder.output.weight.mul_(output_scale)
    monkeypatch.setattr(posterior_mean, "LSTM_ROWS", lstm_rows)
    monkeypatch.setattr(posterior_mean, "OUTPUT_BLOCK", output_block)
    exact_sums = []
    blocked = posterior_mean._blocked_log_sum_exp

    def spy(inputs: torch.Tensor, weight: torch.Tensor, nonpositive: bool) -> torch.Tensor:
        exact_sums.append(not nonpositive)
        return blocked(inputs, weight, nonpositive)

    monkeypatch.setattr(posterior_mean, "_blocked_log_sum_exp", spy)
    tokens = collate(list(enumerate(random_docs(6)))).tokens  # padded: documents of 1 to 8 words
    points = latent_grid(2, 5, 3.0).points
    with torch.inference_mode():
        expected = model.log_likelihood(tokens, points.expand(len(tokens), -1, -1))
        got = grid_log_likelihood(model, tokens, points)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
    assert any(exact_sums) == (output_scale > 1)  # large logits fall below the shifted bound and are redone
    assert (expected[:, 0] - expected[:, -1]).abs().max() > 0.5  # z matters


# --- end to end on a real model ------------------------------------------------------------------------


def test_posterior_means_of_a_real_model_keep_order_and_training_mode():
    model = tiny_vae(2).train()
    docs = random_docs(30)
    cfg = PosteriorMeanPlotConfig(grid_size=11, extent=3.0)
    approx, exact = posterior_means(model, TokenizedSplit(docs), 20, cfg, batch_size=7)
    assert model.training
    assert approx.shape == exact.shape == (20, 2)
    assert torch.isfinite(exact).all() and exact.abs().max() <= 3.0
    batch = collate(list(enumerate(docs[:20])))
    with torch.inference_mode():
        encoder_means = model.eval().encode(batch.tokens, batch.lengths).mean
    torch.testing.assert_close(approx, encoder_means, atol=1e-5, rtol=0)  # split order, not batch order
    assert posterior_means(model, TokenizedSplit(docs), 100, cfg, batch_size=7)[0].shape == (30, 2)


# --- the tracker and its files -------------------------------------------------------------------------


def test_tracker_snapshots_plots_and_round_trips(tmp_path):
    model = tiny_vae(2).train()
    cfg = PosteriorMeanPlotConfig(points=15, at_steps=[0, 5], grid_size=9, extent=3.0)
    tracker = PosteriorMeanTracker(model, TokenizedSplit(random_docs(25)), cfg, 8, tmp_path)
    assert tracker.wants(5) and not tracker.wants(4)
    tracker.snapshot("step 0")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))  # as if trained
    tracker.snapshot("end")
    tracker.save()
    assert model.training and tracker.seconds > 0
    png = tmp_path / "posterior_mean.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert imread(png).shape[0] > 100  # a real image, readable back
    loaded = load_snapshots_json(tmp_path / "posterior_mean.json")
    assert [label for label, _, _ in loaded] == ["step 0", "end"]
    for (_, approx, exact), (_, approx_read, exact_read) in zip(tracker.snapshots, loaded):
        assert approx.shape == (15, 2)
        np.testing.assert_array_equal(approx_read, approx)
        np.testing.assert_array_equal(exact_read, exact)
    assert not np.array_equal(loaded[0][1], loaded[1][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior_mean.json", "posterior_mean.png"]  # no temp files


def test_tracker_needs_a_small_latent(tmp_path):
    with pytest.raises(TextVAEError, match="needs a 1-d or 2-d latent, this model has 3"):
        PosteriorMeanTracker(tiny_vae(3), TokenizedSplit(random_docs(3)), PosteriorMeanPlotConfig(), 8, tmp_path)


def test_plot_of_a_one_dimensional_latent(tmp_path):
    rng = np.random.default_rng(0)
    snapshots = [(label, rng.normal(size=(40, 1)), rng.normal(size=(40, 1))) for label in ("step 0", "end")]
    plot_posterior_means(snapshots, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="no posterior-mean snapshots"):
        plot_posterior_means([], tmp_path / "empty.png")


def test_trainer_snapshots_at_the_asked_steps_and_the_end(tmp_path):
    recipe = Recipe.model_validate(
        {
            "data": {"train": "unused", "valid": "unused", "batch_size": 4},
            "model": {**TINY, "latent_dim": 2},
            "train": {
                "epochs": 2,
                "val_latent_metrics": False,
                "posterior_mean_plot": {"points": 6, "at_steps": [0, 3], "grid_size": 5},
            },
        }
    )
    model = build_model(recipe.model, VOCAB)
    tokenizer = WordTokenizer.from_vocab([f"w{i}" for i in range(VOCAB - 4)])
    docs = TokenizedSplit(random_docs(12))
    Trainer(recipe, model, tokenizer, docs, docs, tmp_path).fit()  # 3 steps per epoch
    labels = [label for label, _, _ in load_snapshots_json(tmp_path / "posterior_mean.json")]
    assert labels == ["step 0", "step 3", "end (step 6)"]
    assert (tmp_path / "posterior_mean.png").read_bytes().startswith(PNG_SIGNATURE)


def test_recipe_with_a_plot_and_a_large_latent_is_refused():
    with pytest.raises(ValueError, match="posterior_mean_plot needs a 1-d or 2-d latent"):
        Recipe.model_validate({"data": {"train": "a", "valid": "b"}, "train": {"posterior_mean_plot": {}}})
