"""The `textvae` command end to end (real subprocesses): train, eval, --set, help, and one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import textvae

from textvae.config import layer_recipe

CorpusWriter = Callable[..., Path]
YamlWriter = Callable[[Path, Any], Path]

EVAL_KEYS = {"elbo_nll", "iw_nll", "ppl", "iw_ppl", "kl", "mi", "au", "iw_samples", "n_sentences", "n_tokens"}


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Failed, with exactly one stderr line `error: ...` containing every needle and no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its content."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, write_corpus: CorpusWriter, write_yaml: YamlWriter) -> Path:
    """A directory with tiny train/valid/test files (test has blank lines) and recipe.yaml over them."""
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "train.txt", 300, seed=1)
    write_corpus(root / "valid.txt", 40, seed=2)
    write_corpus(root / "test.txt", 30, seed=3, blank_every=7)
    write_yaml(root / "recipe.yaml", tiny_recipe(root))
    return root


def tiny_recipe(root: Path, **changes: dict[str, Any]) -> dict[str, Any]:
    """The tiny recipe over `root`'s files; `changes` update sections (e.g. data={"train": ...})."""
    recipe: dict[str, Any] = {
        "name": "tiny",
        "data": {
            "train": str(root / "train.txt"),
            "valid": str(root / "valid.txt"),
            "test": str(root / "test.txt"),
            "batch_size": 32,
            "cache_dir": str(root / "hf-cache"),
        },
        "model": {"embed_dim": 16, "hidden_dim": 32, "latent_dim": 4},
        "train": {"epochs": 2, "log_every": 5},
        "eval": {"iw_samples": 10},
    }
    for section, values in changes.items():  # as a child recipe would: another model.type drops the LSTM's keys
        recipe = layer_recipe(recipe, {section: values})
    return recipe


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_then_eval(corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    proc = textvae("train", corpus / "recipe.yaml", "-o", run)
    assert proc.returncode == 0, proc.stderr
    for name in ("recipe.yaml", "model/config.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["model"]["latent_dim"] == 4 and saved["train"]["epochs"] == 2
    assert json.loads((run / "model" / "config.json").read_text())["latent_dim"] == 4

    metrics = read_metrics(run)
    assert {m["kind"] for m in metrics} == {"step", "epoch"}
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2]
    for m in epochs:
        assert {"val_elbo_nll", "val_kl", "val_mi", "val_au"} <= m.keys()

    proc = textvae("eval", run, "--split", "test", "--iw-samples", "10")
    assert proc.returncode == 0, proc.stderr
    assert "iw_nll" in proc.stdout and "elbo_nll" in proc.stdout
    result = json.loads((run / "eval.json").read_text())
    assert "iw_nll_svi" not in result  # only when asked (or for SA-VAE runs)
    proc = textvae("eval", run, "--iw-samples", "10", "--svi-steps", "5", "--output", tmp_path / "svi.json")
    assert proc.returncode == 0, proc.stderr
    with_svi = json.loads((tmp_path / "svi.json").read_text())
    assert with_svi["iw_nll_svi"] > 0 and abs(with_svi["iw_nll"] - result["iw_nll"]) < 1e-6
    assert EVAL_KEYS <= result.keys()
    assert result["iw_samples"] == 10
    test_lines = (corpus / "test.txt").read_text().splitlines()
    assert result["n_sentences"] == sum(bool(line.strip()) for line in test_lines) == 30
    assert result["n_tokens"] == sum(len(line.split()) + 1 for line in test_lines if line.strip())
    assert result["iw_nll"] <= result["elbo_nll"] + 0.05


@pytest.mark.slow
@pytest.mark.parametrize("hvp", ["exact", "finite_difference"])
def test_savae_run_reports_iw_nll_with_and_without_test_time_svi(corpus: Path, tmp_path: Path, write_yaml, hvp):
    run = tmp_path / "run"
    svi = {"steps": 3, "hvp": hvp, "lr": 0.5, "clip": 5.0}
    recipe = tiny_recipe(corpus, update={"type": "savae", "svi": svi}, train={"epochs": 1})
    proc = textvae("train", write_yaml(tmp_path / "savae.yaml", recipe), "-o", run)
    assert proc.returncode == 0, proc.stderr
    steps = [m for m in read_metrics(run) if m["kind"] == "step"]
    # logged per step; on this tiny collapsed model (KL ~1e-6) SVI moves the loss by ~1e-4, below the dropout
    # noise between its two evaluations: that SVI lowers the expected loss is tested in test_svi.py
    assert steps and all(math.isfinite(m["svi_loss_start"]) and math.isfinite(m["svi_loss_end"]) for m in steps)
    proc = textvae("eval", run, "--iw-samples", "10")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    assert {"iw_nll", "iw_nll_svi", "iw_ppl_svi"} <= result.keys()
    assert "iw_nll_svi" in proc.stdout


@pytest.mark.slow
def test_aggressive_run_logs_inner_steps_and_switch_off(corpus: Path, tmp_path: Path, write_yaml):
    run = tmp_path / "run"
    update = {"type": "aggressive", "max_inner_steps": 10, "check_every": 5}
    proc = textvae("train", write_yaml(tmp_path / "agg.yaml", tiny_recipe(corpus, update=update)), "-o", run)
    assert proc.returncode == 0, proc.stderr
    metrics = read_metrics(run)
    assert all(5 <= m["inner_steps"] <= 10 for m in metrics if m["kind"] == "step" and m["epoch"] == 0)
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert all(isinstance(m["aggressive"], bool) and "val_mi" in m for m in epochs)


@pytest.mark.slow
def test_set_overrides_the_recipe(corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    proc = textvae(
        "train",
        corpus / "recipe.yaml",
        "-o",
        run,
        "--set",
        "train.epochs=1",
        "--set",
        "data.limit_train=64",
        "--set",
        "train.val_latent_metrics=false",
    )
    assert proc.returncode == 0, proc.stderr
    assert [m["epoch"] for m in read_metrics(run) if m["kind"] == "epoch"] == [1]
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert (saved["train"]["epochs"], saved["data"]["limit_train"]) == (1, 64)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([], ["train", "eval", "data"]),
        (["train"], ["--out", "--set", "--device", "--overwrite"]),
        (["eval"], ["--split", "--iw-samples", "--device", "--output"]),
        (["data", "prepare"], ["--from", "--out", "--overwrite"]),
    ],
    ids=["textvae", "train", "eval", "data-prepare"],
)
def test_help(command: list[str], expected: list[str]):
    proc = textvae(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    for option in expected:
        assert option in proc.stdout, option


BAD_TRAIN_INPUTS: dict[str, tuple[dict[str, dict[str, Any]], list[str]]] = {
    # recipe changes (data file names are in the test's folder) and what the one error line must name
    "unknown recipe key": ({"model": {"hiden_dim": 8}}, ["recipe.yaml", "model.hiden_dim", "unknown key"]),
    "wrong type": ({"train": {"epochs": "many"}}, ["recipe.yaml", "train.epochs", "many"]),
    "missing data file": ({"data": {"train": "absent.txt"}}, ["absent.txt", "not found"]),
    "non-UTF-8 data file": ({"data": {"train": "latin1.txt"}}, ["latin1.txt:3:", "UTF-8"]),
    "empty data file": ({"data": {"valid": "empty.txt"}}, ["empty.txt", "no documents"]),
}


@pytest.mark.parametrize("case", BAD_TRAIN_INPUTS)
def test_train_bad_input_is_one_line(corpus: Path, tmp_path: Path, write_yaml: YamlWriter, case: str):
    changes, needles = BAD_TRAIN_INPUTS[case]
    (tmp_path / "latin1.txt").write_bytes("w1 w2\nw3 w4\nw5 caf\xe9 w6\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    data = {key: str(tmp_path / name) for key, name in changes.get("data", {}).items()}
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(corpus, **{**changes, "data": data}))
    run = tmp_path / "run"
    assert_one_line_error(textvae("train", recipe, "-o", run), *needles)
    assert not run.exists()


def test_train_refuses_a_non_empty_run_dir(corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "recipe.yaml").write_text("precious: true\n")
    (run / "model" / "weights").write_bytes(b"\x00\x01")
    before = tree(run)
    assert_one_line_error(textvae("train", corpus / "recipe.yaml", "-o", run), str(run), "--overwrite")
    assert tree(run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_cuda(corpus: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert_one_line_error(textvae("train", corpus / "recipe.yaml", "-o", run, "--device", "cuda"), "cuda")
    assert not run.exists()


def test_eval_on_a_directory_that_is_not_a_run(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("not a run\n")
    before = tree(tmp_path)
    assert_one_line_error(textvae("eval", tmp_path), str(tmp_path), "not a textvae run")
    assert tree(tmp_path) == before


def test_debug_shows_the_traceback(tmp_path: Path):
    proc = textvae("eval", tmp_path, debug=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "TextVAEError" in proc.stderr


TRANSFORMER = {"d_model": 16, "n_heads": 2, "ff_dim": 32, "encoder_layers": 1, "decoder_layers": 1}
# name: (recipe changes, keys eval.json must have, keys it must not have)
LATENT_MODEL_RUNS = {
    "wae-mmd-deterministic": (
        {"model": {"posterior": "deterministic"}, "objective": {"type": "wae_mmd", "lambda": 3.0}},
        {"rec", "rec_ppl", "au", "recon_bleu"},
        {"iw_nll", "elbo_nll", "kl", "mi"},
    ),
    "wae-gan-stochastic": (
        {"objective": {"type": "wae_gan", "kl_weight": 1.0, "discriminator": {"hidden_dim": 16, "layers": 1}}},
        EVAL_KEYS | {"recon_bleu"},
        set(),
    ),
    "infovae-mog": (
        {"model": {"prior": {"type": "mog", "components": 3}}, "objective": {"type": "infovae", "lambda": 10.0}},
        EVAL_KEYS | {"recon_bleu"},
        {"kl_per_dim"},
    ),
    "transformer-vamp": (
        {
            "model": {
                "type": "transformer_vae",
                "transformer": TRANSFORMER,
                "prior": {"type": "vamp", "components": 4},
            },
            "optim": {"type": "adam", "lr": 1e-3, "clip": 1.0},
        },
        EVAL_KEYS | {"recon_bleu"},
        {"kl_per_dim"},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", LATENT_MODEL_RUNS)
def test_wasserstein_transformer_and_prior_runs_train_and_evaluate(name: str, corpus: Path, tmp_path: Path, write_yaml):
    changes, present, absent = LATENT_MODEL_RUNS[name]
    run = tmp_path / "run"
    recipe = tiny_recipe(corpus, train={"epochs": 1}, **changes)
    proc = textvae("train", write_yaml(tmp_path / f"{name}.yaml", recipe), "-o", run)
    assert proc.returncode == 0, proc.stderr
    epoch = [m for m in read_metrics(run) if m["kind"] == "epoch"][0]
    selection = "best_val_rec" if name.startswith("wae") else "best_val_elbo_nll"  # WAEs select on reconstruction
    assert selection in epoch
    if name.startswith("wae-gan"):
        assert all("disc_loss" in m and "adv" in m for m in read_metrics(run) if m["kind"] == "step")
    proc = textvae("eval", run, "--iw-samples", "10")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run / "eval.json").read_text())
    assert present <= result.keys(), present - result.keys()
    assert not absent & result.keys(), absent & result.keys()
    assert 0.0 <= result["recon_bleu"] <= 100.0 and result["recon_docs"] == 30
