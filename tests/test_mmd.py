"""MMD kernels and estimators (Gretton et al. 2012; Tolstikhin et al. 2018's kernels and bandwidths)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from textvae.config import KernelConfig
from textvae.objectives.mmd import kernel_matrix, mmd_biased, mmd_unbiased, mmd_unbiased_mixture

KERNELS = [KernelConfig(kernel="imq"), KernelConfig(kernel="rbf")]


def gaussian(n: int, d: int, mean: float | torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    return mean + std * torch.randn(n, d, generator=gen, dtype=torch.float64)


def repeated(estimate, repeats: int, seed: int, **sample) -> torch.Tensor:
    """`repeats` independent values of estimate(x, y), x ~ N(mean_x, std_x²I) [n, d], y ~ N(mean_y, std_y²I) [m, d]."""
    gen = torch.Generator().manual_seed(seed)
    n, m, d = sample["n"], sample["m"], sample["d"]
    return torch.stack(
        [
            estimate(
                gaussian(n, d, sample.get("mean_x", 0.0), sample.get("std_x", 1.0), gen),
                gaussian(m, d, sample.get("mean_y", 0.0), sample.get("std_y", 1.0), gen),
            )
            for _ in range(repeats)
        ]
    )


def standard_error(values: torch.Tensor) -> float:
    return (values.std() / math.sqrt(len(values))).item()


def test_bandwidths_are_two_d_times_each_scale():
    """d = 2, scales 1 and 3: C = 4 and 12; points at squared distance 4."""
    x, y = torch.zeros(1, 2), torch.tensor([[2.0, 0.0]])
    imq = kernel_matrix(x, y, KernelConfig(kernel="imq", scales=[1.0, 3.0]))
    rbf = kernel_matrix(x, y, KernelConfig(kernel="rbf", scales=[1.0, 3.0]))
    assert imq.item() == pytest.approx(4 / 8 + 12 / 16)
    assert rbf.item() == pytest.approx(math.exp(-1) + math.exp(-1 / 3))


@pytest.mark.parametrize("cfg", KERNELS, ids=lambda c: c.kernel)
def test_same_distribution_gives_zero_on_average(cfg):
    values = repeated(lambda x, y: mmd_unbiased(x, y, cfg), 200, seed=0, n=30, m=40, d=4)
    assert abs(values.mean().item()) < 3 * standard_error(values)


@pytest.mark.parametrize("cfg", KERNELS, ids=lambda c: c.kernel)
def test_mmd_grows_with_the_distance_between_means(cfg):
    shifts = [0.25, 0.5, 1.0, 2.0, 4.0]
    means = []
    for shift in shifts:
        values = repeated(lambda x, y: mmd_unbiased(x, y, cfg), 30, seed=1, n=50, m=50, d=4, mean_y=shift)
        means.append((values.mean().item(), standard_error(values)))
    assert means[0][0] > 3 * means[0][1]  # already clearly positive at a quarter of a standard deviation
    for (smaller, se_a), (larger, se_b) in zip(means, means[1:]):
        assert larger - smaller > 3 * math.hypot(se_a, se_b)


def expected_rbf(diff_mean: torch.Tensor, var: float, d: int, bandwidth: float) -> float:
    """E exp(-|w|²/C) for w ~ N(m, var·I) in d dimensions."""
    return (1 + 2 * var / bandwidth) ** (-d / 2) * math.exp(-diff_mean.pow(2).sum().item() / (bandwidth + 2 * var))


def closed_form_rbf_mmd(mu_x: torch.Tensor, std_x: float, mu_y: torch.Tensor, std_y: float, cfg: KernelConfig) -> float:
    d = len(mu_x)
    total = 0.0
    for scale in cfg.scales:
        c = 2 * d * scale
        zero = torch.zeros(d, dtype=torch.float64)
        total += expected_rbf(zero, 2 * std_x**2, d, c) + expected_rbf(zero, 2 * std_y**2, d, c)
        total -= 2 * expected_rbf(mu_x - mu_y, std_x**2 + std_y**2, d, c)
    return total


def test_unbiased_estimate_matches_the_closed_form_and_the_biased_one_does_not():
    cfg = KernelConfig(kernel="rbf", scales=[0.2, 1.0, 5.0])
    mu_x = torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)
    mu_y = torch.tensor([0.5, 0.0, -0.2], dtype=torch.float64)
    truth = closed_form_rbf_mmd(mu_x, 1.0, mu_y, 0.6, cfg)
    sample = dict(n=8, m=10, d=3, mean_x=mu_x, std_x=1.0, mean_y=mu_y, std_y=0.6)
    unbiased = repeated(lambda x, y: mmd_unbiased(x, y, cfg), 2000, seed=2, **sample)
    biased = repeated(lambda x, y: mmd_biased(x, y, cfg), 2000, seed=2, **sample)
    assert abs(unbiased.mean().item() - truth) < 3 * standard_error(unbiased)
    assert biased.mean().item() - truth > 10 * standard_error(biased)  # the V-statistic is biased upwards


def test_unbiased_estimate_can_be_negative_the_biased_one_cannot():
    cfg = KernelConfig(kernel="imq")
    unbiased = repeated(lambda x, y: mmd_unbiased(x, y, cfg), 50, seed=3, n=10, m=10, d=2)
    biased = repeated(lambda x, y: mmd_biased(x, y, cfg), 50, seed=3, n=10, m=10, d=2)
    assert (unbiased < 0).any()
    assert (biased >= -1e-12).all()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    m=st.integers(2, 12),
    d=st.integers(1, 5),
    kernel=st.sampled_from(["imq", "rbf"]),
    shift=st.floats(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_estimates_are_symmetric_and_the_biased_one_is_not_negative(n, m, d, kernel, shift, seed):
    cfg = KernelConfig(kernel=kernel)
    gen = torch.Generator().manual_seed(seed)
    x, y = gaussian(n, d, 0.0, 1.0, gen), gaussian(m, d, shift, 1.5, gen)
    assert mmd_unbiased(x, y, cfg).item() == pytest.approx(mmd_unbiased(y, x, cfg).item(), abs=1e-12)
    assert mmd_biased(x, y, cfg).item() == pytest.approx(mmd_biased(y, x, cfg).item(), abs=1e-12)
    assert mmd_biased(x, y, cfg).item() >= -1e-12


@pytest.mark.parametrize("cfg", KERNELS, ids=lambda c: c.kernel)
def test_gradients_are_finite_even_for_repeated_points(cfg):
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    mmd_unbiased(x, y, cfg).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad.abs().sum() > 0


def test_bad_shapes_and_too_few_samples_are_errors():
    cfg = KernelConfig()
    with pytest.raises(ValueError, match="at least 2"):
        mmd_unbiased(torch.zeros(1, 2), torch.zeros(3, 2), cfg)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        mmd_unbiased(torch.zeros(3, 2), torch.zeros(3, 4), cfg)


def closed_form_rbf_mmd_to_mixture(mu_x, std_x, means, stds, weights, cfg: KernelConfig) -> float:
    """MMD² between N(mu_x, std_x²I) and Σ_k w_k N(means_k, stds_k²I) under the RBF kernel, in closed form."""
    d = len(mu_x)
    total = 0.0
    for scale in cfg.scales:
        c = 2 * d * scale
        total += expected_rbf(torch.zeros(d, dtype=torch.float64), 2 * std_x**2, d, c)
        for mu_k, s_k, w_k in zip(means, stds, weights):
            total -= 2 * w_k * expected_rbf(mu_x - mu_k, std_x**2 + s_k**2, d, c)
            for mu_l, s_l, w_l in zip(means, stds, weights):
                total += w_k * w_l * expected_rbf(mu_k - mu_l, s_k**2 + s_l**2, d, c)
    return total


def test_mixture_estimate_matches_the_closed_form():
    """Weighted per-component U-statistics average to the MMD² against the mixture (2,000 repeats)."""
    cfg = KernelConfig(kernel="rbf", scales=[0.5, 2.0])
    mu_x = torch.tensor([0.2, -0.1], dtype=torch.float64)
    means = torch.tensor([[-1.5, 0.0], [1.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    stds, weights = [0.5, 1.0, 0.3], torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    truth = closed_form_rbf_mmd_to_mixture(mu_x, 1.0, means, stds, weights.tolist(), cfg)
    gen = torch.Generator().manual_seed(4)
    values = []
    for _ in range(2000):
        x = mu_x + torch.randn(8, 2, generator=gen, dtype=torch.float64)
        y = means.unsqueeze(1) + torch.randn(3, 4, 2, generator=gen, dtype=torch.float64) * torch.tensor(stds).view(
            3, 1, 1
        )
        values.append(mmd_unbiased_mixture(x, y, weights, cfg).item())
    values = torch.tensor(values)
    assert truth > 0.05 and abs(values.mean().item() - truth) < 3 * standard_error(values)


def test_one_component_mixture_is_the_plain_estimate_and_weights_get_gradients():
    cfg = KernelConfig()
    x, y = torch.randn(6, 3), torch.randn(1, 5, 3)
    one = mmd_unbiased_mixture(x, y, torch.ones(1), cfg)
    assert torch.allclose(one, mmd_unbiased(x, y[0], cfg))
    logits = torch.zeros(2, requires_grad=True)
    two = torch.stack([torch.randn(5, 3), torch.randn(5, 3) + 3.0])  # a far component: the weights matter
    mmd_unbiased_mixture(x, two, torch.softmax(logits, 0), cfg).backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        mmd_unbiased_mixture(x, torch.randn(2, 1, 3), torch.ones(2) / 2, cfg)
