"""Aggressive inference-network training (He et al. 2019, Algorithm 1)."""

from __future__ import annotations

import json

import pytest
import torch

from textvae.config import AggressiveUpdateConfig, ElboConfig, ModelConfig, OptimConfig, Recipe
from textvae.data.batching import RandomBatches, TokenizedSplit
from textvae.data.tokenizers import WordTokenizer
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.training.aggressive import AggressiveUpdate, ConvergenceCheck
from textvae.training.trainer import Trainer
from textvae.training.updates import UpdateContext, build_update

SMALL = dict(embed_dim=8, hidden_dim=16, latent_dim=3)
DOCS = [[4 + (i * 7 + j) % 20 for j in range(2 + i % 6)] for i in range(40)]


def _rule(max_inner: int = 100, check_every: int = 15, **update) -> AggressiveUpdate:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), 30)
    batches = RandomBatches(TokenizedSplit(DOCS), 8, seed=0)
    ctx = UpdateContext(
        model=model,
        objective=build_objective(ElboConfig(), 5, 1),
        optim=OptimConfig(lr=0.5),
        cfg=AggressiveUpdateConfig(type="aggressive", max_inner_steps=max_inner, check_every=check_every, **update),
        lr=0.5,
        sample_batch=batches,
    )
    rule = build_update(ctx)
    assert isinstance(rule, AggressiveUpdate)
    return rule


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before, params) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, params))


def test_convergence_check_stops_when_a_window_does_not_improve():
    check = ConvergenceCheck(every=3)
    losses = [9, 9, 9, 6, 6, 6, 7, 7, 7]  # per-token means of the windows: 9, 6, 7
    stops = [check.converged(step, loss * 10, 10) for step, loss in enumerate(losses, start=1)]
    assert stops == [False] * 8 + [True]


def watch_decoder_gradients(rule: AggressiveUpdate) -> list:
    """A list that gets one entry each time autograd computes a decoder parameter's gradient."""
    computed = []
    for param in rule.decoder_params:
        param.register_hook(lambda grad: computed.append(grad.shape))
    return computed


def test_encoder_clipped_inner_steps_compute_no_decoder_gradient():
    rule = _rule(max_inner=6, check_every=3, inner_clip="encoder")
    computed = watch_decoder_gradients(rule)
    encoder_before, decoder_before = _snapshot(rule.encoder_params), _snapshot(rule.decoder_params)
    inner = rule.encoder_steps(rule.sample_batch(), step=0)
    assert 3 <= inner <= 6 and inner % 3 == 0
    assert computed == []  # autograd never reached a decoder parameter
    assert all(p.grad is None for p in rule.decoder_params)
    assert _changed(encoder_before, rule.encoder_params)
    assert not _changed(decoder_before, rule.decoder_params)


def test_aggressive_step_updates_decoder_after_the_inner_loop():
    rule = _rule(max_inner=4, check_every=2)
    batch = rule.sample_batch()
    encoder_before, decoder_before = _snapshot(rule.encoder_params), _snapshot(rule.decoder_params)
    terms = rule(batch, step=0)
    assert terms["inner_steps"] in (2.0, 4.0) and torch.isfinite(torch.tensor(terms["loss"]))
    assert _changed(encoder_before, rule.encoder_params) and _changed(decoder_before, rule.decoder_params)


def test_switched_off_for_good_when_validation_mi_stops_increasing():
    rule = _rule(max_inner=2, check_every=1)
    assert rule.end_epoch({"val_mi": 0.2}) == {"aggressive": True}
    assert rule.end_epoch({"val_mi": 0.5}) == {"aggressive": True}
    assert rule.end_epoch({"val_mi": 0.4}) == {"aggressive": False, "aggressive_switched_off": True}
    assert rule.end_epoch({"val_mi": 0.9}) == {"aggressive": False}  # never switched back on
    encoder_before = _snapshot(rule.encoder_params)
    assert rule(rule.sample_batch(), step=0)["inner_steps"] == 0.0
    assert _changed(encoder_before, rule.encoder_params)  # the joint step trains the encoder too


def test_switch_off_patience_counts_epochs_below_the_best_mi_over_the_whole_run():
    """He et al.'s image.py: off after 5 epochs (not necessarily consecutive) whose MI is below the best."""
    rule = _rule(max_inner=2, check_every=1, switch_off_patience=3)
    flags = [rule.end_epoch({"val_mi": mi})["aggressive"] for mi in (0.5, 0.4, 0.6, 0.55, 0.7, 0.65)]
    assert flags == [True, True, True, True, True, False]  # below the best at 0.4, 0.55 and 0.65
    assert rule.end_epoch({"val_mi": 2.0}) == {"aggressive": False}


def test_negative_first_mi_switches_off_at_once():
    """He et al. start from pre_mi = 0."""
    assert _rule().end_epoch({"val_mi": -0.01})["aggressive"] is False
    assert _rule(switch_off="never").end_epoch({"val_mi": -0.01})["aggressive"] is True


def test_lr_decay_reaches_both_optimizers_with_the_encoder_ratio():
    rule = _rule(encoder_lr=1.0)  # optim lr 0.5: the encoder runs at twice the decoder's lr
    rule.set_lr(0.25)
    assert rule.decoder_optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    assert rule.encoder_optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


@pytest.mark.parametrize("similar", [True, False])
def test_random_batches_are_fresh_and_valid(similar):
    split = TokenizedSplit(DOCS)
    sample = RandomBatches(split, 8, seed=1, similar_lengths=similar)
    seen = set()
    for _ in range(30):
        batch = sample()
        assert len(batch) == 8 and len(set(batch.index.tolist())) == 8
        seen.update(batch.index.tolist())
        if similar:  # a run of the length-sorted split: lengths within a narrow band
            assert int(batch.lengths.max() - batch.lengths.min()) <= 2
    assert len(seen) > 30  # different documents over the calls


def test_model_without_encoder_is_refused():
    ctx = UpdateContext(
        model=build_model(ModelConfig(type="lstm_lm", **SMALL), 30),
        objective=build_objective(ElboConfig(), 5, 1),
        optim=OptimConfig(),
        cfg=AggressiveUpdateConfig(type="aggressive"),
        lr=1.0,
        sample_batch=lambda: None,
    )
    with pytest.raises(ValueError, match="encoder"):
        build_update(ctx)


def test_trainer_logs_inner_steps_and_the_switch_off(tmp_path):
    recipe = Recipe.model_validate(
        {
            "data": {"train": "unused", "valid": "unused", "batch_size": 8},
            "model": SMALL,
            "update": {"type": "aggressive", "max_inner_steps": 6, "check_every": 3},
            "optim": {"lr": 0.5},
            "train": {"epochs": 3, "log_every": 2, "val_latent_metrics": False},
            "eval": {"mi_batch_size": 8},
        }
    )
    model = build_model(recipe.model, 30)
    tokenizer = WordTokenizer.from_vocab([f"w{i}" for i in range(26)])
    Trainer(recipe, model, tokenizer, TokenizedSplit(DOCS), TokenizedSplit(DOCS[:16]), tmp_path).fit()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 3 and all("val_mi" in e for e in epochs)  # MI computed although not asked for
    assert steps[0]["inner_steps"] in (3.0, 6.0)
    assert all(("aggressive" in e) for e in epochs) and all(0 <= e["train_inner_steps"] <= 6 for e in epochs)
    flags = [e["aggressive"] for e in epochs]
    assert flags == sorted(flags, reverse=True)  # once off, it stays off
    assert sum("aggressive_switched_off" in e for e in epochs) == (0 if all(flags) else 1)


def test_model_wide_inner_clip_uses_decoder_gradients_for_the_norm_only():
    """He et al.'s text.py clips inner steps by the norm of all gradients; the decoder still does not move."""
    rule = _rule(max_inner=3, check_every=3, inner_clip="model")
    computed = watch_decoder_gradients(rule)
    encoder_before, decoder_before = _snapshot(rule.encoder_params), _snapshot(rule.decoder_params)
    assert rule.encoder_steps(rule.sample_batch(), step=0) == 3
    assert computed  # decoder gradients were computed, for the clipping norm
    assert all(p.grad is None for p in rule.decoder_params)
    assert _changed(encoder_before, rule.encoder_params)
    assert not _changed(decoder_before, rule.decoder_params)
