"""Non-finite guards: a non-finite loss or gradient skips the optimiser step (every update rule, and WAE-GAN's
discriminator) and is counted; `limit` skips in a row stop training with a one-line error."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable

import pytest
import torch

from textvae.config import (
    AggressiveUpdateConfig,
    ElboConfig,
    JointUpdateConfig,
    ModelConfig,
    OptimConfig,
    SemiAmortizedUpdateConfig,
    SVIConfig,
    WAEGANConfig,
)
from textvae.data.batching import RandomBatches, TokenizedSplit
from textvae.errors import TextVAEError
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.objectives.wae_gan import WAEGAN
from textvae.training import guards
from textvae.training.guards import NonFiniteError, NonFiniteGuard
from textvae.training.updates import UpdateContext, UpdateRule, build_update

pytestmark = pytest.mark.usefixtures("torch_single_thread")

VOCAB = 30
DOCS = [[4 + (i * 7 + j) % 20 for j in range(2 + i % 6)] for i in range(40)]
SMALL = dict(embed_dim=8, hidden_dim=16, latent_dim=3, dropout_in=0.0, dropout_out=0.0)
LIMIT = 4
NAN = float("nan")


class Fault:
    """A switchable fault: a NaN added to a loss (its gradients stay finite) or an infinite gradient."""

    def __init__(self) -> None:
        self.on = False

    def loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss + NAN if self.on else loss

    def grad(self, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf") if self.on else grad


class PoisonedLoss:
    """An objective whose losses (also those from a posterior, which SA-VAE asks for) go through `fault.loss`."""

    def __init__(self, objective, fault: Fault) -> None:
        self.objective = objective
        self.fault = fault

    def __getattr__(self, name: str):
        return getattr(self.objective, name)

    def __call__(self, model, batch, step):
        return self._poison(self.objective(model, batch, step))

    def loss_from_posterior(self, model, batch, posterior, step):
        return self._poison(self.objective.loss_from_posterior(model, batch, posterior, step))

    def _poison(self, out):
        return dataclasses.replace(out, loss=self.fault.loss(out.loss))


def context(update_cfg, objective=None, clip: float | None = None) -> UpdateContext:
    torch.manual_seed(0)
    return UpdateContext(
        model=build_model(ModelConfig(**SMALL), VOCAB),
        objective=objective or build_objective(ElboConfig(), 5, 1),
        optim=OptimConfig(type="adam", lr=0.01, clip=clip),
        cfg=update_cfg,
        lr=0.01,
        sample_batch=RandomBatches(TokenizedSplit(DOCS), 8, seed=0),
        max_nonfinite=LIMIT,
    )


def snapshot(params, optimizers) -> list[torch.Tensor]:
    """Copies of the parameters and of every tensor in the optimisers' states (Adam's step count included)."""
    states = [v for opt in optimizers for s in opt.state_dict()["state"].values() for v in s.values()]
    return [t.detach().clone() for t in [*params, *states]]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


AGGRESSIVE = AggressiveUpdateConfig(type="aggressive", max_inner_steps=2, check_every=2)
Update = Callable[[int], object]


def joint(rule: UpdateRule, batch) -> tuple[Update, list, int]:
    """One update of a rule with one optimiser: the call, its optimisers, the steps it takes."""
    return (lambda step: rule(batch, step)), [rule.optimizer], 1


def aggressive_inner(rule, batch) -> tuple[Update, list, int]:
    return (lambda step: rule.encoder_steps(batch, step)), [rule.encoder_optimizer], AGGRESSIVE.max_inner_steps


def aggressive_outer(rule, batch) -> tuple[Update, list, int]:
    rule.aggressive = False  # the outer step alone, stepping both optimisers
    return (lambda step: rule(batch, step)), [rule.encoder_optimizer, rule.decoder_optimizer], 1


def aggressive_both(rule, batch) -> tuple[Update, list, int]:
    optimizers = [rule.encoder_optimizer, rule.decoder_optimizer]
    return (lambda step: rule(batch, step)), optimizers, AGGRESSIVE.max_inner_steps + 1


CASES = {
    "joint": (JointUpdateConfig(), None, joint),
    "joint_clipped": (JointUpdateConfig(), 1.0, joint),
    "aggressive_inner": (AGGRESSIVE, None, aggressive_inner),
    "aggressive_outer": (AGGRESSIVE, 5.0, aggressive_outer),
    "aggressive_inner_and_outer": (AGGRESSIVE, None, aggressive_both),
    "savae": (SemiAmortizedUpdateConfig(type="savae", svi=SVIConfig(steps=2, lr=0.5)), None, joint),
}


@pytest.mark.parametrize("where", ["loss", "grad"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_non_finite_update_is_skipped_counted_and_stops_the_run_when_repeated(case, where):
    """`grad`: an encoder gradient is infinite (for SA-VAE it arrives through the SVI pullback); `loss`: the loss
    is NaN but every gradient is finite."""
    update_cfg, clip, setup = CASES[case]
    fault = Fault()
    ctx = context(update_cfg, PoisonedLoss(build_objective(ElboConfig(), 5, 1), fault), clip)
    rule = build_update(ctx)
    if where == "grad":
        fault.loss = lambda loss: loss
        next(ctx.model.encoder.parameters()).register_hook(fault.grad)
    update, optimizers, steps = setup(rule, ctx.sample_batch())
    params = list(ctx.model.parameters())
    update(0)  # finite: the optimisers have a state
    before = snapshot(params, optimizers)

    fault.on = True
    update(1)
    assert same(before, snapshot(params, optimizers))  # bitwise: parameters and optimiser states
    assert all(p.grad is None for p in params)
    assert rule.guard.skipped == steps and rule.guard.in_a_row["model"] == steps

    fault.on = False
    update(2)
    assert not same(before, snapshot(params, optimizers))
    assert rule.guard.skipped == steps and rule.guard.in_a_row["model"] == 0

    fault.on = True
    with pytest.raises(NonFiniteError) as err:
        for step in range(3, 3 + LIMIT):
            update(step)
    message = str(err.value)
    assert isinstance(err.value, TextVAEError) and "\n" not in message
    assert f"{LIMIT} model updates in a row" in message and "train.max_nonfinite" in message
    assert rule.guard.skipped == steps + LIMIT


def wae_gan() -> WAEGAN:
    return build_objective(WAEGANConfig(type="wae_gan", discriminator={"hidden_dim": 8, "layers": 1}), 5, 1)


def test_a_non_finite_discriminator_loss_skips_its_step():
    objective = wae_gan()
    objective.guard = NonFiniteGuard(LIMIT)
    gen = torch.Generator().manual_seed(0)
    posterior, prior = torch.randn(16, 2, generator=gen) + 1.0, torch.randn(16, 2, generator=gen)
    poisoned = posterior.clone()
    poisoned[3, 0] = NAN
    objective.discriminator_step(posterior, prior)
    params = list(objective.discriminator.parameters())
    before = snapshot(params, [objective.optimizer])

    assert math.isnan(objective.discriminator_step(poisoned, prior))
    assert same(before, snapshot(params, [objective.optimizer]))
    assert all(p.grad is None for p in params)
    assert objective.guard.skipped == 1 and objective.guard.in_a_row == {"discriminator": 1}
    objective.discriminator_step(posterior, prior)
    assert not same(before, snapshot(params, [objective.optimizer]))
    assert objective.guard.in_a_row == {"discriminator": 0}

    with pytest.raises(NonFiniteError, match=f"{LIMIT} discriminator updates in a row") as err:
        for _ in range(LIMIT):
            objective.discriminator_step(poisoned, prior)
    assert "\n" not in str(err.value) and "objective.discriminator.lr" in str(err.value)


def test_a_non_finite_discriminator_gradient_skips_only_the_discriminator_step():
    ctx = context(JointUpdateConfig(), wae_gan())
    rule, batch = build_update(ctx), ctx.sample_batch()
    assert ctx.objective.guard is rule.guard  # one guard counts every skipped step
    rule(batch, 0)  # builds the discriminator
    fault = Fault()
    next(ctx.objective.discriminator.parameters()).register_hook(fault.grad)
    model_params, disc_params = list(ctx.model.parameters()), list(ctx.objective.discriminator.parameters())
    model_before = snapshot(model_params, [rule.optimizer])
    disc_before = snapshot(disc_params, [ctx.objective.optimizer])

    fault.on = True
    rule(batch, 1)
    assert same(disc_before, snapshot(disc_params, [ctx.objective.optimizer]))
    assert not same(model_before, snapshot(model_params, [rule.optimizer]))
    assert rule.guard.skipped == 1 and rule.guard.in_a_row == {"model": 0, "discriminator": 1}


def finite_norm() -> torch.Tensor:
    return torch.tensor(1.0)


def test_each_part_counts_its_own_run_and_the_counters_survive_a_checkpoint():
    guard = NonFiniteGuard(2)
    assert not guard.finite(finite_norm(), torch.tensor(NAN), [], step=4)
    assert guard.finite(finite_norm(), torch.tensor(0.5), [], part="discriminator")  # does not end the model's run
    state = json.loads(json.dumps(guard.state_dict()))
    assert state == {"skipped": 1, "in_a_row": {"model": 1, "discriminator": 0}}
    resumed = NonFiniteGuard(2)
    resumed.load_state_dict(state)
    with pytest.raises(NonFiniteError, match=r"2 model updates in a row .*\(last at update step 5\)"):
        resumed.finite(torch.tensor(float("inf")), None, [], step=5)
    assert resumed.skipped == 2


def test_a_skip_is_logged_in_one_line(caplog):
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.ones(2)
    with caplog.at_level(logging.WARNING, logger=guards.__name__):
        assert not NonFiniteGuard().finite(torch.tensor(NAN), torch.tensor(1.0), [param], step=7)
    assert param.grad is None
    assert [r.getMessage() for r in caplog.records] == [
        "skipped a model update at update step 7: non-finite loss or gradient (1 in a row, 1 in all)"
    ]


@pytest.mark.parametrize(("others", "stepped"), [(0.0, True), (1.0, False)])
def test_processes_agree_when_one_loss_is_not_finite(monkeypatch, others, stepped):
    """Two data-parallel processes: this one's loss and gradients are finite; the other's loss is not (others=1)."""
    sent = []

    def reduce_sums(values):
        sent.append(dict(values))
        return {k: v + others for k, v in values.items()}

    monkeypatch.setattr(guards, "world_size", lambda: 2)
    monkeypatch.setattr(guards, "reduce_sums", reduce_sums)
    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.ones(2)
    guard = NonFiniteGuard()
    assert guard.finite(finite_norm(), torch.tensor(1.0), [param]) is stepped
    assert sent == [{"nonfinite": 0.0}]
    assert (param.grad is not None) is stepped and guard.skipped == int(not stepped)


# -- the trainer: skipped updates are logged, left out of the averages, and never reach a checkpoint --------


def _trainer(tmp_path, bad_steps: set[int], **train):
    from textvae.config import Recipe
    from textvae.data.tokenizers import WordTokenizer
    from textvae.training.trainer import Trainer

    recipe = Recipe.model_validate(
        {"data": {"train": "unused", "valid": "unused", "batch_size": 8}, "model": SMALL, "train": train}
    )
    model = build_model(recipe.model, VOCAB)
    tokenizer = WordTokenizer.from_vocab([f"w{i}" for i in range(VOCAB - 4)])
    trainer = Trainer(recipe, model, tokenizer, TokenizedSplit(DOCS), TokenizedSplit(DOCS[:8]), tmp_path)
    objective = trainer.update.objective

    def poisoned(model, batch, step):
        out = objective(model, batch, step)
        return dataclasses.replace(out, loss=out.loss + NAN) if step in bad_steps else out

    trainer.update.objective = poisoned
    return trainer


def test_trainer_logs_skipped_updates_and_keeps_them_out_of_the_averages(tmp_path):
    trainer = _trainer(tmp_path, bad_steps={1, 2, 6}, epochs=2, log_every=1, val_latent_metrics=False)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [e["nonfinite_skipped"] for e in epochs] == [2, 3]  # 5 steps an epoch: steps 1, 2 | 6
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "step" and "loss" in r)
    assert all(math.isfinite(e["train_loss"]) for e in epochs)
    for checkpoint in (tmp_path / "checkpoints").iterdir():
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


def test_trainer_stops_after_max_nonfinite_in_a_row(tmp_path):
    trainer = _trainer(tmp_path, bad_steps=set(range(3, 100)), epochs=3, max_nonfinite=4, val_latent_metrics=False)
    with pytest.raises(NonFiniteError, match="4 model updates in a row") as err:
        trainer.fit()
    assert "\n" not in str(err.value)
    assert trainer.state.step == 6  # steps 0-2 trained, 3-6 skipped: the 4th skip (step index 6) stops
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000005"]  # epoch 1's


def test_a_checkpoint_never_holds_non_finite_weights(tmp_path):
    trainer = _trainer(tmp_path, bad_steps=set(), epochs=1, val_latent_metrics=False)
    with torch.no_grad():
        trainer.model.decoder.output.bias[3] = float("inf")
    with pytest.raises(TextVAEError, match="weight decoder.output.bias is not finite"):
        trainer._checkpoint()
    with pytest.raises(TextVAEError, match="not finite"):
        trainer._publish_best()
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()
