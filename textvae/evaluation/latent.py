"""Latent-space metrics: KL per dimension, mutual information (He et al.'s estimator), active units."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from textvae.evaluation.common import model_device, seeded
from textvae.models.posteriors import DiagonalGaussian, gaussian_log_density
from textvae.models.priors import StandardNormal


def has_kl_per_dim(model) -> bool:
    """The KL splits over dimensions only for a Gaussian posterior and the standard-normal prior."""
    return model.stochastic and isinstance(model.prior, StandardNormal)


@torch.inference_mode()
def encode_posteriors(model, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One encoder pass: the posterior means [N, Z] and log-variances [N, Z] (None for a deterministic
    encoder) of every document, in split order whatever the loader's order (`batch.index`)."""
    model.eval()
    device = model_device(model)
    means, logvars, order = [], [], []
    for batch in loader:
        batch = batch.to(device)
        posterior = model.encode(batch.data, batch.lengths)
        means.append(posterior.mean.cpu())
        if posterior.stochastic:
            logvars.append(posterior.logvar.cpu())
        order.append(batch.index.cpu())
    place = torch.cat(order).argsort()  # the loader position of each document, in split order
    return torch.cat(means)[place], (torch.cat(logvars)[place] if logvars else None)


def posterior_kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean KL(q(z|x) || N(0, I)) of each dimension over the documents, [Z]."""
    return DiagonalGaussian(mean, logvar).kl().mean(0)


def encode_split(model, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Posterior means [N, Z] in split order and the mean KL of each dimension [Z] (None if undefined)."""
    means, logvars = encode_posteriors(model, loader)
    return means, (posterior_kl_per_dim(means, logvars) if has_kl_per_dim(model) else None)


def kl_per_dim(model, loader: DataLoader) -> torch.Tensor | None:
    """Mean KL(q(z|x) || N(0, I)) of each latent dimension over the documents, [Z] (None if undefined)."""
    return encode_split(model, loader)[1]


def batch_mutual_information(posterior) -> float:
    """He et al.'s MI estimate on one batch: E[log q(z|x)] - E[log q(z)], q(z) ≈ the batch's mixture.

    The aggregate posterior is approximated by the batch's own posteriors, so the estimate is
    bounded by log(batch size) and can be slightly negative when the latent is unused.
    """
    mean, logvar = posterior.mean, posterior.logvar
    batch = mean.shape[0]
    neg_entropy = -posterior.entropy().mean()
    z = posterior.rsample(1)  # [B, 1, Z]
    log_density = gaussian_log_density(z, mean.unsqueeze(0), logvar.unsqueeze(0))  # [B, B]: log q(z_i | x_j)
    log_qz = torch.logsumexp(log_density, dim=1) - math.log(batch)
    return (neg_entropy - log_qz.mean()).item()


@torch.inference_mode()
def mutual_information(model, loader: DataLoader, seed: int = 0) -> float:
    """He et al.'s MI over a loader: per-batch estimates weighted by batch size."""
    model.eval()
    device = model_device(model)
    total, n = 0.0, 0
    with seeded(seed, device):
        for batch in loader:
            batch = batch.to(device)
            total += batch_mutual_information(model.encode(batch.data, batch.lengths)) * len(batch)
            n += len(batch)
    return total / n


def grouped_mutual_information(mean: torch.Tensor, logvar: torch.Tensor, batch_size: int, seed: int = 0) -> float:
    """He et al.'s MI from posteriors already computed: per-group estimates over consecutive groups of
    `batch_size` documents (their batches in file order), weighted by group size."""
    total = 0.0
    with seeded(seed):
        for start in range(0, len(mean), batch_size):
            group = DiagonalGaussian(mean[start : start + batch_size], logvar[start : start + batch_size])
            total += batch_mutual_information(group) * len(group.mean)
    return total / len(mean)


def count_active_units(means: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Number of dimensions with Cov_x(E_q[z|x]) >= threshold, and the per-dimension variances."""
    variances = means.var(dim=0, unbiased=True) if len(means) > 1 else torch.zeros(means.shape[1])
    return int((variances >= threshold).sum().item()), variances


def active_units(model, loader: DataLoader, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Active units of the posterior means over a loader (He et al.'s AU)."""
    return count_active_units(encode_split(model, loader)[0], threshold)
