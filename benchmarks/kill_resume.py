"""Kill training at random moments with SIGKILL, resume, repeat; check the end result equals an uninterrupted run.

    python benchmarks/kill_resume.py RECIPE.yaml --trials 5 --kills 3 [--set key=value ...]

Each trial starts `textvae train`, kills it after a random delay, and resumes it with `textvae train --resume`
(killing the resumed processes too, `--kills` times in all) until it finishes; a kill before the first
checkpoint starts the run again with --overwrite. The finished run's metrics.jsonl (wall-clock figures aside),
trainer_state.json and model weights are then compared bitwise with the uninterrupted reference run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

TIMING = {"epoch_seconds", "tokens_per_s", "train_tokens_per_s"}


def textvae(*args: str | Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "textvae", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"textvae failed ({proc.returncode}):\n{output}")
    return output


def comparable(run: Path) -> tuple[list[dict], dict, dict[str, torch.Tensor]]:
    metrics = [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    return metrics, json.loads((run / "trainer_state.json").read_text()), load_file(run / "model/model.safetensors")


def same(a: Path, b: Path) -> bool:
    (ma, sa, wa), (mb, sb, wb) = comparable(a), comparable(b)
    return ma == mb and sa == sb and wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def trial(recipe: Path, overrides: list[str], run: Path, kills: int, longest: float, rng: random.Random) -> list[str]:
    """Train with `kills` random SIGKILLs; returns what happened at each kill."""
    events = []
    command: list[str | Path] = ["train", recipe, "-o", run, *overrides]
    for _ in range(kills):
        proc = textvae(*command)
        delay = rng.uniform(0.2, longest)
        try:
            proc.wait(timeout=delay)
            finish(proc)  # finished before the kill
            events.append(f"finished before {delay:.1f}s")
            return events
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()
        checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*")) if run.exists() else []
        events.append(f"killed at {delay:.1f}s ({checkpoints[-1] if checkpoints else 'no checkpoint yet'})")
        if checkpoints:
            command = ["train", "--resume", run]
        else:
            command = ["train", recipe, "-o", run, *overrides, "--overwrite"]
    finish(textvae(*command))
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = [item for value in args.overrides for item in ("--set", value)]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        started = time.perf_counter()
        finish(textvae("train", args.recipe, "-o", reference, *overrides))
        seconds = time.perf_counter() - started
        print(f"reference run: {seconds:.1f} s ({len(comparable(reference)[0])} metric records)")
        print("| trial | kills (time after start, newest checkpoint then) | equal to reference |")
        print("|---|---|---|")
        failures = 0
        for i in range(args.trials):
            run = Path(tmp) / f"trial{i}"
            events = trial(args.recipe, overrides, run, args.kills, seconds, rng)
            equal = same(run, reference)
            failures += not equal
            print(f"| {i + 1} | {'; '.join(events)} | {'bitwise' if equal else 'DIFFERENT'} |", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
