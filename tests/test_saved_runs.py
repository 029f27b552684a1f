"""Run directories saved by an earlier textvae still load, evaluate to their numbers and generate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import textvae

FIXTURES = Path(__file__).parent / "fixtures" / "runs-v2"
RUNS = ("lstm_vae", "transformer_vae")


@pytest.fixture
def saved_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture folder as the working directory (the recipes' data paths are relative to it)."""
    folder = tmp_path / "runs-v2"
    shutil.copytree(FIXTURES, folder)
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("run", RUNS)
def test_an_old_run_evaluates_to_its_saved_numbers(saved_runs: Path, run: str):
    before = json.loads((saved_runs / run / "eval.json").read_text())
    (saved_runs / run / "eval.json").unlink()
    result = textvae("eval", run)
    assert result.returncode == 0, result.stderr
    after = json.loads((saved_runs / run / "eval.json").read_text())
    numbers = [k for k, v in before.items() if isinstance(v, float)]
    assert {"iw_nll", "elbo_nll", "kl", "mi", "sample_self_bleu"} <= set(numbers)
    for key in numbers:
        assert math.isclose(after[key], before[key], rel_tol=1e-5, abs_tol=1e-6), key
    assert after["model_type"] == before["model_type"] == run


@pytest.mark.parametrize("run", RUNS)
def test_an_old_run_samples_and_reconstructs(saved_runs: Path, run: str):
    sampled = textvae("sample", run, "-n", "2", "--seed", "0")
    assert sampled.returncode == 0, sampled.stderr
    assert len(sampled.stdout.strip().splitlines()) == 2
    rebuilt = textvae("reconstruct", run, "data/test.txt")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert len(rebuilt.stdout.splitlines()) == len((saved_runs / "data" / "test.txt").read_text().splitlines())
