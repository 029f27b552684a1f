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
# saved by 9e149a2 (format 3): every prior's keys in each run's prior section
V3_FIXTURES = Path(__file__).parent / "fixtures" / "runs-v3"
V3_RUNS = {"mog_vae": ("mog", "gaussian", "iw_nll"), "wae_mmd": ("standard_normal", "deterministic", "rec")}


def working_copy(fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a fixture folder as the working directory (the recipes' data paths are relative to it)."""
    folder = tmp_path / fixtures.name
    shutil.copytree(fixtures, folder)
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def saved_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return working_copy(FIXTURES, tmp_path, monkeypatch)


@pytest.fixture
def saved_v3_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return working_copy(V3_FIXTURES, tmp_path, monkeypatch)


def reevaluate(folder: Path, run: str) -> tuple[dict, dict, list[str]]:
    """(saved eval.json, today's `textvae eval` of the run, the saved float metrics); the saved file is removed."""
    before = json.loads((folder / run / "eval.json").read_text())
    (folder / run / "eval.json").unlink()
    result = textvae("eval", run)
    assert result.returncode == 0, result.stderr
    after = json.loads((folder / run / "eval.json").read_text())
    return before, after, [k for k, v in before.items() if isinstance(v, float)]


@pytest.mark.parametrize("run", RUNS)
def test_an_old_run_evaluates_to_its_saved_numbers(saved_runs: Path, run: str):
    before, after, numbers = reevaluate(saved_runs, run)
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


@pytest.mark.parametrize("run", V3_RUNS)
def test_a_format_3_run_evaluates_to_its_saved_numbers_and_generates(saved_v3_runs: Path, run: str):
    before, after, numbers = reevaluate(saved_v3_runs, run)
    assert {V3_RUNS[run][2], "recon_bleu", "sample_self_bleu"} <= set(numbers)
    for key in numbers:
        assert math.isclose(after[key], before[key], rel_tol=1e-5, abs_tol=1e-6), key
    sampled = textvae("sample", run, "-n", "2", "--seed", "0")
    assert sampled.returncode == 0 and len(sampled.stdout.strip().splitlines()) == 2, sampled.stderr


@pytest.mark.parametrize("run", V3_RUNS)
def test_a_format_3_run_loads_with_its_priors_own_keys(saved_v3_runs: Path, run: str):
    from textvae.api import load_run

    saved = json.loads((saved_v3_runs / run / "model" / "config.json").read_text())
    assert saved["format_version"] == 3 and "pseudo_length" in saved["prior"]  # every prior's keys
    loaded = load_run(saved_v3_runs / run)
    prior, posterior, _ = V3_RUNS[run]
    for section in (loaded.recipe.model, loaded.model.config.section):
        assert (section.prior.type, section.posterior) == (prior, posterior)
        assert not hasattr(section.prior, "pseudo_length")
    assert (
        type(loaded.model.prior).__name__ == {"mog": "MixtureOfGaussians", "standard_normal": "StandardNormal"}[prior]
    )
