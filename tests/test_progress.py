"""The training progress bar shows the terms the objective logs, and no made-up ones."""

from __future__ import annotations

import io

from rich.console import Console

from textvae.cli.progress import RichProgress


def shown(metrics: dict) -> str:
    out = io.StringIO()
    bar = RichProgress(Console(file=out, width=200, force_terminal=False))
    bar.on_train_begin(total_steps=2, steps_per_epoch=2)
    bar.on_step(1, metrics)
    bar.close()
    return out.getvalue()


def test_an_elbo_step_shows_loss_kl_and_perplexity():
    line = shown({"loss": 40.0, "rec": 36.0, "kl": 4.0, "n": 1.0, "n_tokens": 10})
    assert "loss 40.00" in line and "kl 4.00" in line and "ppl 54.6" in line  # exp(40 / 10)


def test_an_objective_without_rec_shows_only_its_loss():
    line = shown({"loss": 40.0, "n": 1.0, "n_tokens": 10, "iwae_bound": -40.0})
    assert "loss 40.00" in line and "kl" not in line and "ppl" not in line


def test_an_image_step_shows_no_perplexity():
    line = shown({"loss": 90.0, "rec": 88.0, "kl": 2.0, "n": 1.0})
    assert "kl 2.00" in line and "ppl" not in line
