"""textvae's side of `benchmarks/speed.py`: the package's own model, update rules and evaluation functions.

Imported only by the child process that measures textvae, so the baseline's process never loads the model stack.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator

import torch

from textvae.config import (
    AggressiveUpdateConfig,
    JointUpdateConfig,
    Recipe,
    SemiAmortizedUpdateConfig,
    SVIConfig,
)
from textvae.data.batching import TextBatch, TokenizedSplit, make_loader
from textvae.evaluation import latent_metrics
from textvae.evaluation.likelihood import iw_nll
from textvae.models.model import build_model
from textvae.objectives import build_objective
from textvae.training.trainer import denormals_flushed, flush_denormals, seed_everything
from textvae.training.updates import UpdateContext, UpdateRule, build_update


class OursBench:
    """One textvae model and its three update rules (joint, aggressive, SA-VAE) on shared parameters."""

    impl = "ours"

    def __init__(
        self,
        recipe: Recipe,
        vocab_size: int,
        device: torch.device,
        precision: str,
        aggressive: AggressiveUpdateConfig,
        svi: SVIConfig,
        steps_per_epoch: int,
    ) -> None:
        self.recipe = recipe
        self.vocab_size = vocab_size
        self.device = device
        self.precision = precision
        self.aggressive_cfg = aggressive
        self.svi = svi
        self.steps_per_epoch = steps_per_epoch
        self.queue: deque[TextBatch] = deque()  # what the aggressive rule's sample_batch hands out
        self.step = 0

    @property
    def dtype(self) -> str:
        return self.precision

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """As the trainer runs: denormals flushed on CPU."""
        with flush_denormals(self.device):
            yield

    @property
    def denormals_flushed(self) -> bool:
        return denormals_flushed()

    def reset(self, seed: int) -> None:
        """A freshly initialised model and fresh update rules."""
        seed_everything(seed)
        self.model = build_model(self.recipe.model, self.vocab_size).to(self.device).train()
        self.model.set_precision(self.precision).set_compiled(self.recipe.train.compile)
        objective = build_objective(self.recipe.objective, self.steps_per_epoch, self.recipe.train.epochs)
        self.joint = self._rule(objective, JointUpdateConfig())
        self.aggressive = self._rule(objective, self.aggressive_cfg)
        self.savae = self._rule(objective, SemiAmortizedUpdateConfig(type="savae", svi=self.svi))

    def _rule(self, objective, cfg) -> UpdateRule:
        optim = self.recipe.optim
        return build_update(UpdateContext(self.model, objective, optim, cfg, optim.lr, self.queue.popleft))

    def _next_step(self) -> int:
        self.step += 1
        return self.step - 1

    def train_step(self, batch: TextBatch) -> None:
        self.model.train()
        self.joint(batch, self._next_step())

    def inner_steps(self, batches: list[TextBatch]) -> None:
        """Exactly len(batches) encoder-only steps: the first on batches[0], then sample_batch hands out the rest."""
        self.model.train()
        self.queue.extend(batches[1:])
        self.aggressive.cfg = self.aggressive_cfg.model_copy(
            update={"max_inner_steps": len(batches), "check_every": len(batches) + 1}
        )
        self.aggressive.encoder_steps(batches[0], self._next_step())
        self.queue.clear()

    def savae_step(self, batch: TextBatch) -> None:
        self.model.train()
        self.savae(batch, self._next_step())

    def iw(self, ids: list[list[int]], k: int) -> None:
        """IW-NLL as `textvae eval` computes it: batches of eval_batch_size, the recipe's iw_chunk."""
        loader = make_loader(TokenizedSplit(ids), self.recipe.data.eval_batch_size, shuffle=False)
        iw_nll(self.model, loader, k=k, chunk=self.recipe.eval.iw_chunk, seed=self.recipe.eval.seed)

    def mi_au(self, ids: list[list[int]]) -> None:
        """MI (batches of eval.mi_batch_size in order) and AU (with the KL per dimension) as `textvae eval`."""
        latent_metrics(self.model, TokenizedSplit(ids), self.recipe.data.eval_batch_size, self.recipe.eval)

    @property
    def iw_chunk(self) -> int:
        return self.recipe.eval.iw_chunk
