"""Stochastic variational inference on a Gaussian posterior's parameters (Kim et al. 2018, SA-VAE).

λ = (mean, logvar), each [B, Z], is refined by momentum SGD on a per-document loss f(λ) -> [B]:

    v_k = μ v_{k-1} + clip(∇f(λ_{k-1})),    λ_k = λ_{k-1} - α v_k,    v_0 = 0,

where `clip` rescales each document's gradient (mean and logvar together) to norm at most `cfg.clip`.
Documents are independent (f sums per-document terms), so ∇ of f.sum() holds every document's gradient.

`refine` runs the steps (evaluation). `refine_differentiable` also gives dL/dλ_0 from dL/dλ_K, through
the momentum, the clip and the Hessian of f: by double backward through the unrolled steps ("exact"), or
by Kim et al.'s reverse pass with finite-difference Hessian-vector products ("finite_difference", for
cuDNN LSTMs, which have no double backward), replaying the randomness (z noise, dropout) of each step.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from textvae.config import SVIConfig

LossFn = Callable[[Tensor, Tensor], Tensor]  # (mean, logvar) [B, Z] each -> per-document loss [B]
Pullback = Callable[[Tensor], Tensor]  # dL/dλ_K -> dL/dλ_0, λ = cat(mean, logvar) [B, 2Z]


@dataclass(frozen=True)
class RNGState:
    """The CPU random state and, for a CUDA device, that device's: what f's noise is drawn from."""

    cpu: Tensor
    cuda: Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> RNGState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run a block from this state; the caller's random state is restored afterwards."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass(frozen=True)
class Step:
    """One forward step as the finite-difference reverse pass needs it."""

    lam: Tensor  # λ_{k-1}
    grad: Tensor  # ∇f(λ_{k-1}), before clipping
    rng: RNGState  # the random state f(λ_{k-1}) was evaluated from


class Refined(NamedTuple):
    """The refined posterior parameters (detached) and the mean per-document loss before and after."""

    mean: Tensor
    logvar: Tensor
    loss_start: float
    loss_end: float


@dataclass
class SVITrace:
    """`refine_differentiable`'s result: λ_K (detached), the mean losses at λ_0 and λ_K, the reverse pass."""

    mean: Tensor
    logvar: Tensor
    loss_start: float
    loss_end: float
    pullback: Pullback = field(repr=False)

    def backward(self, d_mean: Tensor, d_logvar: Tensor) -> tuple[Tensor, Tensor]:
        """dL/dλ_0 = (d_mean0, d_logvar0) from dL/dλ_K. Call it once (the exact mode frees its graph)."""
        d_mean0, d_logvar0 = self.pullback(torch.cat([d_mean, d_logvar], dim=-1)).chunk(2, dim=-1)
        return d_mean0, d_logvar0


def clip_per_document(grad: Tensor, max_norm: float | None) -> Tensor:
    """Rescale each row of `grad` [B, D] to norm at most `max_norm` (differentiable; None: no clip)."""
    if max_norm is None:
        return grad
    return grad * (max_norm / grad.norm(dim=-1, keepdim=True).clamp_min(max_norm))


def clip_vjp(grad: Tensor, u: Tensor, max_norm: float | None) -> Tensor:
    """Jᵀu for J the Jacobian of `clip_per_document` at `grad`: (c/|g|)(I - ĝĝᵀ)u on clipped rows, else u."""
    if max_norm is None:
        return u
    norm = grad.norm(dim=-1, keepdim=True)
    unit = grad / norm.clamp_min(torch.finfo(grad.dtype).tiny)
    projected = (u - unit * (unit * u).sum(-1, keepdim=True)) * (max_norm / norm.clamp_min(max_norm))
    return torch.where(norm > max_norm, projected, u)


def _loss_and_grad(loss_fn: LossFn, lam: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """f(λ) [B] and ∇ of f.sum() with respect to λ [B, 2Z]."""
    loss = loss_fn(*lam.chunk(2, dim=-1))
    (grad,) = torch.autograd.grad(loss.sum(), lam, create_graph=create_graph)
    return loss, grad


def _mean_loss(loss_fn: LossFn, lam: Tensor) -> float:
    with torch.no_grad():
        return loss_fn(*lam.chunk(2, dim=-1)).mean().item()


def _descend(
    loss_fn: LossFn, lam: Tensor, cfg: SVIConfig, create_graph: bool = False, record: list[Step] | None = None
) -> tuple[Tensor, float]:
    """The `cfg.steps` momentum steps from λ_0; returns λ_K and the mean loss at λ_0.

    With `create_graph` λ_K keeps the graph back to λ_0 (a leaf requiring grad); `record` collects the steps.
    """
    velocity = torch.zeros_like(lam)
    loss_start = None
    for _ in range(cfg.steps):
        if not create_graph:
            lam = lam.detach().requires_grad_()
        rng = RNGState.capture(lam.device) if record is not None else None
        loss, grad = _loss_and_grad(loss_fn, lam, create_graph)
        if record is not None:
            record.append(Step(lam.detach(), grad.detach(), rng))
        if loss_start is None:
            loss_start = loss.mean().item()
        velocity = cfg.momentum * velocity + clip_per_document(grad, cfg.clip)
        lam = lam - cfg.lr * velocity
    return lam, loss_start


def _stacked(mean: Tensor, logvar: Tensor) -> Tensor:
    return torch.cat([mean, logvar], dim=-1).detach()


def refine(loss_fn: LossFn, mean0: Tensor, logvar0: Tensor, cfg: SVIConfig) -> Refined:
    """SVI from (mean0, logvar0); no graph is kept. Works under no_grad (not on inference-mode tensors)."""
    with torch.enable_grad():
        lam, loss_start = _descend(loss_fn, _stacked(mean0, logvar0), cfg)
    lam = lam.detach()
    mean, logvar = lam.chunk(2, dim=-1)
    return Refined(mean, logvar, loss_start, _mean_loss(loss_fn, lam))


def _unroll_exact(loss_fn: LossFn, lam0: Tensor, cfg: SVIConfig) -> tuple[Tensor, float, Pullback]:
    lam0.requires_grad_()
    lam_k, loss_start = _descend(loss_fn, lam0, cfg, create_graph=True)

    def pullback(d_lam: Tensor) -> Tensor:
        (d_lam0,) = torch.autograd.grad(lam_k, lam0, d_lam)  # inputs λ_0 only: no parameter's .grad is touched
        return d_lam0

    return lam_k.detach(), loss_start, pullback


def _unroll_finite_difference(loss_fn: LossFn, lam0: Tensor, cfg: SVIConfig) -> tuple[Tensor, float, Pullback]:
    steps: list[Step] = []
    lam_k, loss_start = _descend(loss_fn, lam0, cfg, record=steps)
    return lam_k.detach(), loss_start, functools.partial(_reverse, loss_fn, steps, cfg)


def _reverse(loss_fn: LossFn, steps: list[Step], cfg: SVIConfig, d_lam: Tensor) -> Tensor:
    """Kim et al.'s reverse pass through the momentum steps, from dL/dλ_K to dL/dλ_0."""
    d_velocity = torch.zeros_like(d_lam)
    for step in reversed(steps):
        d_velocity = d_velocity - cfg.lr * d_lam
        d_lam = d_lam + _hvp(loss_fn, step, clip_vjp(step.grad, d_velocity, cfg.clip), cfg)
        d_velocity = cfg.momentum * d_velocity
    return d_lam


def _hvp(loss_fn: LossFn, step: Step, u: Tensor, cfg: SVIConfig) -> Tensor:
    """H(λ)u by finite differences, the step ε = fd_eps / |u| per document, f's randomness replayed.

    "forward" (Kim et al.): (∇f(λ + εu) - ∇f(λ)) / ε, reusing the forward pass's ∇f(λ): one gradient
    evaluation. "central": (∇f(λ + εu) - ∇f(λ - εu)) / 2ε, two evaluations, error O(ε²) instead of O(ε).
    """
    eps = cfg.fd_eps / u.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(u.dtype).tiny)
    plus = _replayed_grad(loss_fn, step.lam + eps * u, step.rng)
    if cfg.fd_scheme == "forward":
        return (plus - step.grad) / eps
    return (plus - _replayed_grad(loss_fn, step.lam - eps * u, step.rng)) / (2 * eps)


def _replayed_grad(loss_fn: LossFn, lam: Tensor, rng: RNGState) -> Tensor:
    with rng.replay(), torch.enable_grad():
        return _loss_and_grad(loss_fn, lam.detach().requires_grad_())[1]


UNROLLS = {"exact": _unroll_exact, "finite_difference": _unroll_finite_difference}


def refine_differentiable(loss_fn: LossFn, mean0: Tensor, logvar0: Tensor, cfg: SVIConfig) -> SVITrace:
    """SVI from (mean0, logvar0), keeping what `SVITrace.backward` needs to give dL/dλ_0 from dL/dλ_K.

    mean0 and logvar0 are taken detached; gradients reach λ_0 only, never a parameter's .grad.
    `cfg.hvp` picks the exact (double backward) or the finite-difference reverse pass.
    """
    with torch.enable_grad():
        lam_k, loss_start, pullback = UNROLLS[cfg.hvp](loss_fn, _stacked(mean0, logvar0), cfg)
    mean, logvar = lam_k.chunk(2, dim=-1)
    return SVITrace(mean, logvar, loss_start, _mean_loss(loss_fn, lam_k), pullback)
