"""The CUDA paths: every model type and update rule for a few steps, bf16 autocast, compile, cuDNN LSTMs with
SA-VAE's finite differences, IW-NLL and sampling on the GPU.

Not part of the default run (`-m "not cuda"` in pyproject): `python -m pytest -m cuda` on a GPU machine, as
`benchmarks/gpu_check.sh` does. `TEXTVAE_TEST_DEVICE=cpu python -m pytest -m cuda tests/test_cuda.py` runs the
same tests on the CPU (how they are checked on machines without a GPU); the cuDNN test needs CUDA itself.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import savae_hvp_mismatch
from test_cli import tiny_recipe
from test_huggingface import BERT, GPT2, gpt2_tokenizer
from test_image_training import OBJECTIVES_AND_RULES, image_recipe, write_images
from test_semi_amortized import context, tiny_model

from textvae import api
from textvae.config import SVIConfig, build_recipe
from textvae.training.updates import build_update

DEVICE = os.environ.get("TEXTVAE_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs CUDA"),
]

TINY_TRANSFORMER = {"d_model": 16, "n_heads": 2, "ff_dim": 32, "encoder_layers": 1, "decoder_layers": 1}
TEXT_MODELS = {
    "lstm_vae": {},
    "lstm_lm": {"type": "lstm_lm"},
    "transformer_vae": {"type": "transformer_vae", "transformer": TINY_TRANSFORMER},
    "transformer_lm": {"type": "transformer_lm", "transformer": TINY_TRANSFORMER},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, write_splits) -> Path:
    return write_splits(tmp_path_factory.mktemp("cuda-corpus"), 200, 40, 30)


def train_and_check(recipe: dict[str, Any], run: Path, iw: bool = True) -> dict:
    """Train a few steps on DEVICE, reload, evaluate (IW-NLL) and sample: finite numbers, IW-NLL ≤ ELBO-NLL."""
    recipe = {**recipe, "train": {**recipe.get("train", {}), "device": DEVICE, "max_steps": 4}}
    api.train(build_recipe(recipe, "cuda test"), run)
    loaded = api.load_run(run, DEVICE)
    assert next(loaded.model.parameters()).device.type == torch.device(DEVICE).type
    metrics = api.evaluate_run(loaded, "test", iw_samples=8 if iw else 1, limit=16)
    for key in ("elbo_nll", "iw_nll"):
        assert math.isfinite(metrics[key]), (key, metrics)
    if iw and loaded.model.has_latent:
        assert metrics["iw_nll"] <= metrics["elbo_nll"] + 1.0
    return metrics


@pytest.mark.parametrize("name", sorted(TEXT_MODELS))
def test_text_model_types_train_evaluate_and_sample(corpus: Path, tmp_path: Path, name: str):
    recipe = tiny_recipe(corpus, model=TEXT_MODELS[name])
    train_and_check(recipe, tmp_path / name)
    texts = api.load_run(tmp_path / name, DEVICE).sample(3, max_length=12)
    assert len(texts) == 3 and all(isinstance(text, str) for text in texts)


def test_hugging_face_vae(corpus: Path, tmp_path: Path):
    gpt2_tokenizer().save_pretrained(tmp_path / "tok")
    section = {"decoder_config": GPT2, "encoder_config": BERT}
    recipe = tiny_recipe(
        corpus,
        data={"tokenizer": {"type": "pretrained", "path": str(tmp_path / "tok")}},
        model={"type": "hf_vae", "huggingface": section},
        optim={"type": "adam", "lr": 1e-3},
    )
    train_and_check(recipe, tmp_path / "hf")
    assert len(api.load_run(tmp_path / "hf", DEVICE).sample(2, max_length=8)) == 2


@pytest.mark.parametrize("model_type", ["pixelcnn_vae", "pixelcnn_lm", "bernoulli_vae"])
def test_image_model_types(tmp_path: Path, model_type: str):
    (tmp_path / "images").mkdir()
    root = write_images(tmp_path / "images")
    train_and_check(image_recipe(root, model_type), tmp_path / model_type)
    assert api.load_run(tmp_path / model_type, DEVICE).sample_images(4).shape[0] == 4


@pytest.mark.parametrize("method", sorted(OBJECTIVES_AND_RULES))
def test_every_objective_and_update_rule(corpus: Path, tmp_path: Path, method: str):
    changes = OBJECTIVES_AND_RULES[method]
    recipe = tiny_recipe(corpus, **{section: values for section, values in changes.items()})
    if method == "savae":  # cuDNN LSTMs have no double backward
        recipe["update"]["svi"] = {**recipe["update"]["svi"], "hvp": "finite_difference"}
    deterministic = recipe.get("model", {}).get("posterior") == "deterministic"
    train_and_check(recipe, tmp_path / method, iw=not deterministic) if not deterministic else _train_only(
        recipe, tmp_path / method
    )


def _train_only(recipe: dict, run: Path) -> None:
    """Deterministic encoders have no posterior density (no IW-NLL): train and reconstruct."""
    recipe = {**recipe, "train": {**recipe.get("train", {}), "device": DEVICE, "max_steps": 4}}
    api.train(build_recipe(recipe, "cuda test"), run)
    loaded = api.load_run(run, DEVICE)
    assert len(loaded.reconstruct(["w1 w2 w3"], max_length=8)) == 1


def test_bf16_autocast_and_compile(corpus: Path, tmp_path: Path):
    base = tiny_recipe(corpus, train={"precision": "bf16", "compile": True}, eval={"precision": "bf16"})
    bf16 = train_and_check(base, tmp_path / "bf16")
    fp32 = api.evaluate_run(api.load_run(tmp_path / "bf16", DEVICE), "test", 8, 16, precision="fp32")
    per_token = abs(bf16["iw_nll"] - fp32["iw_nll"]) * bf16["n_sentences"] / bf16["n_tokens"]
    assert per_token < 0.02, (bf16["iw_nll"], fp32["iw_nll"])


def cuda_context(model, svi: SVIConfig):
    """test_semi_amortized's update context with its random batches moved to the GPU."""
    ctx = context(model, svi)
    batches = ctx.sample_batch
    ctx.sample_batch = lambda: batches().to("cuda")
    return ctx


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN needs CUDA")
def test_cudnn_lstm_savae_finite_differences_match_the_exact_update():
    """On the GPU: an SA-VAE update with finite-difference HVPs through cuDNN LSTMs equals, to float32 accuracy,
    the exact update (double backward, which cuDNN lacks: computed with cuDNN off) from the same weights, batch
    and noise."""
    error = savae_hvp_mismatch(
        lambda model, svi: build_update(cuda_context(model, svi)),
        lambda: tiny_model(dropout_in=0.0, dropout_out=0.0).cuda(),
        around=lambda mode: torch.backends.cudnn.flags(enabled=mode == "finite_difference"),
        steps=3,
        lr=0.5,
        clip=1.0,
        fd_scheme="central",
        fd_eps=1e-3,
    )
    assert error < 0.05, error
