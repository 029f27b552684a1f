"""The training loop: epochs of update steps, validation, He et al.'s lr decay, checkpoints and exact resume,
metrics.jsonl."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from textvae.atomic import write_atomic
from textvae.config import Recipe
from textvae.data.batching import Prefetcher, RandomBatches, make_loader, transfer
from textvae.data.splits import Split
from textvae.data.tokenizers import TextTokenizer
from textvae.errors import TextVAEError
from textvae.evaluation import latent_metrics
from textvae.evaluation.likelihood import elbo_nll
from textvae.modality import MODALITIES
from textvae.objectives import build_objective
from textvae.objectives.base import StatefulObjective
from textvae.training import distributed, random_state, tracking
from textvae.training.checkpoint import CheckpointStore
from textvae.training.metrics import MetricsLog, RunningSums, summed_over_processes
from textvae.training.posterior_tracker import PosteriorMeanTracker
from textvae.training.random_state import seed_everything
from textvae.training.updates import UpdateContext, build_update

logger = logging.getLogger(__name__)


class TrainerCallback(Protocol):
    """Progress hooks (the CLI shows a rich progress bar through these)."""

    def on_train_begin(self, total_steps: int, steps_per_epoch: int) -> None: ...

    def on_step(self, step: int, metrics: dict) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict) -> None: ...


@dataclass
class TrainerState:
    """Everything about the loop's progress that is not in the model or optimiser."""

    epoch: int = 0
    step: int = 0
    lr: float = 0.0
    best_val: float = math.inf
    best_epoch: int = -1
    not_improved: int = 0
    decays: int = 0
    stopped_early: bool = False
    batches_done: int = 0  # batches of epoch `epoch` already trained (non-zero in a mid-epoch checkpoint)


def denormals_flushed() -> bool:
    return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """On CPU, treat denormal floats as zero (tiny LSTM gradients otherwise slow the backward 15-26x);
    the process-wide setting is put back afterwards."""
    before = denormals_flushed()
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


@contextlib.contextmanager
def cudnn_autotuned(device: torch.device) -> Iterator[None]:
    """On CUDA, let cuDNN pick the fastest kernels for each input shape; the setting is put back afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def random_training_batches(recipe: Recipe, train: Split) -> RandomBatches:
    """Fresh random training batches for update rules with inner loops (`update.inner_batches`): global
    batches, the same on every data-parallel process."""
    similar = getattr(recipe.update, "inner_batches", "similar_length") == "similar_length"
    return RandomBatches(train, recipe.data.batch_size, recipe.train.seed, similar, distributed.world_size())


FINAL_STATE = "trainer_state.json"  # written when a run finishes


class Trainer:
    """Trains `model` on `train` with the recipe's objective, update rule and optimiser.

    Under torchrun (a joined process group, see `distributed.session`) every process reads the same global
    batches and trains on its equal share, gradients averaged; validation runs on every process and rank 0's
    numbers decide (best epoch, lr decay, aggressive switch-off); only rank 0 logs, shows progress and writes.

    A checkpoint is written after every epoch (and every `train.checkpoints.every_steps` updates); `restore`
    with a checkpoint's training state before `fit` continues the run exactly where that checkpoint was taken.
    """

    def __init__(
        self,
        recipe: Recipe,
        model,
        tokenizer: TextTokenizer | None,
        train: Split,
        valid: Split,
        run_dir: Path,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        self.recipe = recipe
        self.model = model
        self.tokenizer = tokenizer
        self.train_split = train
        self.valid_split = valid
        self.run_dir = run_dir
        self.callbacks = (callbacks or []) if distributed.is_main() else []
        self.device = distributed.local_device(recipe.train.device)
        self.per_token = MODALITIES[recipe.model.modality].perplexity  # text: PPL is logged; images: NLL per image
        distributed.check_batch_size(recipe.data.batch_size)  # api.train checks before writing the run dir too
        self.loader = make_loader(
            train,
            recipe.data.batch_size,
            shuffle=True,
            seed=recipe.train.seed,
            bucket=getattr(recipe.data, "bucket", False),
            multiple_of=distributed.world_size(),
        )
        self.valid_loader = make_loader(valid, recipe.data.eval_batch_size, shuffle=False)
        self.steps_per_epoch = len(self.loader)
        self.objective = build_objective(recipe.objective, self.steps_per_epoch, recipe.train.epochs)
        self.state = TrainerState(lr=recipe.optim.lr)
        self.model.to(self.device).set_precision(recipe.train.precision).set_compiled(recipe.train.compile)
        distributed.broadcast_tensors([*self.model.parameters(), *self.model.buffers()])  # rank 0's start
        self.random_batches = random_training_batches(recipe, train)
        self.update = build_update(self._update_context())
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", tracking.for_recipe(recipe, run_dir))  # train.report_to
        self.checkpoints = CheckpointStore(run_dir, recipe.train.checkpoints.keep_last)
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._window = RunningSums(self.per_token)  # since the last logged step
        self._epoch = RunningSums(self.per_token)  # since the epoch began
        self._restored_rng: dict | None = None
        self._fingerprints: dict[str, str] | None = None
        plot = recipe.train.posterior_mean_plot
        self.tracker = (
            None
            if plot is None or not distributed.is_main()
            else PosteriorMeanTracker(model, valid, plot, recipe.data.eval_batch_size, run_dir)
        )

    def _update_context(self) -> UpdateContext:
        cfg = self.recipe
        return UpdateContext(
            model=self.model,
            objective=self.objective,
            optim=cfg.optim,
            cfg=cfg.update,
            lr=cfg.optim.lr,
            sample_batch=lambda: self._local(self.random_batches()),
            max_nonfinite=cfg.train.max_nonfinite,
        )

    def _local(self, batch):
        """This process's share of a global batch, on its device."""
        return transfer(distributed.shard(batch), self.device)

    def _training_batches(self):
        """This epoch's batches (this process's shares, on the device), collated ahead in a background thread
        unless collating draws random numbers (which then keep their place in the random stream)."""
        if self.train_split.random_collate:
            return map(self._local, self.loader)
        return Prefetcher(self.loader, self._local)

    # -- the loop -----------------------------------------------------------------------------

    def fit(self) -> TrainerState:
        cfg = self.recipe.train
        seed_everything(cfg.seed)
        if self._restored_rng is not None:
            random_state.restore(self._restored_rng)
        try:
            with flush_denormals(self.device), cudnn_autotuned(self.device):
                self._fit()
        finally:
            self.metrics.close()  # the train.report_to trackers
        return self.state

    def _fit(self) -> None:
        cfg = self.recipe.train
        total = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            total = min(total, cfg.max_steps)
        for cb in self.callbacks:
            cb.on_train_begin(total, self.steps_per_epoch)
        if self._restored_rng is None:
            self._track_posterior_means()
        while self.state.epoch < cfg.epochs and not self._out_of_steps():
            epoch_metrics = self._train_epoch()
            epoch_metrics.update(self._validate())
            epoch_metrics = distributed.broadcast_json(epoch_metrics)  # every process decides on rank 0's numbers
            epoch_metrics.update(self.update.end_epoch(epoch_metrics))
            self.state.epoch += 1
            self._after_epoch(epoch_metrics)
            if self.state.stopped_early:
                break
        self._finish()

    def _out_of_steps(self) -> bool:
        return self.recipe.train.max_steps is not None and self.state.step >= self.recipe.train.max_steps

    def _train_epoch(self) -> dict:
        """The rest of epoch `state.epoch` (all of it unless resumed from a mid-epoch checkpoint)."""
        self.model.train()
        self.loader.batch_sampler.set_epoch(self.state.epoch, start=self.state.batches_done)
        every = self.recipe.train.checkpoints.every_steps
        started = self._window.started = time.perf_counter()  # validation time is not training time
        for batch in self._training_batches():
            if self._out_of_steps():
                break
            with distributed.sharded_noise():
                terms = self.update(batch, self.state.step)
            terms, n_tokens = summed_over_processes(terms, batch.n_predicted)
            self.state.step += 1
            self.state.batches_done += 1
            plotting = self._track_posterior_means()  # plotting time is not training time
            started += plotting
            self._window.started += plotting
            if math.isfinite(terms["loss"]):  # a skipped update's loss is counted by the guard, not averaged
                self._window.add(terms, n_tokens)
                self._epoch.add(terms, n_tokens)
            if self.state.step % self.recipe.train.log_every == 0:
                self._log_step()
            for cb in self.callbacks:
                cb.on_step(self.state.step, {**terms, "n_tokens": n_tokens if self.per_token else 0})
            if every and self.state.step % every == 0 and self.state.batches_done < self.steps_per_epoch:
                self._checkpoint()  # the last batch's checkpoint is the epoch's, after validation
        seconds = time.perf_counter() - started
        epoch, self._epoch = self._epoch, RunningSums(self.per_token)
        self._window = RunningSums(self.per_token)  # a step record averages steps of its own epoch only
        self.state.batches_done = 0
        return {
            **{f"train_{k}": v for k, v in epoch.summary().items()},
            "epoch_seconds": seconds,
            "train_tokens_per_s": epoch.tokens / max(seconds, 1e-9),
            "nonfinite_skipped": self.update.guard.skipped,
        }

    def _log_step(self) -> None:
        window = self._window
        record = {"kind": "step", "step": self.state.step, "epoch": self.state.epoch, **window.summary()}
        record["lr"] = self.state.lr
        record["tokens_per_s"] = window.tokens / max(1e-9, time.perf_counter() - window.started)
        if self.update.guard.skipped:
            record["nonfinite_skipped"] = self.update.guard.skipped
        self.metrics.write(record)
        self._window = RunningSums(self.per_token)

    def _validate(self) -> dict:
        distributed.broadcast_tensors(self.model.buffers())  # e.g. BN-VAE's running statistics: rank 0's
        metrics = elbo_nll(self.model, self.valid_loader, seed=self.recipe.eval.seed)
        out = {f"val_{k}": metrics[k] for k in ("elbo_nll", "rec", "kl", "ppl", "rec_ppl") if k in metrics}
        if (self.recipe.train.val_latent_metrics or self.update.wants_val_mi) and self.model.has_latent:
            latent = latent_metrics(self.model, self.valid_split, self.recipe.data.eval_batch_size, self.recipe.eval)
            out.update({f"val_{k}": latent[k] for k in ("mi", "au") if k in latent})
        return out

    def _after_epoch(self, metrics: dict) -> None:
        st, decay = self.state, self.recipe.train.lr_decay
        selection = f"val_{self.objective.selection_metric}"  # -ELBO, or reconstruction for WAEs
        val = metrics[selection]
        improved = val < st.best_val
        if improved:
            st.best_val, st.best_epoch, st.not_improved = val, st.epoch, 0
            self._best_weights = copy.deepcopy(self.model.state_dict())
            self._publish_best()
        else:
            st.not_improved += 1
            # st.epoch counts finished epochs; He et al. test their 0-based `epoch >= 15`
            if decay.enabled and st.not_improved >= decay.patience and st.epoch > decay.start_epoch:
                self._decay_lr()
        record = {
            "kind": "epoch",
            "epoch": st.epoch,
            "step": st.step,
            "lr": st.lr,
            **metrics,
            f"best_{selection}": st.best_val,
            "improved": improved,
            "lr_decays": st.decays,
        }
        self.metrics.write(record)
        self._checkpoint()
        shown = ("elbo_nll", "rec", "ppl", "rec_ppl", "kl", "mi", "au")
        logger.info(
            "epoch %d: %s%s",
            st.epoch,
            " ".join(f"val {k} {metrics[f'val_{k}']:.4g}" for k in shown if f"val_{k}" in metrics),
            " (best)" if improved else "",
        )
        for cb in self.callbacks:
            cb.on_epoch_end(st.epoch, record)

    # -- checkpoints and resume ----------------------------------------------------------------

    def _publish_best(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        """The model (with `weights`, if given) as run_dir/model, the best so far; main process only."""
        if distributed.is_main():
            self._check_finite(weights)
            self.checkpoints.publish_best(self.model, self.tokenizer, weights)

    def _checkpoint(self) -> None:
        """A resumable checkpoint of this moment, written by the main process only."""
        if distributed.is_main():
            self._check_finite()
            self.checkpoints.save(self.state.step, self.model, self.tokenizer, self.training_state())

    def _check_finite(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        """A checkpoint never holds a non-finite weight: refuse (the previous checkpoints stay)."""
        for name, tensor in (weights or self.model.state_dict()).items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise TextVAEError(
                    f"training stopped at update step {self.state.step}: weight {name} is not finite; "
                    f"the last good checkpoint is in {self.checkpoints.directory}"
                )

    def training_state(self) -> dict[str, Any]:
        """Everything besides the model weights that `restore` needs to continue exactly from here."""
        return {
            "trainer": asdict(self.state),
            "accumulators": {"window": self._window.state_dict(), "epoch": self._epoch.state_dict()},
            "update": self.update.state_dict(),
            "objective": self.objective.state_dict() if isinstance(self.objective, StatefulObjective) else {},
            "random": random_state.capture(),
            "random_batches": self.random_batches.state_dict(),
            "best_weights": self._best_weights,
            "posterior_means": None if self.tracker is None else self.tracker.state_dict(),
            "metrics_bytes": self.metrics.size(),
            "data": self._data_fingerprints(),
        }

    def _data_fingerprints(self) -> dict[str, str]:
        if self._fingerprints is None:
            self._fingerprints = {"train": self.train_split.fingerprint(), "valid": self.valid_split.fingerprint()}
        return self._fingerprints

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's training state (the model already holds its weights): optimisers,
        schedules, update-rule and objective state, random states, data position; metrics.jsonl is cut back
        to what had been logged then, and run_dir/model is made the checkpoint's best model again."""
        for name, digest in self._data_fingerprints().items():
            if state["data"][name] != digest:
                raise TextVAEError(
                    f"data.{name}: the data differs from what this run was trained on (changed since the run "
                    "started); put the original back or start a new run"
                )
        self.state = TrainerState(**state["trainer"])
        self._window.load_state_dict(state["accumulators"]["window"])
        self._epoch.load_state_dict(state["accumulators"]["epoch"])
        self.update.load_state_dict(state["update"])
        if isinstance(self.objective, StatefulObjective):
            self.objective.load_state_dict(state["objective"], self.model.latent_dim, self.device)
        self.random_batches.load_state_dict(state["random_batches"])
        self._restored_rng = state["random"]
        if self.tracker is not None and state["posterior_means"] is not None:
            self.tracker.load_state_dict(state["posterior_means"])
        self.metrics.truncate(state["metrics_bytes"])
        self._best_weights = state["best_weights"]
        if self._best_weights is not None:
            self._best_weights = {k: v.to(self.device) for k, v in self._best_weights.items()}
            self._publish_best(self._best_weights)
        logger.info(
            "resumed at update step %d (epoch %d, batch %d)",
            self.state.step,
            self.state.epoch + 1,
            self.state.batches_done,
        )

    def _decay_lr(self) -> None:
        """He et al.: restore the best weights, multiply the lr, start a fresh optimiser."""
        st = self.state
        if self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)
        st.lr *= self.recipe.train.lr_decay.factor
        st.decays += 1
        st.not_improved = 0
        self.update.set_lr(st.lr)
        logger.info("lr decay %d: lr %.4g, restored epoch %d", st.decays, st.lr, st.best_epoch)
        if st.decays >= self.recipe.train.lr_decay.max_decays:
            st.stopped_early = True

    def _track_posterior_means(self, label: str | None = None) -> float:
        """Snapshot the posterior means when the plot asks for this step; returns the seconds spent."""
        if self.tracker is None or (label is None and not self.tracker.wants(self.state.step)):
            return 0.0
        before = self.tracker.seconds
        self.tracker.snapshot(label or f"step {self.state.step}")
        return self.tracker.seconds - before

    def _finish(self) -> None:
        if self.tracker is not None:
            self._track_posterior_means(f"end (step {self.state.step})")
            self.tracker.save()
        if self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)
        if distributed.is_main():
            write_atomic(self.run_dir / FINAL_STATE, json.dumps(asdict(self.state), indent=1).encode())
