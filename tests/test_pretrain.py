"""Li et al. 2019's fix: per-document free bits, autoencoder pretraining into RUN_DIR/pretrain/, decoder reset,
and resuming a run stopped in either phase."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from test_cli import tiny_recipe
from test_resume import comparable_metrics

from textvae import api
from textvae.config import build_recipe, pretraining_recipe
from textvae.errors import TextVAEError
from textvae.models.posteriors import DiagonalGaussian
from textvae.objectives.elbo import ELBO
from textvae.suites.driver import training_epochs
from textvae.training.checkpoint import has_progress
from textvae.training.pretrain import reset_parts


def constant_elbo(beta: float = 1.0, **options) -> ELBO:
    return ELBO(beta, lambda step: 1.0, **options)


# -- the objective ---------------------------------------------------------------------------------------


def test_document_free_bits_count_each_documents_kl_only_above_the_target():
    mean = torch.tensor([[0.1, 2.0], [1.5, 0.2]], requires_grad=True)
    posterior = DiagonalGaussian(mean, torch.zeros(2, 2))
    kl = posterior.kl()  # mean² / 2: [[0.005, 2.0], [1.125, 0.02]]
    term = constant_elbo(free_bits=0.5, free_bits_scope="document").thresholded_kl(kl)
    assert term.item() == pytest.approx((2.0 + 1.125) / 2)
    term.backward()
    # no gradient pulls a document's dimension below the target; above it, d(mean²/2)/d mean / B
    assert torch.allclose(mean.grad, torch.tensor([[0.0, 1.0], [0.75, 0.0]]))


def test_batch_free_bits_clamp_the_batch_averaged_kl_per_dimension():
    kl = DiagonalGaussian(torch.tensor([[0.1, 2.0], [1.5, 0.2]]), torch.zeros(2, 2)).kl()
    term = constant_elbo(free_bits=0.5).thresholded_kl(kl)
    assert term.item() == pytest.approx(max(0.5, (0.005 + 1.125) / 2) + max(0.5, (2.0 + 0.02) / 2))


def test_an_autoencoder_picks_its_best_epoch_by_reconstruction():
    assert constant_elbo(0.0).selection_metric == "rec"
    assert constant_elbo(0.4).selection_metric == "elbo_nll"


# -- the recipe ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, write_splits) -> Path:
    return write_splits(tmp_path_factory.mktemp("pretrain"), 200, 40, 30)


def li_recipe(root: Path, **train):
    return build_recipe(
        tiny_recipe(
            root,
            data={"batch_size": 25},  # 8 updates an epoch
            model={"embed_dim": 8, "hidden_dim": 16, "latent_dim": 4},
            objective={
                "type": "elbo",
                "free_bits": 0.1,
                "free_bits_scope": "document",
                "kl_schedule": {"type": "linear", "start": 0.0, "warmup_epochs": 1},
            },
            optim={"type": "sgd", "lr": 0.5},
            train={
                "epochs": 2,
                "log_every": 4,
                "checkpoints": {"every_steps": 5},
                "pretrain": {"epochs": 2},
                "val_latent_metrics": False,
                **train,
            },
        ),
        "li-recipe",
    )


def test_the_pretraining_recipe_changes_objective_and_epochs_only(corpus: Path):
    recipe = li_recipe(corpus, pretrain={"epochs": 3, "objective": {"beta": 0.0}})
    pre = pretraining_recipe(recipe)
    assert (pre.objective.type, pre.objective.beta, pre.objective.free_bits) == ("elbo", 0.0, None)
    assert (pre.train.epochs, pre.train.pretrain, pre.name) == (3, None, "tiny-pretrain")
    assert (pre.model, pre.data, pre.optim, pre.train.lr_decay) == (
        recipe.model,
        recipe.data,
        recipe.optim,
        recipe.train.lr_decay,
    )
    assert training_epochs(recipe) == 5
    assert pretraining_recipe(li_recipe(corpus, pretrain={})).train.epochs == 2  # defaults to train.epochs


@pytest.mark.parametrize(
    "train, needle",
    [
        ({"pretrain": {"objective": {"beta": -1}}}, "key 'train.pretrain.objective.beta'"),
        ({"pretrain": {"reset": "encoder"}}, "key 'train.pretrain.reset'"),
        ({"pretrain": {"epochs": 0}}, "key 'train.pretrain.epochs'"),
    ],
)
def test_bad_pretraining_sections_name_their_key(corpus: Path, train: dict, needle: str):
    with pytest.raises(TextVAEError, match=needle):
        li_recipe(corpus, **train)


def test_a_language_model_has_nothing_to_pretrain(corpus: Path):
    data = li_recipe(corpus).model_dump(by_alias=True)
    data["model"]["type"] = "lstm_lm"
    data["objective"] = {"type": "elbo"}
    with pytest.raises(TextVAEError, match="train.pretrain pretrains an encoder"):
        build_recipe(data, "lm")


# -- training --------------------------------------------------------------------------------------------


class StartRecorder:
    """Patches api.Trainer to record each phase's model weights when its trainer is built."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.starts: dict[str, dict[str, torch.Tensor]] = {}
        real = api.Trainer

        def recording(recipe, model, *args, **kwargs):
            self.starts[recipe.name] = copy.deepcopy(model.state_dict())
            return real(recipe, model, *args, **kwargs)

        monkeypatch.setattr(api, "Trainer", recording)


def weights_of(run: Path, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in api.load_run(run).model.state_dict().items() if k.startswith(prefix)}


def test_the_main_phase_starts_from_the_pretrained_encoder_and_a_fresh_decoder(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    recorder = StartRecorder(monkeypatch)
    run = api.train(li_recipe(corpus), tmp_path / "run").directory
    pre_dir = run / "pretrain"
    assert (pre_dir / "trainer_state.json").is_file() and (run / "trainer_state.json").is_file()
    assert api.run_recipe(pre_dir).objective.beta == 0.0
    records = map(json.loads, (pre_dir / "metrics.jsonl").read_text().splitlines())
    pre_epochs = [r for r in records if r["kind"] == "epoch"]
    assert "best_val_rec" in pre_epochs[-1]  # the autoencoder is selected by reconstruction
    pretrained, start = recorder.starts["tiny-pretrain"], recorder.starts["tiny"]
    best = api.load_run(pre_dir).model.state_dict()
    for name, value in start.items():
        if name.startswith("encoder."):
            assert torch.equal(value, best[name]), name  # the pretrained encoder
        else:
            assert torch.equal(value, pretrained[name]), name  # the decoder as initialised, not as pretrained
    assert any(not torch.equal(best[k], pretrained[k]) for k in start if k.startswith("decoder."))
    # training went on from there: the main phase's model is not the pretrained one
    assert any(not torch.equal(v, best[k]) for k, v in weights_of(run, "encoder.").items())


def test_reset_none_keeps_the_pretrained_decoder():
    torch.manual_seed(0)
    pretrained, fresh = (
        torch.nn.ModuleDict({"decoder": torch.nn.Linear(2, 2)}),
        torch.nn.ModuleDict({"decoder": torch.nn.Linear(2, 2)}),
    )
    before = copy.deepcopy(pretrained.state_dict())
    kept = reset_parts(pretrained, fresh, "none").state_dict()
    assert all(torch.equal(kept[k], before[k]) for k in before)
    reset = reset_parts(pretrained, fresh, "decoder").state_dict()
    assert all(torch.equal(reset[k], fresh.state_dict()[k]) for k in before)


class StopAt:
    """A callback that interrupts training at the n-th update step (counted over both phases)."""

    def __init__(self, n: int) -> None:
        self.n, self.steps = n, 0

    def on_train_begin(self, total_steps: int, steps_per_epoch: int) -> None:
        pass

    def on_step(self, step: int, metrics: dict) -> None:
        self.steps += 1
        if self.steps == self.n:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        pass


@pytest.fixture(scope="module")
def uninterrupted(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.train(li_recipe(corpus), tmp_path_factory.mktemp("li") / "run").directory


@pytest.mark.parametrize(
    "stop_at, phase",
    [
        (7, "pretraining, after its step-5 checkpoint"),
        (18, "the main phase, before its first checkpoint (pretraining finished)"),
        (24, "the main phase, after its step-5 checkpoint"),
    ],
)
def test_a_run_stopped_in_either_phase_resumes_to_the_uninterrupted_result(
    stop_at: int, phase: str, corpus: Path, uninterrupted: Path, tmp_path: Path
):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        api.train(li_recipe(corpus), run, callbacks=[StopAt(stop_at)])
    assert has_progress(run), "the stopped run was kept: it has a checkpoint to continue from"
    assert not (run / "trainer_state.json").exists()
    api.resume(run)
    for directory in (run / "pretrain", run):
        reference = uninterrupted / directory.relative_to(run)
        assert comparable_metrics(directory) == comparable_metrics(reference), phase
    for prefix in ("encoder.", "decoder."):
        ours, theirs = weights_of(run, prefix), weights_of(uninterrupted, prefix)
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), phase


def test_a_run_stopped_before_any_checkpoint_is_removed(corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        api.train(li_recipe(corpus), run, callbacks=[StopAt(3)])
    assert not run.exists()
