"""`textvae reproduce`: suite files, the resumable driver, mean ± sd over seeds, findings, and a kill test."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import textvae
from test_cli import assert_one_line_error

from textvae.errors import TextVAEError
from textvae.suites.driver import EVAL_FILE, FINAL_STATE, Job, Options, locked, plan, run_dir_of, steps_left
from textvae.suites.report import write_report
from textvae.suites.results import collapsed, collect, without_timing
from textvae.suites.suite import SUITES_FOLDER, load_suite, parse_seeds

SHIPPED = sorted(path.stem for path in SUITES_FOLDER.glob("*.yaml"))


def test_the_issue_suites_ship():
    assert {"synthetic", "he2019-yahoo", "he2019-yelp", "li2019-ptb", "yahoo-mini-cpu", "yahoo-mini-cpu-2h"} <= set(
        SHIPPED
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_every_row_of_every_shipped_suite_resolves(name: str):
    suite = load_suite(name)
    for method in suite.methods:
        for budget in ("full", "smoke"):
            recipe = suite.recipe(method, suite.seeds[0], budget)
            assert recipe.train.seed == suite.seeds[0]
        if budget == "smoke":
            assert recipe.train.epochs <= 2


@pytest.mark.parametrize("name", ["yahoo-mini-cpu", "yahoo-mini-cpu-2h"])
def test_cpu_suite_has_the_rows_and_seeds_the_issue_asks_for(name: str):
    suite = load_suite(name)
    rows = {m.name: len(suite.seeds_of(m)) for m in suite.methods}
    for name in ("lm", "vanilla", "anneal", "beta0.4", "cyclical", "freebits", "bn-vae", "aggressive-anneal"):
        assert name in rows
    assert {"savae-anneal", "wae-mmd-stochastic"} <= set(rows)
    assert all(rows[name] >= 3 for name in ("vanilla", "anneal", "aggressive-anneal", "bn-vae"))
    assert suite.recipe(suite.method("aggressive-anneal"), 1, "full").update.type == "aggressive"
    assert suite.recipe(suite.method("wae-mmd-stochastic"), 1, "full").objective.type == "wae_mmd"


def write_suite(folder: Path, recipe: Path, **extra) -> Path:
    data = {
        "name": "mini",
        "seeds": [1, 2],
        "baseline": "a",
        "methods": [{"name": "a", "recipe": str(recipe)}, {"name": "b", "recipe": str(recipe), "seeds": 1}],
        **extra,
    }
    path = folder / "mini.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"train": "t.txt", "valid": "v.txt", "test": "v.txt"},
                "model": {"type": "lstm_vae", "latent_dim": 2, "embed_dim": 4, "hidden_dim": 4},
                "train": {"epochs": 3},
            }
        )
    )
    return path


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"colour": "red"}, "key 'colour': unknown key"),
        ({"baseline": "zzz"}, "baseline: 'zzz' is not one of the methods"),
        ({"ordering": ["a", "q"]}, "ordering: 'q' is not one of the methods"),
        ({"seeds": [1, 1]}, "seeds are listed twice"),
        ({"eval": {"iw_samples": 0}}, "key 'eval.iw_samples'"),
    ],
)
def test_bad_suite_files_are_one_line_errors_naming_file_and_key(tmp_path, recipe_file, extra, needle):
    path = write_suite(tmp_path, recipe_file, **extra)
    with pytest.raises(TextVAEError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_recipe_and_unknown_suite_are_named(tmp_path, recipe_file):
    path = write_suite(tmp_path, tmp_path / "nope.yaml")
    with pytest.raises(TextVAEError, match="method a: recipe .*nope.yaml not found"):
        load_suite(path)
    with pytest.raises(TextVAEError, match="known suites: .*synthetic"):
        load_suite("no-such-suite")


def test_seeds_option():
    assert parse_seeds("1,2, 5") == [1, 2, 5]
    assert parse_seeds(None) is None
    for bad in ("1,x", "", "2,2"):
        with pytest.raises(TextVAEError, match="--seeds"):
            parse_seeds(bad)


def test_rows_take_the_first_seeds_and_overrides_in_order(tmp_path, recipe_file):
    suite = load_suite(write_suite(tmp_path, recipe_file, set=["train.epochs=7"], smoke=["train.epochs=1"]))
    a, b = suite.methods
    assert suite.seeds_of(a) == [1, 2] and suite.seeds_of(b) == [1]
    assert suite.seeds_of(b, [9, 8, 7]) == [9]
    assert suite.recipe(a, 2, "full").train.epochs == 7
    assert suite.recipe(a, 2, "smoke").train.epochs == 1
    assert suite.recipe(a, 2, "full", device="cuda").train.device == "cuda"


def fake_run(run_dir: Path, recipe: dict, metrics: dict, epochs: int = 2, seconds: float = 60.0, **state) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run_dir / FINAL_STATE).write_text(json.dumps({"epoch": epochs, "decays": 0, **state}))
    lines = [json.dumps({"kind": "epoch", "epoch": e + 1, "epoch_seconds": seconds}) for e in range(epochs)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    full = {"split": "test", "iw_samples": 500, "limit": None, "precision": "fp32", "latent_dim": 2, **metrics}
    (run_dir / EVAL_FILE).write_text(json.dumps(full))


def resolved(suite, name: str, seed: int) -> dict:
    return suite.recipe(suite.method(name), seed, "full").model_dump(mode="json", by_alias=True)


def test_plan_reads_what_is_on_disk(tmp_path, recipe_file):
    suite = load_suite(write_suite(tmp_path, recipe_file))
    out = tmp_path / "out"
    fake_run(run_dir_of(out, "a", 1), resolved(suite, "a", 1), {"iw_nll": 1.0})
    partial = run_dir_of(out, "a", 2)
    (partial / "checkpoints" / "step-00000004").mkdir(parents=True)
    (partial / "recipe.yaml").write_text(yaml.safe_dump(resolved(suite, "a", 2)))
    jobs = {job.key: job.steps for job in plan(suite, Options(out))}
    assert jobs == {"a/seed-1": [], "a/seed-2": ["resume", "eval"], "b/seed-1": ["train", "eval"]}
    # an evaluation with other settings is redone, the training is not
    (run_dir_of(out, "a", 1) / EVAL_FILE).write_text(json.dumps({"split": "test", "iw_samples": 5, "limit": None}))
    job = Job(suite.method("a"), 1, run_dir_of(out, "a", 1), tmp_path / "log")
    assert steps_left(suite, job, "full") == ["eval"]


def test_a_run_of_another_recipe_is_refused_not_overwritten(tmp_path, recipe_file):
    suite = load_suite(write_suite(tmp_path, recipe_file))
    out = tmp_path / "out"
    other = resolved(suite, "a", 1)
    other["model"]["hidden_dim"] = 99
    fake_run(run_dir_of(out, "a", 1), other, {"iw_nll": 1.0})
    before = (run_dir_of(out, "a", 1) / "recipe.yaml").read_bytes()
    with pytest.raises(TextVAEError, match="a/seed-1: trained with another recipe .* model.hidden_dim"):
        plan(suite, Options(out))
    assert (run_dir_of(out, "a", 1) / "recipe.yaml").read_bytes() == before


def test_a_second_driver_on_the_same_folder_is_refused(tmp_path):
    with locked(tmp_path / "s"):
        with pytest.raises(TextVAEError, match="another `textvae reproduce` is running"):
            with locked(tmp_path / "s"):
                pass


def test_mean_sd_over_seeds_and_findings(tmp_path, recipe_file):
    path = write_suite(
        tmp_path,
        recipe_file,
        seeds=[1, 2, 3],
        methods=[
            {"name": "lm", "recipe": str(recipe_file), "seeds": 1, "published": {"nll": 328.1}},
            {"name": "vae", "recipe": str(recipe_file), "label": "VAE"},
            {"name": "agg", "recipe": str(recipe_file), "label": "Aggressive"},
            {"name": "fb", "recipe": str(recipe_file), "label": "Free bits", "seeds": 2},
        ],
        baseline="vae",
        reference="lm",
        collapse_check=["vae"],
        ordering=["agg", "lm", "vae"],
    )
    suite = load_suite(path)
    out = tmp_path / "out"
    fake_run(run_dir_of(out, "lm", 1), resolved(suite, "lm", 1), {"iw_nll": 100.0, "latent_dim": 0})
    for seed, nll in zip((1, 2, 3), (101.0, 102.0, 103.0)):
        vae = {"iw_nll": nll, "kl": 0.01, "mi": 0.02, "au": 0}
        fake_run(run_dir_of(out, "vae", seed), resolved(suite, "vae", seed), vae)
        agg = {"iw_nll": nll + 0.5, "kl": 3.0, "mi": 2.0, "au": seed}
        fake_run(run_dir_of(out, "agg", seed), resolved(suite, "agg", seed), agg, seconds=150.0)
    for seed in (1, 2):  # the KL held at a free-bits target, the means constant: no information
        fake_run(
            run_dir_of(out, "fb", seed), resolved(suite, "fb", seed), {"iw_nll": 104.0, "kl": 7.0, "mi": 0.15, "au": 0}
        )
    results = collect(suite, out)
    rows = {row["method"]: row for row in results["rows"]}
    assert rows["vae"]["iw_nll"]["mean"] == pytest.approx(102.0)
    assert rows["vae"]["iw_nll"]["sd"] == pytest.approx(1.0)  # sample standard deviation
    assert rows["lm"]["iw_nll"]["sd"] is None and "kl" not in rows["lm"]  # one seed; no latent
    assert rows["agg"]["au"]["values"] == [1, 2, 3]
    assert rows["agg"]["train_minutes"]["mean"] == pytest.approx(5.0)
    assert rows["agg"]["train_ratio"] == pytest.approx(2.5)
    assert rows["lm"]["published"] == {"nll": 328.1}
    assert collapsed(rows["vae"]) is True and collapsed(rows["agg"]) is False and collapsed(rows["lm"]) is None
    assert collapsed(rows["fb"]) is True  # a KL of 7 nats with AU 0 is not a used latent
    text = "\n".join(results["findings"])
    assert "Free bits keeps" not in text and "Unused latent (AU 0 in every seed): VAE, Free bits." in text
    assert "Free bits holds KL 7.00 ± 0.00 with no active unit" in text and "VAE holds" not in text
    assert "VAE collapses at this scale" in text
    assert "Aggressive keeps a used latent" in text and "+2.50 nats relative to lm" in text
    # aggressive 102.5 ± 1 vs lm 100: reversed; lm 100 vs VAE 102 ± 1: holds
    assert "does not hold" in text and "reversed" in text and "lm < VAE by 2.00 (holds)" in text
    assert "Aggressive 2.50x" in text
    # a wall-clock change alone does not change what two drives must agree on
    slower = json.loads(json.dumps(results))
    slower["rows"][2]["train_minutes"]["mean"] = 99.0
    slower["rows"][2]["runs"]["1"]["train_minutes"] = 99.0
    assert without_timing(slower) == without_timing(results)

    write_report(results, out, "textvae reproduce mini -o out")
    md = (out / "report.md").read_text()
    assert "| VAE | 3/3 | 102.00 ± 1.00 |" in md  # method, seeds run/planned, IW-NLL mean ± sd
    assert "| *He et al. 2019, Tab. 1* |" not in md and "| *published* |" in md and "*328.1*" in md
    assert "VAE collapses at this scale" in md and "| Aggressive / 3 |" in md
    page = (out / "report.html").read_text()
    assert "<tr class='published'>" in page and "VAE collapses at this scale" in page and "http" not in page
    assert json.loads((out / "results.json").read_text()) == results


def test_cli_errors_are_one_line(tmp_path):
    assert_one_line_error(textvae("reproduce", "no-such-suite", "-o", tmp_path / "x"), "suite 'no-such-suite'")
    assert_one_line_error(
        textvae("reproduce", "synthetic", "-o", tmp_path / "x", "--only", "vanilla,zzz"), "no method 'zzz'"
    )
    assert_one_line_error(textvae("reproduce", "synthetic", "-o", tmp_path / "x", "--budget", "tiny"), "--budget")


# -- end to end: a real drive of the synthetic suite at the smoke budget, killed and resumed -------------------

DRIVE = ["--budget", "smoke", "--seeds", "1,2", "--only", "vanilla,aggressive", "--jobs", "2", "--status-every", "5"]


def drive(cwd: Path, out: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TEXTVAE_DEBUG", None)
    argv = [sys.executable, "-m", "textvae", "reproduce", "synthetic", "-o", out, *DRIVE]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def children_of(out: Path) -> list[str]:
    """Command lines of live processes working in `out` (from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(out) in text or f" {out.name}/runs/" in text:
            found.append(text)
    return found


def new_commands(out: Path, before: dict[str, int]) -> dict[str, list[str]]:
    """The `textvae` commands each job log gained since `before` (log name -> line count)."""
    gained = {}
    for log in sorted((out / "logs").glob("*.log")):
        lines = log.read_text().splitlines()[before.get(log.name, 0) :]
        gained[log.stem] = [line for line in lines if line.startswith("$ ")]
    return gained


def finished_steps(out: Path) -> dict[str, set[str]]:
    """Per job (log name): which of training and evaluation had finished."""
    done = {}
    for run_dir in (out / "runs").glob("*/seed-*"):
        steps = {"train"} if (run_dir / FINAL_STATE).is_file() else set()
        steps |= {"eval"} if (run_dir / EVAL_FILE).is_file() else set()
        done[f"{run_dir.parent.name}-{run_dir.name}"] = steps
    return done


@pytest.mark.slow
def test_a_killed_drive_rerun_gives_the_results_of_an_uninterrupted_one(tmp_path: Path):
    prepared = textvae("data", "prepare", "synthetic-generated", "-o", tmp_path / "data" / "synthetic")
    assert prepared.returncode == 0, prepared.stderr
    started = time.monotonic()
    whole = drive(tmp_path, "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    seconds = time.monotonic() - started
    reference = json.loads((tmp_path / "whole" / "results.json").read_text())
    # the report covers every row of the suite; --only limited what ran
    assert {row["method"]: len(row["seeds"]) for row in reference["rows"]} == {
        "lm": 0,
        "vanilla": 2,
        "aggressive": 2,
        "savae": 0,
    }

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "textvae", "reproduce", "synthetic", "-o", "killed", *DRIVE]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_at = random.Random().uniform(0.3, 0.8) * seconds
    time.sleep(kill_at)
    proc.send_signal(signal.SIGKILL)  # the driver dies; its training and evaluation children die with it
    proc.wait()
    print(f"killed the drive at {kill_at:.1f} s of {seconds:.1f} s")
    time.sleep(1)
    killed = tmp_path / "killed"
    assert not children_of(killed), "a training or evaluation process outlived its driver"
    done = finished_steps(killed)
    lines = {log.name: len(log.read_text().splitlines()) for log in (killed / "logs").glob("*.log")}
    rerun = drive(tmp_path, "killed")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    results = json.loads((killed / "results.json").read_text())
    assert without_timing(results) == without_timing(reference)
    # nothing finished before the kill ran again
    gained = new_commands(killed, lines)
    for job, steps in done.items():
        if "train" in steps:
            assert not any(" train " in line for line in gained[job]), (job, gained[job])
        if steps == {"train", "eval"}:
            assert gained[job] == [], (job, gained[job])
    print("rerun:", {job: [line.split()[3:5] for line in cmds] for job, cmds in gained.items()})
    assert (killed / "report.html").is_file() and (killed / "report.md").is_file()


@pytest.mark.slow
def test_a_drive_killed_mid_training_resumes_that_run_from_its_checkpoint(tmp_path: Path):
    prepared = textvae("data", "prepare", "synthetic-generated", "-o", tmp_path / "data" / "synthetic")
    assert prepared.returncode == 0, prepared.stderr
    one = ["--budget", "smoke", "--seeds", "1", "--only", "aggressive", "--status-every", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "textvae", "reproduce", "synthetic", "-o", "s", *one]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "s" / "runs" / "aggressive" / "seed-1"
    deadline = time.monotonic() + 300
    while not any((run_dir / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # training has written a checkpoint and not finished
    proc.wait()
    assert not (run_dir / FINAL_STATE).exists(), "training finished before the kill: nothing was tested"
    rerun = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    log = (tmp_path / "s" / "logs" / "aggressive-seed-1.log").read_text()
    steps = [
        line.split()[3] + (" --resume" if "--resume" in line else "") for line in log.splitlines() if line[:2] == "$ "
    ]
    assert steps == ["train", "train --resume", "eval"], steps
    assert (run_dir / FINAL_STATE).is_file() and (run_dir / EVAL_FILE).is_file()
