"""The reference point of `benchmarks/speed.py --baseline`: He et al.'s LSTM VAE written the way research code
usually is (jxhe/vae-lagging-encoder, harvardnlp/sa-vae), self-contained and fp32.

The architecture is textvae's `lstm_vae`: an LSTM encoder whose state at </s> gives q(z|x) = N(mean, exp(logvar));
an LSTM decoder reading [embedding; z] with c0 = W z, h0 = tanh(c0), dropout on its input and output; the
reconstruction is F.cross_entropy over all positions summed per sentence, the KL in closed form; SGD with the
gradient norm clipped. Nothing is optimised: no denormal flushing, no mixed precision, a joint step and an
aggressive inner step both back-propagate into every parameter (the inner step then steps the encoder only),
SA-VAE unrolls its SVI steps in Python, IW-NLL scores one sentence at a time in chunks of 100 samples (re-encoding
it for each chunk), MI and AU follow He et al.'s calc_mi (per batch) and calc_au (two passes over the data).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.config import SVIConfig
from textvae.data.batching import TextBatch

PAD = 0  # textvae's padding id: the benchmark feeds the same TextBatch tensors to both implementations
LOG_2PI = math.log(2 * math.pi)


def reparameterize(mean: Tensor, logvar: Tensor, n: int) -> Tensor:
    """n samples z ~ N(mean, exp(logvar)) per row: [B, Z] -> [B, n, Z]."""
    std = (0.5 * logvar).exp().unsqueeze(1)
    eps = torch.randn(mean.shape[0], n, mean.shape[1], device=mean.device)
    return mean.unsqueeze(1) + eps * std


def log_density(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, exp(logvar)) summed over dimensions (broadcasting)."""
    return -0.5 * ((z - mean) ** 2 / logvar.exp() + logvar + LOG_2PI).sum(-1)


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.linear = nn.Linear(hidden_dim, 2 * latent_dim)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        out, _ = self.lstm(self.embed(tokens))
        last = out[torch.arange(out.shape[0], device=out.device), lengths + 1]  # the state at </s>
        mean, logvar = self.linear(last).chunk(2, -1)
        return mean, logvar

    def sample(self, tokens: Tensor, lengths: Tensor, n: int) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        mean, logvar = self(tokens, lengths)
        return reparameterize(mean, logvar, n), (mean, logvar)


class Decoder(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int, dropout_in, dropout_out):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout_in = nn.Dropout(dropout_in)
        self.dropout_out = nn.Dropout(dropout_out)
        self.trans_linear = nn.Linear(latent_dim, hidden_dim, bias=False)
        self.lstm = nn.LSTM(embed_dim + latent_dim, hidden_dim, batch_first=True)
        self.pred_linear = nn.Linear(hidden_dim, vocab_size)

    def reconstruct_error(self, tokens: Tensor, z: Tensor) -> Tensor:
        """-log p(x|z) per sentence and sample: tokens [B, T], z [B, n, Z] -> [B, n]."""
        src, tgt = tokens[:, :-1], tokens[:, 1:]
        batch, n, latent = z.shape
        steps = src.shape[1]
        emb = self.dropout_in(self.embed(src))
        emb = emb.unsqueeze(1).expand(batch, n, steps, emb.shape[-1]).reshape(batch * n, steps, -1)
        z = z.reshape(batch * n, latent)
        inputs = torch.cat([emb, z.unsqueeze(1).expand(batch * n, steps, latent)], -1)
        c0 = self.trans_linear(z).unsqueeze(0)
        out, _ = self.lstm(inputs, (torch.tanh(c0), c0))
        logits = self.pred_linear(self.dropout_out(out))
        tgt = tgt.unsqueeze(1).expand(batch, n, steps).reshape(-1)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt, ignore_index=PAD, reduction="none")
        return loss.view(batch, n, steps).sum(-1)


class BaselineVAE(nn.Module):
    """Encoder + decoder with He et al.'s uniform initialisation."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        latent_dim: int,
        dropout_in: float = 0.5,
        dropout_out: float = 0.5,
        init_scale: float = 0.01,
        embed_init_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(vocab_size, embed_dim, hidden_dim, latent_dim)
        self.decoder = Decoder(vocab_size, embed_dim, hidden_dim, latent_dim, dropout_in, dropout_out)
        for param in self.parameters():
            nn.init.uniform_(param, -init_scale, init_scale)
        for embed in (self.encoder.embed, self.decoder.embed):
            nn.init.uniform_(embed.weight, -embed_init_scale, embed_init_scale)

    @staticmethod
    def kl(mean: Tensor, logvar: Tensor) -> Tensor:
        return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(-1)

    def loss(self, tokens: Tensor, lengths: Tensor, kl_weight: float = 1.0) -> Tensor:
        """-ELBO per sentence with one z, [B]."""
        z, (mean, logvar) = self.encoder.sample(tokens, lengths, 1)
        return self.decoder.reconstruct_error(tokens, z).mean(1) + kl_weight * self.kl(mean, logvar)

    def loss_at(self, tokens: Tensor, lam: Tensor) -> Tensor:
        """-ELBO per sentence for q(z|x) given by lam = [mean; logvar] (SA-VAE's SVI objective), [B]."""
        mean, logvar = lam.chunk(2, -1)
        z = reparameterize(mean, logvar, 1)
        return self.decoder.reconstruct_error(tokens, z).mean(1) + self.kl(mean, logvar)

    def nll_iw(self, tokens: Tensor, lengths: Tensor, k: int, chunk: int = 100) -> Tensor:
        """He et al.'s IW bound -log p(x) with k samples, `chunk` at a time (the encoder re-run per chunk), [B]."""
        log_w = []
        for start in range(0, k, chunk):
            z, (mean, logvar) = self.encoder.sample(tokens, lengths, min(chunk, k - start))
            log_joint = -self.decoder.reconstruct_error(tokens, z) + log_density(z, torch.zeros_like(z), z.new_zeros(1))
            log_w.append(log_joint - log_density(z, mean.unsqueeze(1), logvar.unsqueeze(1)))
        return -(torch.logsumexp(torch.cat(log_w, 1), 1) - math.log(k))


class BaselineTrainer:
    """He et al.'s two SGD optimisers (encoder, decoder) and the three kinds of training step."""

    def __init__(self, model: BaselineVAE, lr: float = 1.0, clip: float = 5.0) -> None:
        self.model = model
        self.clip = clip
        self.enc_optimizer = torch.optim.SGD(model.encoder.parameters(), lr=lr)
        self.dec_optimizer = torch.optim.SGD(model.decoder.parameters(), lr=lr)

    def _zero_grad(self) -> None:
        self.enc_optimizer.zero_grad()
        self.dec_optimizer.zero_grad()

    def joint_step(self, batch: TextBatch) -> float:
        return self._step(batch, decoder=True)

    def inner_step(self, batch: TextBatch) -> float:
        """One aggressive encoder-only step as He et al.'s text.py: full backward, the encoder steps."""
        return self._step(batch, decoder=False)

    def _step(self, batch: TextBatch, decoder: bool) -> float:
        self._zero_grad()
        loss = self.model.loss(batch.tokens, batch.lengths).mean()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.enc_optimizer.step()
        if decoder:
            self.dec_optimizer.step()
        return loss.item()

    def savae_step(self, batch: TextBatch, svi: SVIConfig) -> float:
        """SA-VAE: SVI from the encoder's (mean, logvar), the decoder trained at the refined posterior, the encoder
        through the unrolled steps (exact double backward, or Kim et al.'s finite-difference reverse pass)."""
        tokens = batch.tokens
        lam0 = torch.cat(self.model.encoder(tokens, batch.lengths), -1)
        unroll = unroll_exact if svi.hvp == "exact" else unroll_finite_difference
        lam_k, pullback = unroll(self.model, tokens, lam0.detach(), svi)
        lam_k = lam_k.detach().requires_grad_()
        self._zero_grad()
        loss = self.model.loss_at(tokens, lam_k).mean()
        loss.backward()
        lam0.backward(pullback(lam_k.grad))
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.enc_optimizer.step()
        self.dec_optimizer.step()
        return loss.item()


def clip_rows(grad: Tensor, max_norm: float | None) -> Tensor:
    if max_norm is None:
        return grad
    return grad * (max_norm / grad.norm(dim=-1, keepdim=True).clamp_min(max_norm))


def unroll_exact(model: BaselineVAE, tokens: Tensor, lam0: Tensor, svi: SVIConfig):
    """Momentum SVI with create_graph=True, then dL/dlam_0 = autograd.grad through all the steps."""
    lam0.requires_grad_()
    lam, velocity = lam0, torch.zeros_like(lam0)
    for _ in range(svi.steps):
        (grad,) = torch.autograd.grad(model.loss_at(tokens, lam).sum(), lam, create_graph=True)
        velocity = svi.momentum * velocity + clip_rows(grad, svi.clip)
        lam = lam - svi.lr * velocity
    return lam, lambda d_lam: torch.autograd.grad(lam, lam0, d_lam)[0]


def unroll_finite_difference(model: BaselineVAE, tokens: Tensor, lam0: Tensor, svi: SVIConfig):
    """Momentum SVI keeping each step's (lam, grad, RNG state); the reverse pass uses finite-difference
    Hessian-vector products with the step's randomness replayed (harvardnlp/sa-vae's optim_n2n)."""
    steps = []
    lam, velocity = lam0, torch.zeros_like(lam0)
    for _ in range(svi.steps):
        lam = lam.detach().requires_grad_()
        rng = torch.get_rng_state(), torch.cuda.get_rng_state() if lam.is_cuda else None
        (grad,) = torch.autograd.grad(model.loss_at(tokens, lam).sum(), lam)
        steps.append((lam.detach(), grad, rng))
        velocity = svi.momentum * velocity + clip_rows(grad, svi.clip)
        lam = lam - svi.lr * velocity

    def gradient_at(lam: Tensor, rng) -> Tensor:
        with torch.random.fork_rng(devices=[lam.device] if lam.is_cuda else []):
            torch.set_rng_state(rng[0])
            if rng[1] is not None:
                torch.cuda.set_rng_state(rng[1])
            lam = lam.detach().requires_grad_()
            return torch.autograd.grad(model.loss_at(tokens, lam).sum(), lam)[0]

    def pullback(d_lam: Tensor) -> Tensor:
        d_velocity = torch.zeros_like(d_lam)
        for lam, grad, rng in reversed(steps):
            d_velocity = d_velocity - svi.lr * d_lam
            g = grad.detach().requires_grad_()
            (u,) = torch.autograd.grad(clip_rows(g, svi.clip), g, d_velocity)
            eps = svi.fd_eps / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            d_lam = d_lam + (gradient_at(lam + eps * u, rng) - grad) / eps
            d_velocity = svi.momentum * d_velocity
        return d_lam

    return lam, pullback


@torch.no_grad()
def iw_nll(model: BaselineVAE, batches: Iterable[TextBatch], k: int, chunk: int = 100) -> float:
    """Mean IW-NLL, one sentence at a time (batch size 1, as He et al.'s calc_iwnll)."""
    model.eval()
    total, n = 0.0, 0
    for batch in batches:
        for row in range(len(batch)):
            length = int(batch.lengths[row])
            tokens = batch.tokens[row : row + 1, : length + 2]
            total += model.nll_iw(tokens, batch.lengths[row : row + 1], k, chunk).sum().item()
            n += 1
    return total / n


def batch_mi(mean: Tensor, logvar: Tensor) -> float:
    """E[log q(z|x)] - E[log q(z)] on one batch, q(z) the batch's mixture of posteriors."""
    batch, latent = mean.shape
    neg_entropy = (-0.5 * latent * LOG_2PI - 0.5 * (1 + logvar).sum(-1)).mean()
    z = reparameterize(mean, logvar, 1)  # [B, 1, Z]
    log_qz_x = log_density(z, mean.unsqueeze(0), logvar.unsqueeze(0))  # [B, B]
    log_qz = torch.logsumexp(log_qz_x, dim=1) - math.log(batch)
    return (neg_entropy - log_qz.mean()).item()


@torch.no_grad()
def calc_mi(model: BaselineVAE, batches: list[TextBatch]) -> float:
    model.eval()
    total, n = 0.0, 0
    for batch in batches:
        total += batch_mi(*model.encoder(batch.tokens, batch.lengths)) * len(batch)
        n += len(batch)
    return total / n


@torch.no_grad()
def calc_au(model: BaselineVAE, batches: list[TextBatch], threshold: float = 0.01) -> int:
    """Active units: dimensions whose posterior mean varies across sentences by >= threshold (two passes)."""
    model.eval()
    total, n = 0.0, 0
    for batch in batches:
        total = total + model.encoder(batch.tokens, batch.lengths)[0].sum(0)
        n += len(batch)
    mean_of_means = total / n
    squares = 0.0
    for batch in batches:
        squares = squares + ((model.encoder(batch.tokens, batch.lengths)[0] - mean_of_means) ** 2).sum(0)
    variance = squares / max(n - 1, 1)
    return int((variance >= threshold).sum().item())
