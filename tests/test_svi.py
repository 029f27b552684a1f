"""SVI on posterior parameters: convergence, and dλ_K/dλ_0 checked against closed forms and between modes."""

from __future__ import annotations

import pytest
import torch

from textvae.config import ElboConfig, ModelConfig, SVIConfig
from textvae.data.batching import collate
from textvae.inference.svi import clip_per_document, refine, refine_differentiable
from textvae.models.model import build_model
from textvae.models.posteriors import DiagonalGaussian
from textvae.objectives import build_objective

pytestmark = pytest.mark.usefixtures("torch_single_thread")

MODES = ("exact", "finite_difference")
DOCS = [[5, 9, 13], [20, 4, 4, 7, 28], [11], [6, 6, 17, 25, 9, 12, 3 + 20]]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


class Quadratic:
    """f_b(λ) = ½ (λ_b - c_b)ᵀ A_b (λ_b - c_b) per document, A_b symmetric positive definite [2Z, 2Z]."""

    def __init__(self, docs: int = 3, latent: int = 2, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        dim = 2 * latent
        basis = torch.randn(docs, dim, dim, generator=gen, dtype=torch.float64)
        self.curvature = basis @ basis.transpose(1, 2) / dim + 0.3 * torch.eye(dim, dtype=torch.float64)
        self.optimum = torch.randn(docs, dim, generator=gen, dtype=torch.float64)

    def __call__(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        err = torch.cat([mean, logvar], dim=-1) - self.optimum
        return 0.5 * torch.einsum("bi,bij,bj->b", err, self.curvature, err)

    def start(self, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        lam0 = self.optimum + scale * torch.ones_like(self.optimum)
        return lam0.chunk(2, dim=-1)

    def unclipped_jacobian(self, cfg: SVIConfig) -> torch.Tensor:
        """dλ_K/dλ_0 per document: the momentum recursion is linear, (e_K, v_K) = M^K (e_0, 0) with e = λ - c."""
        a = self.curvature
        eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
        step = torch.cat(
            [
                torch.cat([eye - cfg.lr * a, -cfg.lr * cfg.momentum * eye], dim=-1),
                torch.cat([a, cfg.momentum * eye], dim=-1),
            ],
            dim=-2,
        )
        dim = a.shape[-1]
        return torch.linalg.matrix_power(step, cfg.steps)[:, :dim, :dim]


def brute_force_jacobian(f: Quadratic, cfg: SVIConfig, mean0: torch.Tensor, logvar0: torch.Tensor) -> torch.Tensor:
    """dλ_K/dλ_0 per document by central differences of `refine`'s output over each coordinate of λ_0."""
    lam0 = torch.cat([mean0, logvar0], dim=-1)
    columns = []
    for i in range(lam0.shape[-1]):
        delta = torch.zeros_like(lam0)
        delta[:, i] = 1e-6
        plus, minus = (refine(f, *(lam0 + s * delta).chunk(2, dim=-1), cfg) for s in (1, -1))
        columns.append((torch.cat(plus[:2], -1) - torch.cat(minus[:2], -1)) / 2e-6)
    return torch.stack(columns, dim=-1)


def pulled_back(trace, d_lam: torch.Tensor) -> torch.Tensor:
    return torch.cat(trace.backward(*d_lam.chunk(2, dim=-1)), dim=-1)


def test_refine_converges_to_the_optimum_of_a_quadratic():
    f = Quadratic()
    mean0, logvar0 = f.start(scale=20.0)  # far away: the clip is active in the first steps
    cfg = SVIConfig(steps=300, lr=0.5, momentum=0.5, clip=5.0)
    assert clip_per_document(torch.cat([mean0, logvar0], -1) - f.optimum, 5.0).norm(dim=-1).max() <= 5.0 + 1e-9
    with torch.no_grad():  # refine turns gradients on itself
        out = refine(f, mean0, logvar0, cfg)
    assert torch.allclose(torch.cat([out.mean, out.logvar], -1), f.optimum, atol=1e-8)
    assert out.loss_start > 100 and out.loss_end < 1e-12
    assert not out.mean.requires_grad


@pytest.mark.parametrize("mode", MODES)
def test_unclipped_gradient_matches_the_closed_form(mode):
    f = Quadratic()
    cfg = SVIConfig(steps=6, lr=0.4, momentum=0.6, clip=None, hvp=mode)
    d_lam = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    trace = refine_differentiable(f, *f.start(), cfg)
    expected = torch.einsum("bij,bi->bj", f.unclipped_jacobian(cfg), d_lam)  # Jᵀ d per document
    assert relative_error(pulled_back(trace, d_lam), expected) < 1e-6


@pytest.mark.parametrize("mode", MODES)
def test_clipped_gradient_matches_brute_force(mode):
    """Far from the optimum every document's gradient is clipped for a few steps, then no longer."""
    f = Quadratic()
    mean0, logvar0 = f.start(scale=2.0)
    cfg = SVIConfig(steps=6, lr=0.4, momentum=0.6, clip=1.0, hvp=mode)
    grad0 = torch.einsum("bij,bj->bi", f.curvature, torch.cat([mean0, logvar0], -1) - f.optimum)
    assert grad0.norm(dim=-1).min() > 1.0
    jacobian = brute_force_jacobian(f, cfg, mean0, logvar0)
    assert relative_error(jacobian, f.unclipped_jacobian(cfg)) > 0.1  # the clip really changes the answer
    d_lam = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    trace = refine_differentiable(f, mean0, logvar0, cfg)
    assert relative_error(pulled_back(trace, d_lam), torch.einsum("bij,bi->bj", jacobian, d_lam)) < 1e-5


@pytest.fixture(scope="module")
def model_loss():
    """A tiny LSTM VAE in float64 (float32 finite differences are too noisy for a 1e-3 check), dropout on."""
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=3, embed_dim=8, hidden_dim=16, dropout_in=0.3, dropout_out=0.3, init_scale=0.5)
    model = build_model(cfg, 30).double().train()
    model.decoder.fused_loss = False  # exact Hessian-vector products need double backward: plain logits
    batch = collate(list(enumerate(DOCS)))
    objective = build_objective(ElboConfig(), 10, 1)

    def loss_fn(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return objective.example_losses(model, batch, DiagonalGaussian(mean, logvar), 0)

    return model, batch, loss_fn


def encoder_gradients(model, batch, loss_fn, cfg: SVIConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dλ_0 and the encoder's gradient for L = Σ λ_K · w (fixed w), from a fixed seed."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    posterior = model.encode(batch.tokens, batch.lengths)
    trace = refine_differentiable(loss_fn, posterior.mean, posterior.logvar, cfg)
    rng_after_forward = torch.get_rng_state()
    weights = torch.linspace(-1, 1, 2 * trace.mean.numel(), dtype=torch.float64).view(len(batch), -1)
    d0 = trace.backward(*weights.chunk(2, dim=-1))
    assert all(p.grad is None for p in model.parameters())  # only λ_0 gets a gradient
    assert torch.equal(torch.get_rng_state(), rng_after_forward)  # replays leave the random state alone
    torch.autograd.backward([posterior.mean, posterior.logvar], d0)
    return torch.cat(d0, -1), torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


@pytest.mark.parametrize("clip", [None, 0.6])
@pytest.mark.parametrize(("scheme", "fd_eps"), [("forward", 1e-6), ("central", 1e-3)])  # float64 model
def test_finite_differences_match_double_backward_on_an_lstm_vae(model_loss, clip, scheme, fd_eps):
    model, batch, loss_fn = model_loss
    if clip is not None:  # the clip is active at λ_0 for some documents and not for others
        torch.manual_seed(3)
        posterior = model.encode(batch.tokens, batch.lengths)
        lam = torch.cat([posterior.mean, posterior.logvar], -1).detach().requires_grad_()
        (grad,) = torch.autograd.grad(loss_fn(*lam.chunk(2, -1)).sum(), lam)
        norms = grad.norm(dim=-1)
        assert norms.max() > clip > norms.min()
    cfg = SVIConfig(steps=4, lr=0.5, momentum=0.5, clip=clip)
    exact = encoder_gradients(model, batch, loss_fn, cfg)
    fd = cfg.model_copy(update={"hvp": "finite_difference", "fd_scheme": scheme, "fd_eps": fd_eps})
    approx = encoder_gradients(model, batch, loss_fn, fd)
    for a, b in zip(approx, exact):
        assert relative_error(a, b) < 1e-3


def test_svi_lowers_the_expected_loss_of_an_lstm_vae(model_loss):
    """Averaged over z noise (eval mode: no dropout), 30 SVI steps lower each document's -ELBO."""
    model, batch, loss_fn = model_loss
    model.eval()
    try:
        torch.manual_seed(4)
        with torch.no_grad():
            posterior = model.encode(batch.tokens, batch.lengths)
        out = refine(loss_fn, posterior.mean, posterior.logvar, SVIConfig(steps=30, lr=0.5))

        def expected(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.stack([loss_fn(mean, logvar) for _ in range(200)]).mean(0)

        assert torch.all(expected(out.mean, out.logvar) < expected(posterior.mean, posterior.logvar) - 0.1)
    finally:
        model.train()
