"""Measure one full-scale training epoch and the update rules' step costs on a device, and project the wall time of
every row of a full-scale suite from them. Prints one JSON object on stdout (progress on stderr).

    python benchmarks/gpu_projection.py --suite he2019-yahoo --device cuda [--aggressive-steps 4] [--savae-steps 2]

The epoch is the suite's baseline (vanilla) recipe trained for one epoch by the real trainer (validation
included) on `data/yahoo` when it is prepared, else on yahoo-mini (9k of the 100k training documents, the same
vocabulary and model), scaled to the full split by its token count. Aggressive and SA-VAE steps are timed on
fresh random batches of the same data. Projection per row: aggressive rows spend `--aggressive-epochs` epochs
(He et al.: the aggressive phase ends within the first few) at the measured aggressive cost and the rest at the
joint cost; every row is projected at its recipe's maximum number of epochs (lr-decay stopping only shortens it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from update_rules import time_rule  # benchmarks/ is on the path of a script run from it

from textvae import api
from textvae.config import Recipe, apply_overrides, build_recipe
from textvae.suites.suite import load_suite

FULL_VALID_DOCS = 10_000
FULL_TRAIN_TOKENS = {"yahoo": 100_000 * 79.0, "yelp": 100_000 * 96.0}  # REFERENCE.md: 100k documents each


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def on_available_data(recipe: Recipe) -> tuple[Recipe, str]:
    """The recipe on its own data when prepared, else on yahoo-mini's files (same vocabulary); and which."""
    if Path(recipe.data.train).is_file():
        return recipe, "full"
    mini = Path("data/yahoo-mini")
    if not (mini / "train.txt").is_file():
        raise SystemExit(f"neither {recipe.data.train} nor data/yahoo-mini/train.txt: run `textvae data prepare`")
    data = recipe.data.model_copy(
        update={
            "train": str(mini / "train.txt"),
            "valid": str(mini / "valid.txt"),
            "test": str(mini / "test.txt"),
            "tokenizer": recipe.data.tokenizer.model_copy(update={"vocab_file": str(mini / "vocab.txt")}),
        }
    )
    return recipe.model_copy(update={"data": data}), "yahoo-mini"


def with_overrides(recipe: Recipe, overrides: list[str]) -> Recipe:
    return build_recipe(apply_overrides(recipe.model_dump(mode="json", by_alias=True), overrides), "--set")


def measure_epoch(recipe: Recipe, device: str) -> dict:
    """One epoch of the real trainer: training seconds, validation seconds, steps and tokens."""
    train = recipe.train.model_copy(update={"epochs": 1, "device": device, "log_every": 10_000})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        api.train(recipe.model_copy(update={"train": train}), Path(tmp) / "run")
        total = time.perf_counter() - started
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r.get("kind") == "epoch")
    return {
        "train_seconds": epoch["epoch_seconds"],
        "wall_seconds": total,
        "steps": epoch["step"],
        "train_tokens_per_s": epoch.get("train_tokens_per_s"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="he2019-yahoo")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--aggressive-steps", type=int, default=4, help="timed aggressive outer steps")
    parser.add_argument("--savae-steps", type=int, default=2, help="timed SA-VAE steps")
    parser.add_argument("--aggressive-epochs", type=float, default=5.0, help="epochs in aggressive mode (assumed)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override (all rows)")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    rows, costs = {}, {}
    base = suite.method(suite.baseline or suite.methods[0].name)
    recipe, data = on_available_data(suite.recipe(base, suite.seeds[0], "full", args.device))
    recipe = with_overrides(recipe, args.overrides)
    log(f"one epoch of {base.name} on {data} ({args.device})")
    epoch = measure_epoch(recipe, args.device)
    train_tokens = epoch["train_tokens_per_s"] * epoch["train_seconds"]  # what the epoch trained on
    full_tokens = FULL_TRAIN_TOKENS.get(suite.name.split("-")[-1], train_tokens)
    scale = full_tokens / train_tokens if data != "full" else 1.0
    valid_docs = sum(1 for line in Path(recipe.data.valid).read_text().splitlines() if line.strip())
    # validation (and start-up) time, scaled to the full 10k validation documents
    validation = (epoch["wall_seconds"] - epoch["train_seconds"]) * (FULL_VALID_DOCS / valid_docs if scale > 1 else 1)
    joint_epoch = epoch["train_seconds"] * scale + validation  # validation: the same 10k documents either way
    joint_step = epoch["train_seconds"] / max(1, epoch["steps"])
    steps_full = epoch["steps"] * scale
    for method in suite.methods:
        row_recipe = suite.recipe(method, suite.seeds[0], "full", args.device)
        rule = row_recipe.update.type
        epochs = row_recipe.train.epochs
        if rule == "joint":
            hours = epochs * joint_epoch / 3600
        else:
            if rule not in costs:
                steps = args.aggressive_steps if rule == "aggressive" else args.savae_steps
                timing_recipe = with_overrides(on_available_data(row_recipe)[0], args.overrides)
                log(f"timing {steps} {rule} steps ({method.name})")
                costs[rule] = time_rule(timing_recipe, steps, args.device, warmup=1)
            step = costs[rule]["s_per_step"]
            if rule == "aggressive":
                on = min(args.aggressive_epochs, epochs)
                hours = (on * (steps_full * step + validation) + (epochs - on) * joint_epoch) / 3600
            else:
                hours = epochs * (steps_full * step + validation) / 3600
        rows[method.name] = {
            "update": rule,
            "max_epochs": epochs,
            "seeds": len(suite.seeds_of(method)),
            "hours_per_run": round(hours, 2),
            "hours_all_seeds": round(hours * len(suite.seeds_of(method)), 2),
        }
    print(
        json.dumps(
            {
                "suite": suite.name,
                "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device,
                "epoch_measured_on": data,
                "measured_epoch": epoch,
                "scale_to_full_split": round(scale, 3),
                "validation_seconds_full": round(validation, 1),
                "joint_epoch_seconds_full": round(joint_epoch, 1),
                "joint_step_seconds": joint_step,
                "update_rule_steps": costs,
                "assumed_aggressive_epochs": args.aggressive_epochs,
                "rows": rows,
                "suite_hours_one_gpu": round(sum(r["hours_all_seeds"] for r in rows.values()), 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
