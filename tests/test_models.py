"""The LSTM VAE / LM, their Hugging Face save/load, and the trainer's He et al. lr-decay rule."""

from __future__ import annotations

import json

import pytest
import torch

from textvae.config import ModelConfig, Recipe
from textvae.data.batching import TokenizedSplit, collate
from textvae.data.tokenizers import WordTokenizer, load_tokenizer
from textvae.models.model import build_model, load_model
from textvae.training.checkpoint import CheckpointStore
from textvae.training.trainer import Trainer

SMALL = dict(embed_dim=8, hidden_dim=16, latent_dim=4)
DOCS = [[4, 5, 6], [7, 8], [9, 4, 4, 5, 6], [5]]


def test_he_et_al_uniform_init():
    model = build_model(ModelConfig(**SMALL), 30)
    for name, param in model.named_parameters():
        bound = 0.1 if "embed" in name else 0.01
        assert param.abs().max() <= bound + 1e-7, name
        assert param.abs().max() > bound / 2, name


def test_decoder_state_and_inputs_depend_on_z():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, dropout_in=0, dropout_out=0, init_scale=0.5), 30).eval()
    z = torch.randn(1, 4)
    h0, c0 = model.decoder.initial_state(z, 1)
    assert torch.allclose(c0[0], model.decoder.init_state(z)) and torch.allclose(h0, torch.tanh(c0))
    tokens = collate([(0, DOCS[0])]).tokens
    lls = model.log_likelihood(tokens, torch.stack([z, -z], dim=1))
    assert (lls[0, 0] - lls[0, 1]).abs() > 1e-3


def test_language_model_has_no_latent():
    lm = build_model(ModelConfig(type="lstm_lm", **SMALL), 30)
    assert lm.encoder is None and not lm.has_latent and lm.latent_dim == 0
    batch = collate(list(enumerate(DOCS)))
    out = lm(batch.tokens, batch.lengths)
    assert out.kl is None and out.log_likelihood.shape == (4, 1)
    assert lm.decoder.lstm.input_size == SMALL["embed_dim"]  # the VAE decoder minus the latent input


def test_save_and_load_round_trip_with_tokenizer(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), 30).eval()
    tokenizer = WordTokenizer.from_vocab([f"w{i}" for i in range(26)])
    CheckpointStore(tmp_path).publish_best(model, tokenizer)
    saved = tmp_path / "model"
    assert (saved / "model.safetensors").is_file() and (saved / "config.json").is_file()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary leftovers
    loaded = load_model(saved)
    batch = collate(list(enumerate(DOCS)))
    z = torch.randn(4, 2, 4)
    assert torch.equal(model.log_likelihood(batch.tokens, z), loaded.log_likelihood(batch.tokens, z))
    assert torch.equal(model.encode(batch.tokens, batch.lengths).mean, loaded.encode(batch.tokens, batch.lengths).mean)
    assert load_tokenizer(saved).encode_batch(["w3 w9"]) == tokenizer.encode_batch(["w3 w9"])
    # publishing again replaces the weights
    with torch.no_grad():
        loaded.decoder.output.bias.add_(1.0)
    CheckpointStore(tmp_path).publish_best(loaded, tokenizer)
    assert torch.equal(load_model(saved).decoder.output.bias, loaded.decoder.output.bias)


def _trainer(tmp_path, **train) -> Trainer:
    recipe = Recipe.model_validate(
        {
            "data": {"train": "unused", "valid": "unused", "batch_size": 2},
            "model": SMALL,
            "train": {
                "epochs": 50,
                "lr_decay": {"patience": 2, "start_epoch": 3, "max_decays": 2, "factor": 0.5},
                **train,
            },
        }
    )
    model = build_model(recipe.model, 30)
    tokenizer = WordTokenizer.from_vocab([f"w{i}" for i in range(26)])
    return Trainer(recipe, model, tokenizer, TokenizedSplit(DOCS), TokenizedSplit(DOCS), tmp_path)


def test_lr_decay_restores_best_and_stops_after_max_decays(tmp_path):
    trainer = _trainer(tmp_path)
    vals = iter([10.0, 9.0, 9.5, 9.6, 9.7, 9.8, 9.9])
    weights_at_best = None
    for epoch in range(7):
        trainer.state.epoch = epoch + 1
        if epoch == 1:
            weights_at_best = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer._after_epoch({"val_elbo_nll": next(vals), "val_ppl": 1.0, "val_kl": 0.0})
        with torch.no_grad():  # drift the weights so a restore is visible
            for p in trainer.model.parameters():
                p.add_(1.0)
        if trainer.state.stopped_early:
            break
    st = trainer.state
    assert st.best_val == 9.0 and st.best_epoch == 2
    assert st.decays == 2 and st.stopped_early  # epochs 4 (2 without improvement) and 6
    assert st.lr == pytest.approx(0.25)
    assert trainer.update.optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    trainer._finish()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights_at_best[key]), key
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["lr_decays"] for x in lines] == [0, 0, 0, 1, 1, 2]


def test_no_decay_before_start_epoch(tmp_path):
    trainer = _trainer(tmp_path)
    for epoch, val in enumerate([5.0, 6.0, 7.0], start=1):
        trainer.state.epoch = epoch
        trainer._after_epoch({"val_elbo_nll": val, "val_ppl": 1.0, "val_kl": 0.0})
    assert trainer.state.decays == 0 and trainer.state.not_improved == 2


def test_fit_lowers_validation_loss(tmp_path):
    trainer = _trainer(tmp_path, epochs=5, val_latent_metrics=True)
    trainer.recipe.optim.lr = 0.5
    trainer.update.set_lr(0.5)
    trainer.fit()
    epochs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert len(epochs) == 5 and epochs[-1]["best_val_elbo_nll"] < epochs[0]["val_elbo_nll"]
    assert {"val_mi", "val_au", "val_kl", "val_ppl", "train_tokens_per_s"} <= set(epochs[0])
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000008", "step-00000010"]
    assert (tmp_path / "checkpoints" / "step-00000010" / "training_state.safetensors").is_file()


def test_lstm_encoder_pools_the_last_state_by_default_or_the_mean():
    batch = collate([(0, [5, 6, 7, 8]), (1, [9, 5])])
    torch.manual_seed(0)
    last = build_model(ModelConfig(embed_dim=8, hidden_dim=8, latent_dim=2, init_scale=0.5), 12).eval()
    mean = build_model(ModelConfig(embed_dim=8, hidden_dim=8, latent_dim=2, init_scale=0.5, pooling="mean"), 12)
    mean.load_state_dict(last.state_dict())
    mean.eval()
    with torch.no_grad():
        states, _ = last.encoder.lstm(last.encoder.embed(batch.tokens))
        head = last.encoder.to_posterior
        at_end = head(torch.stack([states[0, 5], states[1, 3]])).mean  # </s> at length + 1
        averaged = head(torch.stack([states[0, :6].mean(0), states[1, :4].mean(0)])).mean
        assert torch.allclose(last.encode(batch.tokens, batch.lengths).mean, at_end, atol=1e-6)
        assert torch.allclose(mean.encode(batch.tokens, batch.lengths).mean, averaged, atol=1e-6)
    with pytest.raises(ValueError, match="state after <s>"):
        ModelConfig(pooling="first")


def test_lstm_runs_saved_before_lstm_pooling_keep_the_last_state(tmp_path):
    model = build_model(ModelConfig(embed_dim=8, hidden_dim=8, latent_dim=2, pooling="mean"), 12)
    model.save_pretrained(tmp_path)
    assert load_model(tmp_path).encoder.pooling == "mean"
    config = json.loads((tmp_path / "config.json").read_text())
    del config["format_version"]  # as written by textvae before format 2, when LSTMs ignored `pooling`
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_model(tmp_path).encoder.pooling == "last"


def test_bn_vae_means_spread_with_variance_gamma_squared_and_bound_the_kl(tmp_path):
    from textvae.models.posteriors import MeanBatchNorm

    norm = MeanBatchNorm(3, gamma=0.6)
    with torch.no_grad():
        norm.shift.copy_(torch.tensor([0.0, 1.0, -1.0]))
    raw = torch.randn(64, 3) * 1e-2 + 5.0  # small spread around a large offset, as at He et al.'s init
    out = norm(raw)
    assert torch.allclose(out.mean(0), norm.shift.detach(), atol=2e-3)  # float32 at an offset of 5
    assert torch.allclose(out.var(0, unbiased=False), torch.full((3,), 0.36), rtol=1e-2)
    assert norm(raw[:1]).shape == (1, 3)  # a batch of one uses the running statistics
    norm.eval()
    assert torch.allclose(norm(raw), norm(raw))  # evaluation: running statistics, deterministic

    config = ModelConfig(embed_dim=8, hidden_dim=8, latent_dim=4, init_scale=0.3, mean_batchnorm=0.6)
    model = build_model(config, 20).train()
    batch = collate([(i, [5 + i % 7, 6, 7 + i % 5]) for i in range(32)])
    posterior = model.encode(batch.tokens, batch.lengths)
    second_moment = (posterior.mean**2).mean(0)  # E_x[mu_d^2] = gamma^2 + shift^2 (shift 0 at init)
    assert torch.allclose(second_moment, torch.full((4,), 0.36), rtol=0.03)
    assert posterior.kl().sum(-1).mean().item() >= 0.5 * second_moment.sum().item() - 1e-6
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert torch.equal(
        loaded.encoder.to_posterior.mean_norm.norm.running_var, model.encoder.to_posterior.mean_norm.norm.running_var
    )
    with torch.no_grad():
        assert torch.allclose(
            loaded.encode(batch.tokens, batch.lengths).mean, model.encode(batch.tokens, batch.lengths).mean
        )
    with pytest.raises(ValueError, match="Gaussian posterior"):
        ModelConfig(posterior="deterministic", mean_batchnorm=0.5)
