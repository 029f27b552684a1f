"""Aggressive inference-network training (He et al. 2019, Algorithm 1).

Before each decoder step the encoder alone is trained on fresh random batches until the loss stops
falling (checked every `check_every` inner steps, at most `max_inner_steps`), so the approximate
posterior catches up with the model posterior. Once validation MI stops increasing, aggressive mode
is switched off for good and the rule becomes the joint update.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

import torch
from pydantic import Field

from textvae.config.recipe import MethodSection
from textvae.data.batching import TextBatch
from textvae.models.base import frozen
from textvae.training.distributed import reduce_sums
from textvae.training.updates import (
    UpdateContext,
    UpdateRule,
    batch_terms,
    make_optimizer,
    trainable,
    update_rule,
)

logger = logging.getLogger(__name__)


def set_grads(params: list[torch.nn.Parameter], loss: torch.Tensor) -> None:
    """Gradients of `loss` for `params` only: no other parameter's gradient is computed."""
    for param, grad in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
        param.grad = grad


class ConvergenceCheck:
    """He et al.'s inner-loop stop: the per-token loss over a window of steps no longer falls.

    Under data-parallel training the window's loss and tokens are summed over processes, so every process
    stops after the same inner step.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.previous = float("inf")
        self.loss = 0.0
        self.tokens = 0

    def converged(self, step: int, loss_sum: float, n_tokens: int) -> bool:
        """Add one inner step (1-based `step`; a skipped one adds 0 tokens); True when a finished window did not
        improve on the last."""
        self.loss += loss_sum
        self.tokens += n_tokens
        if step % self.every:
            return False
        window = reduce_sums({"loss": self.loss, "tokens": self.tokens})
        self.loss, self.tokens = 0.0, 0
        if not window["tokens"]:  # every step of the window was skipped (non-finite): nothing to compare
            return False
        current = window["loss"] / window["tokens"]
        stop = current > self.previous
        self.previous = current
        return stop


class AggressiveUpdateConfig(MethodSection):
    """He et al. 2019, Algorithm 1: encoder-only inner steps before each decoder step."""

    type: Literal["aggressive"]
    max_inner_steps: int = Field(100, gt=0)  # encoder-only steps per decoder step, at most
    check_every: int = Field(15, gt=0)  # stop the inner loop when the loss over this many steps stops falling
    switch_off: Literal["mi", "never"] = "mi"  # "mi": off for good when validation MI stops increasing
    # "mi": epochs whose validation MI is below the best so far before switching off, counted over the run
    # (He et al.'s text.py: 1, the first decrease; image.py: 5)
    switch_off_patience: int = Field(1, ge=1)
    encoder_lr: float | None = Field(None, gt=0)  # defaults to optim.lr (He et al.: both 1.0)
    # inner-loop batches after the first (the outer batch): random runs of similar-length documents
    # (little padding), or documents drawn uniformly at random (padded to the longest of them)
    inner_batches: Literal["similar_length", "uniform"] = "similar_length"
    # The gradient-norm clip of an inner step: "model" clips by the norm of all gradients, as He et al.'s
    # text.py does (decoder gradients are computed for the norm only, never applied); the norm includes the
    # decoder's large gradients and so shrinks the encoder's steps, which measurably matters (synthetic data,
    # 3 seeds: "encoder" collapsed 2 runs of 3 by epoch 2). "encoder" clips the encoder's gradients alone and
    # computes no decoder gradient (cheaper per inner step).
    inner_clip: Literal["model", "encoder"] = "model"


@update_rule("aggressive", config=AggressiveUpdateConfig)
class AggressiveUpdate(UpdateRule):
    """Encoder-only inner loop, then a decoder-only step; the joint step once switched off."""

    wants_val_mi = True
    resumable = ("aggressive", "best_mi", "mi_not_improved")

    def __init__(self, ctx: UpdateContext) -> None:
        if getattr(ctx.model, "encoder", None) is None:
            raise ValueError("update.type 'aggressive' needs a model with an encoder (a latent variable)")
        self.encoder_params = trainable(ctx.model.encoder)
        encoder_ids = {id(p) for p in self.encoder_params}
        self.decoder_params = [p for p in trainable(ctx.model) if id(p) not in encoder_ids]
        self.encoder_lr_ratio = (ctx.cfg.encoder_lr or ctx.optim.lr) / ctx.optim.lr
        self.aggressive = True
        self.best_mi = 0.0  # He et al. start from pre_mi = 0 (text.py), best_mi = 0 (image.py)
        self.mi_not_improved = 0
        super().__init__(ctx)

    def set_lr(self, lr: float) -> None:
        self.encoder_optimizer = make_optimizer(self.encoder_params, self.optim_cfg, lr * self.encoder_lr_ratio)
        self.decoder_optimizer = make_optimizer(self.decoder_params, self.optim_cfg, lr)

    def end_epoch(self, metrics: dict) -> dict:
        """Switch off for good after `switch_off_patience` epochs (over the whole run) whose validation MI is
        below the best so far. Patience 1 is text.py's rule: the first epoch whose MI falls below the
        previous epoch's (MI has not fallen before, so the previous epoch's is the best)."""
        if not self.aggressive or self.cfg.switch_off == "never":
            return {"aggressive": self.aggressive}
        mi = metrics["val_mi"]
        if mi >= self.best_mi:
            self.best_mi = mi
            return {"aggressive": True}
        self.mi_not_improved += 1
        if self.mi_not_improved < self.cfg.switch_off_patience:
            return {"aggressive": True}
        self.aggressive = False
        logger.info("aggressive training switched off (validation MI %.4f < best %.4f)", mi, self.best_mi)
        return {"aggressive": False, "aggressive_switched_off": True}

    def encoder_steps(self, batch: TextBatch, step: int) -> int:
        """The inner loop, from the outer batch then on fresh random ones (as He et al.'s text.py);
        returns the number of encoder-only steps taken."""
        check = ConvergenceCheck(self.cfg.check_every)
        clipped = self.encoder_params if self.cfg.inner_clip == "encoder" else self.encoder_params + self.decoder_params
        for inner in range(1, self.cfg.max_inner_steps + 1):
            if inner > 1:
                batch = self.sample_batch()
            with frozen(self.decoder_params) if self.cfg.inner_clip == "encoder" else contextlib.nullcontext():
                out = self.objective(self.model, batch, step)
                set_grads(clipped, out.loss)
            stepped = self.clip_and_step(clipped, [self.encoder_optimizer], out.loss, step)
            for param in clipped[len(self.encoder_params) :]:
                param.grad = None  # decoder gradients only entered the clipping norm
            loss_sum, n_tokens = (out.loss.item() * len(batch), batch.n_predicted) if stepped else (0.0, 0)
            if check.converged(inner, loss_sum, n_tokens):
                return inner
        return self.cfg.max_inner_steps

    def __call__(self, batch: TextBatch, step: int) -> dict[str, float]:
        inner = self.encoder_steps(batch, step) if self.aggressive else 0
        return {**self._outer_step(batch, step, train_encoder=not self.aggressive), "inner_steps": float(inner)}

    def _outer_step(self, batch: TextBatch, step: int, train_encoder: bool) -> dict[str, float]:
        """He et al.'s outer step: gradients of both parts clipped together; the encoder steps only when
        aggressive mode is off (the joint update); a non-finite loss or gradient skips both optimisers."""
        self.encoder_optimizer.zero_grad(set_to_none=True)
        self.decoder_optimizer.zero_grad(set_to_none=True)
        out = self.objective(self.model, batch, step)
        out.loss.backward()
        optimizers = [self.encoder_optimizer, self.decoder_optimizer] if train_encoder else [self.decoder_optimizer]
        self.clip_and_step(self.encoder_params + self.decoder_params, optimizers, out.loss, step)
        return batch_terms(out.loss, out.terms, batch)
