"""Crash-safe checkpoints and exact resume: a training process killed with SIGKILL (mid-epoch, and while
it writes a checkpoint) and resumed ends bitwise equal to an uninterrupted run of the same recipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import textvae
from safetensors.torch import load_file
from test_cli import assert_one_line_error, tiny_recipe

from textvae.errors import TextVAEError
from textvae.training.checkpoint import CheckpointStore
from textvae.training.tensor_tree import load_tree, save_tree

TIMING = {"epoch_seconds", "tokens_per_s", "train_tokens_per_s"}  # wall-clock figures differ between runs

# Run the CLI in a process that SIGKILLs itself at a chosen point (KILL_AT = "step:N": right after update
# step N; "checkpoint:N": half-way through writing the N-th checkpoint's training state).
KILLING_CLI = """
import os, signal, sys
from pathlib import Path
from textvae.training import checkpoint, trainer
point, n = os.environ["KILL_AT"].split(":")
n, calls = int(n), {"step": 0, "checkpoint": 0}

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

def after_step(terms, n_tokens):
    calls["step"] += 1
    if point == "step" and calls["step"] == n:
        kill()
    return real_sum(terms, n_tokens)

def half_written(tree, directory, name):
    real_save(tree, directory, name)
    calls["checkpoint"] += 1
    if point == "checkpoint" and calls["checkpoint"] == n:
        path = Path(directory) / (name + ".safetensors")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        kill()

real_sum, trainer.summed_over_processes = trainer.summed_over_processes, after_step  # as the trainer calls it
real_save, checkpoint.save_tree = checkpoint.save_tree, half_written
from textvae.cli.app import main
sys.argv = ["textvae", *sys.argv[1:]]
main()
"""


def run_killed(kill_at: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KILL_AT": kill_at, "OMP_NUM_THREADS": "1"}
    env.pop("TEXTVAE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", KILLING_CLI, *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


def comparable_metrics(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def assert_same_run(resumed: Path, reference: Path) -> int:
    """Every logged metric (timings aside), the final state and every saved weight are bitwise equal;
    returns the number of metric records compared."""
    records = comparable_metrics(resumed)
    assert records == comparable_metrics(reference)
    assert json.loads((resumed / "trainer_state.json").read_text()) == json.loads(
        (reference / "trainer_state.json").read_text()
    )
    for where in ["model", *(f"checkpoints/{p.name}" for p in (reference / "checkpoints").iterdir())]:
        ours, theirs = (
            load_file(resumed / where / "model.safetensors"),
            load_file(reference / where / "model.safetensors"),
        )
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert torch.equal(ours[name], theirs[name]), (where, name)
    return len(records)


# -- the recipe: annealed KL, lr decay, mid-epoch checkpoints, aggressive training ---------------------------


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory, write_corpus, write_yaml) -> Path:
    root = tmp_path_factory.mktemp("resume")
    write_corpus(root / "train.txt", 200, seed=1)
    write_corpus(root / "valid.txt", 40, seed=2)
    write_corpus(root / "test.txt", 30, seed=3)
    recipe = tiny_recipe(
        root,
        data={"batch_size": 25},  # 8 updates an epoch
        model={"embed_dim": 8, "hidden_dim": 16, "latent_dim": 2, "dropout_in": 0.3, "dropout_out": 0.3},
        objective={"type": "elbo", "kl_schedule": {"type": "linear", "start": 0.1, "warmup_epochs": 2}},
        update={"type": "aggressive", "max_inner_steps": 3, "check_every": 2},
        optim={"type": "adam", "lr": 0.003},
        train={
            "epochs": 4,
            "log_every": 3,
            "checkpoints": {"every_steps": 5, "keep_last": 2},
            "lr_decay": {"start_epoch": 0, "patience": 1, "factor": 0.5, "max_decays": 5},
            "val_latent_metrics": True,
        },
    )
    return write_yaml(root / "recipe.yaml", recipe)


@pytest.fixture(scope="module")
def reference(recipe_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = textvae("train", recipe_file, "-o", run, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at, resumes_from",
    [
        ("step:13", "step-00000010"),  # mid-epoch 2, after the mid-epoch checkpoint at step 10
        ("checkpoint:5", "step-00000015"),  # while writing the 5th checkpoint (epoch 2's end, step 16)
    ],
)
def test_killed_run_resumes_to_the_uninterrupted_result(
    kill_at: str, resumes_from: str, recipe_file: Path, reference: Path, tmp_path: Path
):
    run = tmp_path / "run"
    killed = run_killed(kill_at, "train", recipe_file, "-o", run)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run / "trainer_state.json").exists()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert resumes_from in checkpoints, checkpoints
    if kill_at.startswith("checkpoint"):  # the interrupted write is a hidden temporary directory
        assert any(name.startswith(".step-") for name in checkpoints), checkpoints
    resumed = textvae("train", "--resume", run, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from {resumes_from}" in resumed.stdout
    assert not list((run / "checkpoints").glob(".*")), "leftovers of the interrupted write were removed"
    n = assert_same_run(run, reference)
    print(f"\n{kill_at}: killed, resumed from {resumes_from}; {n} metric records + weights equal bitwise")


def test_resume_of_a_finished_run_changes_nothing(reference: Path):
    before = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    proc = textvae("train", "--resume", reference)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to resume" in proc.stdout
    assert {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--out", "x"], "drop --out"),
        (["--set", "train.epochs=9"], "drop --set"),
        (["--overwrite"], "drop --overwrite"),
    ],
)
def test_resume_refuses_other_arguments(args: list[str], needle: str, reference: Path):
    assert_one_line_error(textvae("train", "--resume", reference, *args), needle)


def test_train_without_recipe_or_out(tmp_path: Path):
    assert_one_line_error(textvae("train"), "give a RECIPE and --out")


def test_resume_of_a_directory_that_is_not_a_run(tmp_path: Path):
    assert_one_line_error(textvae("train", "--resume", tmp_path), "not a textvae run directory")


def test_resume_before_the_first_checkpoint(reference: Path, tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_bytes((reference / "recipe.yaml").read_bytes())
    assert_one_line_error(textvae("train", "--resume", run), "no checkpoint to resume from")


def unfinished_copy(reference: Path, tmp_path: Path) -> Path:
    """A copy of the finished run that looks killed after its last checkpoint."""
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(reference), str(run)], check=True)
    (run / "trainer_state.json").unlink()
    return run


def test_changed_training_data_is_refused(reference: Path, tmp_path: Path):
    run = unfinished_copy(reference, tmp_path)
    recipe = (run / "recipe.yaml").read_text()
    train = Path(next(line.split(": ", 1)[1] for line in recipe.splitlines() if line.strip().startswith("train:")))
    copy = tmp_path / "train.txt"
    copy.write_text(train.read_text().replace("w1 ", "w2 ", 1))
    (run / "recipe.yaml").write_text(recipe.replace(str(train), str(copy)))
    assert_one_line_error(textvae("train", "--resume", run), "data.train: the data differs")


def flip_a_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {
    "state truncated": ("training_state.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100])),
    "weight bit flipped": ("model.safetensors", flip_a_middle_byte),  # loads fine: only the checksum tells
    "state deleted": ("training_state.json", Path.unlink),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous(damage: str, reference: Path, tmp_path: Path):
    run = unfinished_copy(reference, tmp_path)
    newest, previous = sorted((run / "checkpoints").iterdir())[::-1]
    name, spoil = DAMAGE[damage]
    spoil(newest / name)
    proc = textvae("train", "--resume", run, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipping damaged checkpoint" in proc.stdout and name in proc.stdout
    assert f"from {previous.name}" in proc.stdout
    assert_same_run(run, reference)


def test_every_checkpoint_damaged_is_one_line(reference: Path, tmp_path: Path):
    run = unfinished_copy(reference, tmp_path)
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "training_state.json").write_text("{")
    assert_one_line_error(textvae("train", "--resume", run), "every checkpoint is damaged", "training_state.json")


# -- the pieces ----------------------------------------------------------------------------------------------


def test_tensor_tree_round_trip(tmp_path: Path):
    tree = {
        "ints": {3: torch.arange(4), 7: {"step": torch.tensor(2.0)}},
        "tuple": (1, 2.5, "x", None, True),
        "list": [torch.zeros(0, 3), {"inf": float("inf")}],
        "big": 2**100,
        "bf16": torch.ones(2, dtype=torch.bfloat16),
    }
    save_tree(tree, tmp_path, "state")
    back = load_tree(tmp_path, "state")
    assert back.keys() == tree.keys() and set(back["ints"]) == {3, 7}
    assert torch.equal(back["ints"][3], tree["ints"][3]) and back["ints"][7]["step"].item() == 2.0
    assert back["tuple"] == tree["tuple"] and isinstance(back["tuple"], tuple)
    assert back["list"][0].shape == (0, 3) and back["list"][1] == {"inf": float("inf")}
    assert back["big"] == 2**100 and back["bf16"].dtype == torch.bfloat16


def test_tensor_tree_refuses_objects(tmp_path: Path):
    with pytest.raises(TypeError, match="cannot store a object"):
        save_tree({"x": object()}, tmp_path, "state")


def test_adam_state_round_trip_continues_identically(tmp_path: Path):
    def model_and_optimizer():
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 2)
        return layer, torch.optim.Adam(layer.parameters(), lr=0.1)

    def step(layer, optimizer, x):
        optimizer.zero_grad()
        layer(x).pow(2).sum().backward()
        optimizer.step()

    x = torch.randn(5, 3)
    layer, optimizer = model_and_optimizer()
    for _ in range(3):
        step(layer, optimizer, x)
    save_tree({"optimizer": optimizer.state_dict(), "weights": layer.state_dict()}, tmp_path, "state")
    step(layer, optimizer, x)
    copy, fresh = model_and_optimizer()
    saved = load_tree(tmp_path, "state")
    copy.load_state_dict(saved["weights"])
    fresh.load_state_dict(saved["optimizer"])
    step(copy, fresh, x)
    for a, b in zip(layer.parameters(), copy.parameters()):
        assert torch.equal(a, b)


def test_store_keeps_the_newest_and_removes_leftovers(tmp_path: Path):
    model = torch.nn.Linear(2, 2)
    model.save_pretrained = lambda directory, **options: (directory / "model.safetensors").write_bytes(b"")
    store = CheckpointStore(tmp_path, keep_last=2)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".step-00000009.tmp-1").mkdir()  # an interrupted write
    for step in (3, 6, 9, 12):
        store.save(step, model, None, {"step": step})
    assert [c.step for c in store.checkpoints()] == [9, 12]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000009", "step-00000012"]
    checkpoint, state = store.latest(lambda c: c.training_state())
    assert checkpoint.step == 12 and state == {"step": 12}


def test_store_without_checkpoints(tmp_path: Path):
    with pytest.raises(TextVAEError, match="no checkpoint to resume from"):
        CheckpointStore(tmp_path).latest(lambda c: c.training_state())


def test_a_diverging_run_stops_in_one_line_and_leaves_nothing(recipe_file: Path, tmp_path: Path):
    """lr 1e30: every update is non-finite; after train.max_nonfinite in a row the run stops, and its directory
    (no checkpoint yet: nothing to resume) is removed, so the fixed command can run again."""
    run = tmp_path / "run"
    proc = textvae("train", recipe_file, "-o", run, "--set", "optim.lr=1e30", "--set", "train.max_nonfinite=3")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.splitlines()[-1]] and "3 model updates in a row" in errors[0]
    assert not run.exists()


# -- every stateful part resumes exactly (in-process: the checkpoint carries the random states) ---------------


def resume_from_mid_epoch(reference: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of a finished run cut back to its oldest kept checkpoint, then resumed in this process."""
    from textvae import api

    run = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(reference), str(run)], check=True)
    (run / "trainer_state.json").unlink()
    *_, oldest, newest = sorted((run / "checkpoints").iterdir())
    subprocess.run(["rm", "-r", str(newest)], check=True)
    api.resume(run)
    return run, oldest.name


def text_recipe(root: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    base = {
        "data": {"batch_size": 20},
        "model": {"embed_dim": 8, "hidden_dim": 16, "latent_dim": 2, "word_dropout": 0.2, "dropout_in": 0.2},
        "optim": {"type": "adam", "lr": 0.003},
        "train": {"epochs": 2, "log_every": 2, "checkpoints": {"every_steps": 3, "keep_last": 2}},
    }
    return tiny_recipe(root, **{k: {**base.get(k, {}), **sections.get(k, {})} for k in {*base, *sections}})


RECIPES = {
    "wae_gan": {"objective": {"type": "wae_gan", "discriminator": {"lr": 0.001}}},
    "savae": {"update": {"type": "savae", "svi": {"steps": 3, "lr": 0.5}}},
    "cyclical_freebits": {
        "objective": {"type": "elbo", "free_bits": 0.1, "kl_schedule": {"type": "cyclical", "cycles": 2}}
    },
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_stateful_part_resumes_exactly(name: str, tmp_path: Path, write_corpus, write_yaml, torch_single_thread):
    from textvae import api
    from textvae.config import build_recipe

    write_corpus(tmp_path / "train.txt", 120, seed=1)  # 6 updates an epoch: checkpoints at 3 and 6 in epoch 1
    write_corpus(tmp_path / "valid.txt", 20, seed=2)
    write_corpus(tmp_path / "test.txt", 20, seed=3)
    recipe = build_recipe(text_recipe(tmp_path, **RECIPES[name]), "recipe")
    api.train(recipe, tmp_path / "reference")
    run, resumed_from = resume_from_mid_epoch(tmp_path / "reference", tmp_path)
    assert resumed_from == "step-00000009"  # mid-epoch 2
    assert_same_run(run, tmp_path / "reference")


def test_image_run_with_dynamic_binarisation_resumes_exactly(tmp_path: Path, torch_single_thread):
    from test_image_training import image_recipe, write_images

    from textvae import api
    from textvae.config import build_recipe

    (tmp_path / "images").mkdir()
    root = write_images(tmp_path / "images")
    train = {"epochs": 2, "log_every": 2, "checkpoints": {"every_steps": 5, "keep_last": 2}}
    recipe = build_recipe(image_recipe(root, model_type="bernoulli_vae", train=train), "recipe")
    api.train(recipe, tmp_path / "reference")  # 8 updates an epoch, checkpoints at 5, 8, 10, 15, 16
    run, resumed_from = resume_from_mid_epoch(tmp_path / "reference", tmp_path)
    assert resumed_from == "step-00000015"
    assert_same_run(run, tmp_path / "reference")
