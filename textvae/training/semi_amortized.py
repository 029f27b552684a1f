"""Semi-amortized VAE updates (Kim et al. 2018): SVI from the encoder's posterior, trained end to end.

Per batch: the encoder gives λ_0 = (mean, logvar); SVI on each document's loss gives λ_K; the
objective at q(z|x; λ_K) trains the decoder (as in Kim et al.'s code, the decoder sees only this final
loss) and its gradient with respect to λ_K is carried back through the unrolled SVI steps to λ_0 and
on into the encoder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from textvae.config.recipe import MethodSection, Recipe
from textvae.config.sections import SVIConfig
from textvae.data.batching import TextBatch
from textvae.errors import TextVAEError
from textvae.inference.svi import refine_differentiable
from textvae.models.base import frozen
from textvae.models.posteriors import DiagonalGaussian
from textvae.training.updates import UpdateContext, UpdateRule, batch_terms, update_rule

NEEDS = ("example_losses", "loss_from_posterior")  # what the objective must offer


class SemiAmortizedUpdateConfig(MethodSection):
    """SA-VAE (Kim et al. 2018): SVI from the encoder's output; gradients through the unrolled steps."""

    type: Literal["savae"]
    svi: SVIConfig = SVIConfig()

    def check(self, recipe: Recipe) -> None:
        if not recipe.model.stochastic_posterior:
            raise ValueError("update.type savae refines a Gaussian posterior: set model.posterior: gaussian")


@update_rule("savae", config=SemiAmortizedUpdateConfig)
class SemiAmortizedUpdate(UpdateRule):
    """One SA-VAE step on encoder and decoder together; logs the SVI loss at λ_0 and λ_K."""

    def __init__(self, ctx: UpdateContext) -> None:
        missing = [name for name in NEEDS if not callable(getattr(ctx.objective, name, None))]
        if missing:
            raise TypeError(
                f"update 'savae' needs an objective with per-document losses; "
                f"{type(ctx.objective).__name__} has no {', '.join(missing)}"
            )
        if not ctx.model.has_latent:
            raise ValueError("update 'savae' refines a posterior: the model has no latent variable")
        super().__init__(ctx)
        self.svi = ctx.cfg.svi

    def __call__(self, batch: TextBatch, step: int) -> dict[str, float]:
        posterior0 = self.model.encode(batch.data, batch.lengths)

        def svi_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
            return self.objective.example_losses(self.model, batch, DiagonalGaussian(mean, logvar), step)

        with self._scoring():
            trace = refine_differentiable(svi_loss, posterior0.mean, posterior0.logvar, self.svi)
        mean, logvar = (t.clone().requires_grad_() for t in (trace.mean, trace.logvar))
        out = self.objective.loss_from_posterior(self.model, batch, DiagonalGaussian(mean, logvar), step)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()  # the decoder's gradient, and dL/dλ_K
        with self._scoring():
            pulled = self._pullback(trace, mean.grad, logvar.grad)
        torch.autograd.backward([posterior0.mean, posterior0.logvar], pulled)
        self.clip_and_step(self.params, [self.optimizer], out.loss, step)  # every gradient in, the pullback's too
        return {
            **batch_terms(out.loss, out.terms, batch),
            "svi_loss_start": trace.loss_start,
            "svi_loss_end": trace.loss_end,
        }

    @contextlib.contextmanager
    def _scoring(self) -> Iterator[None]:
        """SVI and its reverse pass differentiate with respect to λ only: no parameter gradient is made. Exact
        Hessian-vector products need a decoder with double backward: not the fused token loss."""
        twice = getattr(self.model.decoder, "twice_differentiable", None)
        exact = twice() if self.svi.hvp == "exact" and twice is not None else contextlib.nullcontext()
        with exact, frozen(self.params):
            yield

    def _pullback(self, trace, d_mean: torch.Tensor, d_logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return trace.backward(d_mean, d_logvar)
        except RuntimeError as err:  # e.g. cuDNN's LSTM: "derivative for _cudnn_rnn_backward is not implemented"
            if self.svi.hvp == "exact" and "not implemented" in str(err):
                raise TextVAEError(
                    "update.svi.hvp: exact needs double backward, which this model lacks "
                    f"({str(err).splitlines()[0]}); set update.svi.hvp=finite_difference"
                ) from err
            raise
