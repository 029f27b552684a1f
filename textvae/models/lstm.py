"""He et al. (2019) LSTM encoder and decoder for sentences and documents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from textvae.data.tokenizers import PAD
from textvae.models.posteriors import DiagonalGaussian


def uniform_init(module: nn.Module, scale: float, embed_scale: float) -> None:
    """He et al.'s init: every parameter U(-scale, scale), embeddings U(-embed_scale, embed_scale)."""
    for param in module.parameters():
        nn.init.uniform_(param, -scale, scale)
    for sub in module.modules():
        if isinstance(sub, nn.Embedding):
            nn.init.uniform_(sub.weight, -embed_scale, embed_scale)


class LSTMEncoder(nn.Module):
    """Reads <s> x </s>; the final hidden state gives the Gaussian's mean and log-variance."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=None)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.to_posterior = nn.Linear(hidden_dim, 2 * latent_dim, bias=False)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> DiagonalGaussian:
        out, _ = self.lstm(self.embed(tokens))
        # position of </s> is length + 1; padding after it cannot reach it (causal LSTM)
        last = (lengths + 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        final = out.gather(1, last).squeeze(1)
        mean, logvar = self.to_posterior(final).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)


class LSTMDecoder(nn.Module):
    """p(x|z): z is concatenated to every input embedding and sets c0 = W z, h0 = tanh(c0).

    With `latent_dim == 0` this is the plain LSTM language model.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        latent_dim: int,
        dropout_in: float = 0.5,
        dropout_out: float = 0.5,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout_in = nn.Dropout(dropout_in)
        self.dropout_out = nn.Dropout(dropout_out)
        self.lstm = nn.LSTM(embed_dim + latent_dim, hidden_dim, batch_first=True)
        self.init_state = nn.Linear(latent_dim, hidden_dim, bias=False) if latent_dim else None
        self.output = nn.Linear(hidden_dim, vocab_size)

    def initial_state(self, z: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if z is None or self.init_state is None:
            return None
        c0 = self.init_state(z).unsqueeze(0)
        return torch.tanh(c0), c0

    def hidden(self, inputs: torch.Tensor, z: torch.Tensor | None, state=None):
        """The LSTM's outputs [N, T, H] for inputs [N, T] with one z [N, Z] per row; returns (outputs, state)."""
        emb = self.dropout_in(self.embed(inputs))
        if z is not None and self.latent_dim:
            emb = torch.cat([emb, z.unsqueeze(1).expand(-1, emb.shape[1], -1)], dim=-1)
        if state is None:
            state = self.initial_state(z, inputs.shape[0])
        return self.lstm(emb, state)

    def logits(self, inputs: torch.Tensor, z: torch.Tensor | None, state=None):
        """Next-token logits [N, T, V] for inputs [N, T] with one z [N, Z] per row; returns (logits, state)."""
        out, state = self.hidden(inputs, z, state)
        return self.output(self.dropout_out(out)), state

    def log_prob(self, tokens: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """log p(x|z) summed over predicted tokens. tokens [B, T]; z [B, n, Z] -> [B, n] (or None -> [B, 1])."""
        batch = tokens.shape[0]
        n = 1 if z is None else z.shape[1]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if n > 1:
            inputs = inputs.repeat_interleave(n, dim=0)
            targets = targets.repeat_interleave(n, dim=0)
        flat_z = None if z is None else z.reshape(batch * n, -1)
        logits, _ = self.logits(inputs, flat_z)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD, reduction="none")
        return -nll.view(batch * n, -1).sum(-1).view(batch, n)
