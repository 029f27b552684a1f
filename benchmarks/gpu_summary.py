"""The one JSON summary of benchmarks/gpu_check.sh, from the files its steps left in a folder.

    python benchmarks/gpu_summary.py OUT PYTEST_EXIT SPEED_EXIT PROJECTION_EXIT STARTED_EPOCH_SECONDS

Reads OUT/cuda.xml (pytest's JUnit XML), OUT/speed.json and OUT/projection.json (a step whose JSON is missing
or broken is reported with the last lines of its .log); exits 1 when any step failed.
"""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path


def step_json(out: Path, name: str) -> dict:
    try:
        return json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        log = out / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-3:] if log.is_file() else []
        return {"error": " | ".join(tail) or "no output"}


def test_counts(xml: Path) -> dict:
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as err:
        return {"error": str(err)}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def summary(out: Path, pytest_rc: int, speed_rc: int, projection_rc: int, started: float) -> dict:
    import torch

    return {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cuda_tests": {"exit": pytest_rc, **test_counts(out / "cuda.xml")},
        "speed": {"exit": speed_rc, **step_json(out, "speed")},
        "projection": {"exit": projection_rc, **step_json(out, "projection")},
        "seconds": round(time.time() - started),
        "logs": str(out),
    }


def main() -> int:
    out, *codes = sys.argv[1:]
    pytest_rc, speed_rc, projection_rc, started = map(int, codes)
    print(json.dumps(summary(Path(out), pytest_rc, speed_rc, projection_rc, started), indent=1))
    return 0 if pytest_rc == speed_rc == projection_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
