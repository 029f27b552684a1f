"""Image models through the same recipes, objectives, update rules, metrics, generation, CLI and reports."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import textvae
from PIL import Image
from test_cli import assert_one_line_error
from test_evaluation import exact_log_marginal

from textvae import api
from textvae.config import EvalConfig, ModelConfig, build_recipe
from textvae.data.batching import make_loader
from textvae.data.images import ImageSplit, save_image_split
from textvae.evaluation import evaluate
from textvae.evaluation.likelihood import elbo_nll, iw_log_marginal
from textvae.generation.images import image_grid, interpolate_images, reconstruct_images, sample_images
from textvae.models.images import PIXEL_VALUES
from textvae.models.model import build_model
from textvae.reports.generation import GenerationOptions
from textvae.reports.html import write_html_report

SIZE = 8  # tiny 8x8 images


def prototypes() -> np.ndarray:
    """Four 8x8 grey patterns (bars, diagonal, frame) with ink probability 0.9 and background 0.1."""
    shapes = np.zeros((4, SIZE, SIZE), dtype=bool)
    shapes[0, 3:5, :] = True
    shapes[1, :, 3:5] = True
    shapes[2][np.eye(SIZE, dtype=bool)] = True
    shapes[3, [0, -1], :] = shapes[3, :, [0, -1]] = True
    return np.where(shapes, 230, 25).astype(np.uint8)


def write_images(root: Path, counts=(("train", 160), ("valid", 40), ("test", 40))) -> Path:
    rng = np.random.default_rng(0)
    for split, n in counts:
        labels = rng.integers(0, 4, n)
        save_image_split(root / f"{split}.npz", prototypes()[labels], labels)
    return root


def image_recipe(root: Path, model_type: str = "pixelcnn_vae", **sections: dict[str, Any]) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "name": "tiny-images",
        "data": {
            "format": "images",
            "train": str(root / "train.npz"),
            "valid": str(root / "valid.npz"),
            "test": str(root / "test.npz"),
            "batch_size": 20,
            "eval_batch_size": 20,
        },
        "model": {
            "type": model_type,
            "latent_dim": 2,
            "image": {
                "image_shape": [1, SIZE, SIZE],
                "encoder_channels": [8, 8],
                "pixelcnn_channels": 8,
                "pixelcnn_kernels": [3, 3],
                "bernoulli_hidden": [32],
            },
        },
        "optim": {"type": "adam", "lr": 0.003},
        "train": {"epochs": 1, "val_latent_metrics": True},
        "eval": {"iw_samples": 8, "mi_batch_size": 20},
    }
    for section, values in sections.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    return recipe


@pytest.fixture(scope="module")
def images_root(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def trained(images_root: Path, torch_single_thread) -> Path:
    """A PixelCNN VAE trained for 3 epochs on the tiny patterns."""
    recipe = image_recipe(images_root, train={"epochs": 3})
    api.train(build_recipe(recipe, "tiny"), images_root / "vae")
    return images_root / "vae"


@pytest.mark.parametrize("model_type", ["pixelcnn_vae", "pixelcnn_lm", "bernoulli_vae"])
def test_each_image_model_trains_evaluates_and_reloads(images_root: Path, tmp_path: Path, model_type: str):
    run = api.train(build_recipe(image_recipe(images_root, model_type), "r"), tmp_path / "run")
    assert run.tokenizer is None and not list((tmp_path / "run" / "model").glob("tokenizer*"))
    loaded = api.load_run(tmp_path / "run")
    assert loaded.is_image_model and loaded.model.config.vocab_size == PIXEL_VALUES
    metrics = api.evaluate_run(loaded)
    assert metrics["n_images"] == 40 and metrics["n_pixels"] == 40 * SIZE * SIZE
    assert not [key for key in metrics if "ppl" in key]  # nats per image; no per-pixel "perplexity"
    assert "ppl" not in (tmp_path / "run" / "metrics.jsonl").read_text()  # nor in the training log
    assert 0 < metrics["iw_nll"] < SIZE * SIZE * math.log(2) * 1.5  # near or below a coin per pixel after 1 epoch
    if model_type == "pixelcnn_lm":
        assert metrics["iw_nll"] == pytest.approx(metrics["elbo_nll"])  # exact likelihood, no latent
    else:
        assert metrics["iw_nll"] <= metrics["elbo_nll"] + 0.5 and metrics["kl"] >= 0


OBJECTIVES_AND_RULES = {
    "anneal": {"objective": {"type": "elbo", "kl_schedule": {"type": "linear", "start": 0.1, "warmup_epochs": 1}}},
    "beta": {"objective": {"type": "elbo", "beta": 0.4}},
    "free-bits": {"objective": {"type": "elbo", "free_bits": 0.25}},
    "cyclical": {"objective": {"type": "elbo", "kl_schedule": {"type": "cyclical", "cycles": 2}}},
    "aggressive": {
        "update": {"type": "aggressive", "max_inner_steps": 4, "check_every": 2, "inner_batches": "uniform"}
    },
    "savae": {"update": {"type": "savae", "svi": {"steps": 2, "lr": 0.02, "clip": 35.4}}},
    "wae-mmd": {"model": {"posterior": "deterministic"}, "objective": {"type": "wae_mmd", "lambda": 10.0}},
    "wae-mmd-stochastic": {"objective": {"type": "wae_mmd", "kl_weight": 1.0}},
    "infovae": {"objective": {"type": "infovae", "alpha": 0.0, "lambda": 10.0}},
    "wae-gan": {"model": {"posterior": "deterministic"}, "objective": {"type": "wae_gan"}},
    "mog-prior": {"model": {"prior": {"type": "mog", "components": 3}}},
    "bn-vae": {"model": {"mean_batchnorm": 0.6}},
}


@pytest.mark.parametrize("method", sorted(OBJECTIVES_AND_RULES))
def test_every_objective_and_update_rule_runs_on_images_through_the_same_keys(
    images_root: Path, tmp_path: Path, method: str
):
    changes = OBJECTIVES_AND_RULES[method]
    recipe = image_recipe(images_root, **{**changes, "train": {"epochs": 1, "max_steps": 3}})
    run = api.train(build_recipe(recipe, method), tmp_path / "run")
    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any('"kind": "epoch"' in line for line in log)
    metrics = api.evaluate_run(api.load_run(tmp_path / "run"), iw_samples=4)
    assert math.isfinite(metrics["rec"]) and metrics["au"] >= 0
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_image_recipe_errors_name_the_key(images_root: Path):
    bad = image_recipe(images_root, data={"max_length": 5})
    with pytest.raises(Exception, match="data.max_length"):
        build_recipe(bad, "bad.yaml")
    with pytest.raises(Exception, match="needs model.type pixelcnn_vae"):
        build_recipe(image_recipe(images_root, "lstm_vae"), "bad.yaml")
    with pytest.raises(Exception, match="kernel sizes must be odd"):
        build_recipe(image_recipe(images_root, model={"image": {"pixelcnn_kernels": [4]}}), "bad.yaml")


def tiny_image_vae(latent_dim: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        type="pixelcnn_vae",
        latent_dim=latent_dim,
        image={"image_shape": [1, 3, 3], "encoder_channels": [4], "pixelcnn_channels": 4, "pixelcnn_kernels": [3]},
    )
    model = build_model(cfg, PIXEL_VALUES).eval()
    with torch.no_grad():  # make z matter, so that the posterior is far from the prior
        for name, param in model.decoder.named_parameters():
            if "z" in name:
                param.mul_(8.0)
    return model


def binary_images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(seed))


def test_iw_nll_of_an_image_vae_converges_to_the_exact_log_likelihood():
    """A 1-d latent: log p(x) by quadrature over z; the IW bound with 20,000 samples is within 0.02 nats."""
    model, images = tiny_image_vae(), binary_images(6)
    exact = exact_log_marginal(model, images)
    torch.manual_seed(0)
    with torch.no_grad():
        iw = iw_log_marginal(model, images, None, k=20_000, chunk=5_000).double()
        elbo = iw_log_marginal(model, images.repeat(500, 1, 1, 1), None, k=1, chunk=1).double().view(500, 6)
    assert (exact - torch.logsumexp(model.log_likelihood(images, torch.zeros(6, 1, 1)), 1)).abs().max() > 0.05
    assert torch.allclose(iw, exact, atol=0.02), (iw - exact).abs().max()
    assert (elbo.mean(0) < exact - 0.01).all()  # one sample: an estimate of the ELBO, looser


def test_image_likelihoods_sum_to_one_over_every_binary_image():
    """Through the evaluation API: exp(-NLL) of all 2^9 binary 3x3 images sums to 1 (PixelCNN alone),
    and for the VAE the importance-weighted p(x) (k = 2,000) sums to 1 up to its Monte Carlo error."""
    grid = torch.tensor([[(i >> b) & 1 for b in range(9)] for i in range(512)], dtype=torch.float32)
    images = grid.view(512, 1, 3, 3)
    lm = build_model(ModelConfig(type="pixelcnn_lm", image={"image_shape": [1, 3, 3], "pixelcnn_kernels": [3]}), 2)
    with torch.no_grad():
        total = torch.logsumexp(iw_log_marginal(lm.eval(), images, None, k=1, chunk=1).double(), 0)
        vae_total = torch.logsumexp(iw_log_marginal(tiny_image_vae(), images, None, k=2_000, chunk=2_000).double(), 0)
    assert total.item() == pytest.approx(0.0, abs=1e-5)
    assert vae_total.item() == pytest.approx(0.0, abs=0.01)


def test_elbo_and_eval_loaders_read_image_batches():
    split = ImageSplit(prototypes()[[0, 1, 2, 3, 0, 1]], binarization="fixed", seed=3)
    eight = build_model(
        ModelConfig(
            type="bernoulli_vae", latent_dim=2, image={"image_shape": [1, SIZE, SIZE], "encoder_channels": [4]}
        ),
        PIXEL_VALUES,
    ).eval()
    metrics = evaluate(eight, split, 4, EvalConfig(iw_samples=3, mi_batch_size=6))
    assert metrics["n_images"] == 6 and "ppl" not in metrics
    again = elbo_nll(eight, make_loader(split, 4, shuffle=False))
    assert again["rec"] == pytest.approx(metrics["rec"])  # the fixed binarisation is the same every pass


def test_generation_grids_are_reproducible_and_keep_the_originals(trained: Path):
    run = api.load_run(trained)
    split = run.split("test")
    first, again = sample_images(run.model, 6, seed=4), sample_images(run.model, 6, seed=4)
    assert first.shape == (6, 1, SIZE, SIZE) and torch.equal(first, again)
    assert set(first.unique().tolist()) <= {0.0, 1.0}  # PixelCNN samples are binary images
    pairs = reconstruct_images(run.model, split, [0, 1, 2], seed=0)
    assert pairs.shape == (6, 1, SIZE, SIZE) and torch.equal(pairs[0::2], split.images([0, 1, 2]))
    rows = interpolate_images(run.model, split, [(0, 1), (2, 3)], steps=4)
    assert rows.shape == (12, 1, SIZE, SIZE)
    assert torch.equal(rows[0], split.images([0])[0]) and torch.equal(rows[5], split.images([1])[0])
    picture = image_grid(rows, columns=6, scale=2, pad=2)
    assert picture.size == (2 * (6 * (SIZE + 2) + 2), 2 * (2 * (SIZE + 2) + 2)) and picture.mode == "L"
    assert torch.equal(run.interpolate_images(0, 1, steps=4), rows[:6])
    with pytest.raises(Exception, match="image index 40"):
        run.reconstruct_images([40])


def test_report_shows_image_grids(trained: Path, tmp_path: Path):
    metrics = api.evaluate_run(api.load_run(trained), iw_samples=4)
    (trained / "eval.json").write_text(json.dumps(metrics))  # what `textvae eval` writes, for the tables
    html, markdown = write_html_report([trained], tmp_path / "report.html", generation=GenerationOptions())
    page = html.read_text()
    assert "Generated images" in page and page.count("<h4>") == 3
    assert ">NLL<" in page and ">PPL<" not in page and "recon BLEU</th>" not in page  # nats per image
    for title in ("samples", "reconstructions", "interpolations"):
        png = (tmp_path / f"report_vae_{title}.png").read_bytes()
        assert Image.open(io.BytesIO(png)).mode == "L"
        assert f"report_vae_{title}.png" in markdown.read_text()


def test_cli_writes_grids_and_refuses_bad_image_input(trained: Path, tmp_path: Path):
    proc = textvae("sample", trained, "-n", "5", "--grid", tmp_path / "s.png", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "s.png").size == (2 * (5 * (SIZE + 2) + 2), 2 * (SIZE + 2 + 2))
    assert_one_line_error(textvae("interpolate", trained, "0", "99", "--grid", tmp_path / "i.png"), "image index 99")
    assert not (tmp_path / "i.png").exists()


def test_published_omniglot_rows_are_not_called_comparable_on_other_data(tmp_path: Path):
    from textvae.reports.reference import Comparability
    from textvae.reports.runs import read_run

    (tmp_path / "recipe.yaml").write_text("name: omniglot-vanilla\n")
    assert read_run("a", tmp_path).references[0].comparability is Comparability.SAME_SETTING
    (tmp_path / "data_stats.json").write_text('{"warnings": ["this is NOT the benchmark"]}')
    match = read_run("a", tmp_path).references[0]
    assert match.comparability is Comparability.OTHER_DATA and match.rows[0].nll == 89.41
    (tmp_path / "recipe.yaml").write_text("name: omniglot-cpu-aggressive\n")
    assert read_run("a", tmp_path).references[0].comparability is Comparability.SCALED
