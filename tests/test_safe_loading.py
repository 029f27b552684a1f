"""Planted malicious pickles never run: run directories and pretrained models are read from safetensors only.

The payload's `__reduce__` is `Path.touch(marker)`: unpickling it creates the marker file, a harmless stand-in
for arbitrary code. It is planted under every name a loader might pick up (pytorch_model.bin, optimizer.pt,
training_args.bin, checkpoints/*/..., model.safetensors itself); the marker must never appear.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import textvae
from test_cli import assert_one_line_error, tiny_recipe

from textvae import api
from textvae.config import ModelConfig, build_recipe
from textvae.errors import TextVAEError
from textvae.models.model import build_model

PICKLE_NAMES = (
    "pytorch_model.bin",
    "model.bin",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "adapter_model.bin",
    "model.ckpt",
    "trainer_state.pkl",
    "training_state.pkl",
)
FAKE_CHECKPOINT = "step-99999999"  # newer than any real one: a loader picking "the latest" would choose it


class Payload:
    """Unpickling this object calls `Path.touch(marker)`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def payload_bytes(marker: Path, kind: str = "torch") -> bytes:
    """The payload as `torch.save` writes it (a zip holding data.pkl) or as plain `pickle.dumps`."""
    if kind == "pickle":
        return pickle.dumps({"weight": Payload(marker)})
    buffer = io.BytesIO()
    torch.save({"weight": Payload(marker)}, buffer)
    return buffer.getvalue()


def plant(directory: Path, marker: Path) -> None:
    """Write the payload into `directory` under every pickle name (.pkl: plain pickle; others: torch.save)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in PICKLE_NAMES:
        (directory / name).write_bytes(payload_bytes(marker, "pickle" if name.endswith(".pkl") else "torch"))


def plant_run(run_dir: Path, marker: Path) -> None:
    """Pickles in the run directory, its model/, each checkpoint and a fake newest checkpoint."""
    checkpoints = run_dir / "checkpoints"
    for directory in (run_dir, run_dir / "model", *checkpoints.glob("*/"), checkpoints / FAKE_CHECKPOINT):
        plant(directory, marker)


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def trained(tmp_path_factory, write_corpus, torch_single_thread) -> Path:
    """A tiny VAE run (one epoch, a checkpoint every 3 updates) trained in-process."""
    root = tmp_path_factory.mktemp("safe-loading")
    write_corpus(root / "train.txt", 300, seed=1)
    write_corpus(root / "valid.txt", 40, seed=2)
    write_corpus(root / "test.txt", 30, seed=3)
    recipe = tiny_recipe(root, train={"epochs": 1, "checkpoints": {"every_steps": 3}}, eval={"iw_samples": 5})
    api.train(build_recipe(recipe, "safe-loading"), root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def planted(trained: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(a copy of the run with pickles planted everywhere, the marker their unpickling would create)."""
    root = tmp_path_factory.mktemp("planted")
    run_dir, marker = copy_run(trained, root / "run"), root / "PAYLOAD_RAN"
    plant_run(run_dir, marker)
    return run_dir, marker


@pytest.fixture(scope="module")
def pickled_weights(trained: Path, tmp_path_factory) -> tuple[Path, Path]:
    """A run whose only weights are a pickle: model/model.safetensors holds the payload, pickles beside it."""
    root = tmp_path_factory.mktemp("pickled-weights")
    run_dir, marker = copy_run(trained, root / "run"), root / "PAYLOAD_RAN"
    plant_run(run_dir, marker)
    (run_dir / "model" / "model.safetensors").write_bytes(payload_bytes(marker))
    return run_dir, marker


def test_the_payload_runs_when_unpickled(tmp_path: Path):
    """Positive control: plain unpickling does run the payload, so the tests below could fail."""
    marker = tmp_path / "ran"
    pickle.loads(payload_bytes(marker, "pickle"))
    assert marker.is_file()
    marker.unlink()
    torch.load(io.BytesIO(payload_bytes(marker)), weights_only=False)
    assert marker.is_file()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(payload_bytes(marker)), weights_only=True)
    assert not marker.exists()


def test_load_run_ignores_planted_pickles(planted: tuple[Path, Path]):
    run_dir, marker = planted
    run = api.load_run(run_dir)
    assert len(run.sample(2, seed=0, max_length=5)) == 2
    assert not marker.exists()


CLI = {
    "eval": ("eval", "{run}"),
    "sample": ("sample", "{run}", "-n", "2", "--max-length", "5"),
    "reconstruct": ("reconstruct", "{run}", "{docs}"),
    "interpolate": ("interpolate", "{run}", "w1 w2 w3", "w4 w5", "--steps", "3"),
    "report": ("report", "{run}", "-o", "{report}", "--samples", "1", "--reconstructions", "1"),
}


def cli_args(command: str, run_dir: Path, tmp_path: Path) -> list[str]:
    (tmp_path / "docs.txt").write_text("w1 w2 w3\nw4 w5\n")
    places = {"run": run_dir, "docs": tmp_path / "docs.txt", "report": tmp_path / "report.html"}
    return [arg.format(**places) for arg in CLI[command]]


@pytest.mark.parametrize("command", list(CLI))
def test_cli_ignores_planted_pickles(planted: tuple[Path, Path], tmp_path: Path, command: str):
    run_dir, marker = planted
    proc = textvae(*cli_args(command, run_dir, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("command", list(CLI))
def test_cli_refuses_pickled_weights_in_one_line(pickled_weights: tuple[Path, Path], tmp_path: Path, command: str):
    run_dir, marker = pickled_weights
    proc = textvae(*cli_args(command, run_dir, tmp_path))
    if command == "report":  # a report still gets written, noting why the run has no generated text
        assert proc.returncode == 0, proc.stderr
        assert "not a safetensors file" in (tmp_path / "report.md").read_text()
    else:
        assert_one_line_error(proc, "model.safetensors", "not a safetensors file")
    assert not marker.exists()


def renamed(directory: Path, marker: Path, kind: str = "torch") -> None:
    (directory / "model.safetensors").write_bytes(payload_bytes(marker, kind))


def config_names_a_pickle(directory: Path, marker: Path) -> None:
    """transformers reads a config's `transformers_weights: adapter_model.bin` even with use_safetensors=True."""
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))


def adapter_without_safetensors(directory: Path, marker: Path) -> None:
    """A PEFT adapter whose weights are adapter_model.bin (read by transformers when peft is installed)."""
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))


def index_of_pickles(directory: Path, marker: Path) -> None:
    """model.safetensors gone; a safetensors index whose shard is a pickle."""
    (directory / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"anything": "pytorch_model.bin"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def only_a_pickle(directory: Path, marker: Path) -> None:
    (directory / "model.safetensors").unlink()


TRICKS = {
    "renamed_torch_save": renamed,
    "renamed_pickle": lambda directory, marker: renamed(directory, marker, "pickle"),
    "config_names_a_pickle": config_names_a_pickle,
    "adapter_without_safetensors": adapter_without_safetensors,
    "index_of_pickles": index_of_pickles,
    "only_a_pickle": only_a_pickle,
}


def assert_refused(err: pytest.ExceptionInfo[TextVAEError], marker: Path) -> None:
    assert "\n" not in str(err.value) and "safetensors" in str(err.value), str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("trick", list(TRICKS))
def test_load_run_refuses_every_way_to_a_pickle(trained: Path, tmp_path: Path, trick: str):
    run_dir, marker = copy_run(trained, tmp_path / "run"), tmp_path / "PAYLOAD_RAN"
    plant_run(run_dir, marker)
    TRICKS[trick](run_dir / "model", marker)
    with pytest.raises(TextVAEError) as err:
        api.load_run(run_dir)
    assert_refused(err, marker)


TINY_GPT2 = {
    "model_type": "gpt2",
    "n_layer": 1,
    "n_embd": 16,
    "n_head": 2,
    "n_positions": 32,
    "vocab_size": 40,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 saved by `save_pretrained` (config.json + model.safetensors)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(TINY_GPT2)
    directory = tmp_path_factory.mktemp("pretrained") / "gpt2"
    AutoModelForCausalLM.from_config(AutoConfig.for_model(spec.pop("model_type"), **spec)).save_pretrained(directory)
    return directory


def hf_vae(decoder: Path):
    section = {"decoder": str(decoder), "encoder_config": TINY_BERT}
    return build_model(ModelConfig(type="hf_vae", latent_dim=2, huggingface=section), 30)


def test_hf_decoder_directory_ignores_planted_pickles(gpt2_dir: Path, tmp_path: Path, torch_single_thread):
    directory, marker = tmp_path / "gpt2", tmp_path / "PAYLOAD_RAN"
    shutil.copytree(gpt2_dir, directory)
    plant(directory, marker)
    assert hf_vae(directory).decoder.model.config.model_type == "gpt2"
    assert not marker.exists()


@pytest.mark.parametrize("trick", list(TRICKS))
def test_hf_decoder_directory_refuses_every_way_to_a_pickle(
    gpt2_dir: Path, tmp_path: Path, trick: str, torch_single_thread
):
    directory, marker = tmp_path / "gpt2", tmp_path / "PAYLOAD_RAN"
    shutil.copytree(gpt2_dir, directory)
    plant(directory, marker)
    TRICKS[trick](directory, marker)
    with pytest.raises(TextVAEError) as err:
        hf_vae(directory)
    assert_refused(err, marker)


def interrupted(trained: Path, target: Path) -> Path:
    """A copy of the run as if killed mid-epoch: not finished, its newest (end-of-epoch) checkpoint gone."""
    run_dir = copy_run(trained, target)
    (run_dir / "trainer_state.json").unlink()  # written when a run finishes
    shutil.rmtree(sorted((run_dir / "checkpoints").glob("step-*"))[-1])
    return run_dir


@pytest.mark.parametrize("case", ["planted", "newest_state_pickled", "every_state_pickled", "weights_pickled"])
def test_resume_never_unpickles(trained: Path, tmp_path: Path, case: str):
    """`textvae train --resume`: checkpoints are safetensors + JSON; pickles beside them are never read, a
    checkpoint whose training state is a pickle is skipped as damaged, and one whose weights are a pickle (or
    a run with no readable checkpoint) is a one-line error."""
    run_dir, marker = interrupted(trained, tmp_path / "run"), tmp_path / "PAYLOAD_RAN"
    plant_run(run_dir, marker)
    checkpoints = sorted(p for p in (run_dir / "checkpoints").glob("step-*") if p.name != FAKE_CHECKPOINT)
    assert checkpoints, "the run wrote no resumable checkpoint"
    fake = run_dir / "checkpoints" / FAKE_CHECKPOINT
    shutil.rmtree(fake)
    shutil.copytree(checkpoints[-1], fake)  # a newest checkpoint whose state and weights are the payload
    plant(fake, marker)
    for name in ("training_state.safetensors", "model.safetensors"):
        (fake / name).write_bytes(payload_bytes(marker))
    if case == "planted":
        shutil.rmtree(fake)
    if case == "every_state_pickled":
        for checkpoint in checkpoints:
            (checkpoint / "training_state.safetensors").write_bytes(payload_bytes(marker))
    if case == "weights_pickled":
        shutil.rmtree(fake)
        (checkpoints[-1] / "model.safetensors").write_bytes(payload_bytes(marker))
    proc = textvae("train", "--resume", run_dir)
    if case in ("planted", "newest_state_pickled"):  # resumed from the newest readable checkpoint
        assert proc.returncode == 0, proc.stderr
        assert (run_dir / "trainer_state.json").is_file()
    elif case == "every_state_pickled":
        assert_one_line_error(proc, "every checkpoint is damaged")
    else:
        assert_one_line_error(proc, "model.safetensors", "damaged checkpoint file")  # its checksum differs
    assert not marker.exists()
