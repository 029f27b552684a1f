"""Maximum mean discrepancy between samples (Gretton et al. 2012), with the kernels of WAE-MMD.

Kernels act on squared distances and are summed over bandwidths C = 2·d·s for each scale s, d the
latent size (a prior of unit variance), as in Tolstikhin et al. (2018)'s WAE experiments:
inverse multiquadratic C / (C + |x-y|²) and RBF exp(-|x-y|² / C).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from textvae.config import KernelConfig

KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "imq": lambda sq, c: c / (c + sq),
    "rbf": lambda sq, c: torch.exp(-sq / c),
}


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j|² for x [n, d], y [m, d] -> [n, m] (clamped at 0 against rounding)."""
    sq = x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1) - 2.0 * x @ y.T
    return sq.clamp(min=0.0)


def kernel_matrix(x: torch.Tensor, y: torch.Tensor, cfg: KernelConfig) -> torch.Tensor:
    """k(x_i, y_j) summed over the bandwidths C = 2·d·scale, [n, m]."""
    scales = torch.tensor(cfg.scales, dtype=x.dtype, device=x.device)
    bandwidths = (2.0 * x.shape[-1] * scales).view(-1, 1, 1)
    return KERNELS[cfg.kernel](squared_distances(x, y).unsqueeze(0), bandwidths).sum(0)


def _blocks(x: torch.Tensor, y: torch.Tensor, cfg: KernelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K_xx, K_yy, K_xy from one kernel matrix over the pooled sample."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"samples must be [n, d] and [m, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    n = x.shape[0]
    pooled = torch.cat([x, y])
    k = kernel_matrix(pooled, pooled, cfg)
    return k[:n, :n], k[n:, n:], k[:n, n:]


def mmd_unbiased(x: torch.Tensor, y: torch.Tensor, cfg: KernelConfig) -> torch.Tensor:
    """Unbiased U-statistic estimate of MMD²(P, Q) from x ~ P [n, d] and y ~ Q [m, d] (n, m >= 2).

    Gretton et al. (2012), Lemma 6: the within-sample sums leave out i = j; the estimate can be negative.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples on each side (got {n} and {m})")
    kxx, kyy, kxy = _blocks(x, y, cfg)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2.0 * kxy.mean()


def mmd_unbiased_mixture(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, cfg: KernelConfig) -> torch.Tensor:
    """Unbiased MMD² between x ~ P [n, d] and a mixture Q = Σ_k w_k Q_k given m >= 2 samples of each component
    (y [K, m, d]) and the weights w [K].

    Every expectation under Q is the w-weighted sum of per-component U-statistics, so the estimate is
    differentiable in the weights (a learnable mixture prior learns them); with K = 1 it is `mmd_unbiased`.
    """
    groups, m, d = y.shape
    n = x.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples of P and of each component (got {n} and {m})")
    kxx, kyy, kxy = _blocks(x, y.reshape(groups * m, d), cfg)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    pair_sums = kyy.view(groups, m, groups, m).sum((1, 3))  # [K, K]
    same = torch.diag_embed(kyy.diagonal().view(groups, m).sum(1))  # the i = j terms, inside each component
    pairs = torch.full((groups, groups), float(m * m), dtype=x.dtype, device=x.device)
    pairs.fill_diagonal_(m * (m - 1))
    within_y = weights @ ((pair_sums - same) / pairs) @ weights
    cross = kxy.view(n, groups, m).mean((0, 2)) @ weights
    return within_x + within_y - 2.0 * cross


def mmd_biased(x: torch.Tensor, y: torch.Tensor, cfg: KernelConfig) -> torch.Tensor:
    """Biased V-statistic estimate of MMD² (diagonal terms included): the squared RKHS distance of the
    empirical mean embeddings, never negative."""
    kxx, kyy, kxy = _blocks(x, y, cfg)
    return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
