"""Kill `textvae reproduce` at random moments and rerun it: is results.json what an uninterrupted drive gives?

    python benchmarks/kill_reproduce.py synthetic --trials 3 -- --budget smoke --jobs 2

Runs the suite once uninterrupted (the reference), then per trial: a fresh drive SIGKILLed at a uniformly random
moment of the reference's duration, then the same command again to the end; compares results.json without
its wall-clock fields and says which steps the rerun had to do. Run in a folder where the suite's data is
prepared (e.g. `textvae data prepare synthetic-generated -o data/synthetic`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from textvae.suites.results import without_timing


def drive(suite: str, out: Path, extra: list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "textvae", "reproduce", suite, "-o", str(out), *extra]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.driver.log", "ab") as log:  # the driver's own lines, kept per drive
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


def commands(out: Path) -> dict[str, list[str]]:
    """Per job log: the `textvae` steps the driver started (e.g. "train --resume", "eval")."""
    found = {}
    for log in sorted((out / "logs").glob("*.log")):
        lines = log.read_text().splitlines()
        found[log.stem] = [line.split()[3] + _resume(line) for line in lines if line.startswith("$ ")]
    return found


def _resume(line: str) -> str:
    return " --resume" if "--resume" in line else (" --overwrite" if "--overwrite" in line else "")


def gained(now: dict[str, list[str]], before: dict[str, list[str]]) -> list[str]:
    return [f"{job} {step}" for job, steps in now.items() for step in steps[len(before.get(job, [])) :]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--work", default="kill-reproduce", help="folder for the drives")
    parser.add_argument("--seed", type=int, help="seed of the kill times (default: random)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # after --: the reproduce options
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    work = Path(args.work)
    rng = random.Random(args.seed)
    started = time.monotonic()
    if drive(args.suite, work / "reference", extra).wait() != 0:
        raise SystemExit(f"the uninterrupted drive failed: see {work / 'reference.driver.log'}")
    seconds = time.monotonic() - started
    reference = without_timing(json.loads((work / "reference" / "results.json").read_text()))
    print(f"reference drive: {seconds:.1f} s, {len(gained(commands(work / 'reference'), {}))} commands")
    for trial in range(1, args.trials + 1):
        out = work / f"trial-{trial}"
        kill_at = rng.uniform(0.05, 0.95) * seconds
        proc = drive(args.suite, out, extra)
        time.sleep(kill_at)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(1)
        before = commands(out)
        rerun = time.monotonic()
        if drive(args.suite, out, extra).wait() != 0:
            print(f"trial {trial}: killed at {kill_at:.1f} s; the rerun FAILED")
            continue
        redone = gained(commands(out), before)
        same = without_timing(json.loads((out / "results.json").read_text())) == reference
        print(
            f"trial {trial}: killed at {kill_at:.1f} s after {len(gained(before, {}))} commands; rerun "
            f"{time.monotonic() - rerun:.1f} s: {'; '.join(redone) or 'nothing to do'}; results.json "
            f"{'identical' if same else 'DIFFERENT'} to the reference (wall-clock fields aside)"
        )


if __name__ == "__main__":
    main()
