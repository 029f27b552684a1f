"""Shared test helpers: tiny random corpora and YAML files written under a test's temporary directory."""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

WORDS = [f"w{i}" for i in range(40)]


def random_sentences(n: int, seed: int = 0, min_len: int = 2, max_len: int = 8) -> list[str]:
    """`n` sentences of random words from WORDS (reproducible for a seed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(min_len, max_len))) for _ in range(n)]


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text, gzipped when the name ends in .gz; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


CorpusWriter = Callable[..., Path]
YamlWriter = Callable[[Path, Any], Path]


@pytest.fixture(scope="session")
def write_corpus() -> CorpusWriter:
    """`write_corpus(path, n, seed=0, blank_every=0)`: one random sentence per line (a blank line every k)."""

    def write(path: Path, n: int, seed: int = 0, blank_every: int = 0) -> Path:
        lines: list[str] = []
        for i, sentence in enumerate(random_sentences(n, seed)):
            if blank_every and i % blank_every == 0:
                lines.append("")
            lines.append(sentence)
        return write_text(path, "\n".join(lines) + "\n")

    return write


@pytest.fixture(scope="session")
def write_splits(write_corpus: CorpusWriter) -> Callable[..., Path]:
    """`write_splits(root, train, valid, test)`: root/train.txt, valid.txt and test.txt of that many random
    sentences (seeds 1, 2 and 3); returns root."""

    def write(root: Path, train: int, valid: int, test: int) -> Path:
        for name, n, seed in (("train", train, 1), ("valid", valid, 2), ("test", test, 3)):
            write_corpus(root / f"{name}.txt", n, seed=seed)
        return root

    return write


@pytest.fixture(scope="session")
def write_yaml() -> YamlWriter:
    """`write_yaml(path, data)`: dump `data` as YAML (a str is written verbatim)."""

    def write(path: Path, data: Any) -> Path:
        return write_text(path, data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))

    return write


@pytest.fixture(scope="module")
def torch_single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and many times slower when threads contend on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def textvae(*args: str | Path, debug: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m textvae ARGS` with TEXTVAE_DEBUG unset (or =1); capture stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "TEXTVAE_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"  # a tiny model: extra threads only contend on a busy machine
    env["COLUMNS"] = "200"  # help and tables unwrapped
    if debug:
        env["TEXTVAE_DEBUG"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "textvae", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tiny_lstm_vae(vocab: int, seed: int = 0, **overrides: Any):
    """A small LSTM VAE in eval mode with large random weights (latent 1, embed 4, hidden 6, no dropout)."""
    import torch

    from textvae.config import ModelConfig
    from textvae.models.model import build_model

    spec = dict(
        latent_dim=1, embed_dim=4, hidden_dim=6, dropout_in=0.0, dropout_out=0.0, init_scale=0.8, embed_init_scale=0.8
    )
    torch.manual_seed(seed)
    return build_model(ModelConfig(**{**spec, **overrides}), vocab).eval()


def flat_parameters(params):
    """All parameters in one detached vector (to see whether an update moved them)."""
    import torch

    return torch.cat([p.detach().flatten() for p in params])


def assert_rule_trains_both_networks(rule, model, steps: int = 2) -> dict[str, float]:
    """`steps` updates of an update rule on its own random batches: finite loss, encoder and decoder both move."""
    import math

    import torch

    encoder, decoder = flat_parameters(model.encoder.parameters()), flat_parameters(model.decoder.parameters())
    for step in range(steps):
        terms = rule(rule.sample_batch(), step)
    assert math.isfinite(terms["loss"])
    assert not torch.equal(encoder, flat_parameters(model.encoder.parameters()))
    assert not torch.equal(decoder, flat_parameters(model.decoder.parameters()))
    return terms


def savae_hvp_mismatch(make_rule, make_model, around=None, **svi) -> float:
    """Relative difference between one SA-VAE encoder update by exact and by finite-difference HVPs.

    `make_rule(model, svi_config)` builds the update rule; each mode starts from `make_model()` (the same
    weights) and the same seed, so the two updates differ only by the Hessian-vector products. `around(mode)`,
    if given, is a context manager each mode runs in (e.g. cuDNN on or off).
    """
    import contextlib

    import torch

    from textvae.config import SVIConfig

    updates = {}
    for mode in ("exact", "finite_difference"):
        with around(mode) if around else contextlib.nullcontext():
            model = make_model()
            rule = make_rule(model, SVIConfig(hvp=mode, **svi))
            batch = rule.sample_batch()
            before = flat_parameters(model.encoder.parameters())
            torch.manual_seed(1)
            rule(batch, 0)
            updates[mode] = flat_parameters(model.encoder.parameters()) - before
    assert updates["exact"].norm() > 0
    return ((updates["finite_difference"] - updates["exact"]).norm() / updates["exact"].norm()).item()
