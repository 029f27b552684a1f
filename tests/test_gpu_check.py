"""benchmarks/gpu_check.sh on a machine without CUDA (exits at once, one line), and its JSON summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_summary import summary  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_without_cuda_it_exits_at_once_with_one_line():
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA GPU" in proc.stderr


def test_summary_reads_junit_counts_and_step_outputs(tmp_path: Path):
    (tmp_path / "cuda.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="0">'
        '<testcase classname="tests.test_cuda" name="test_a"/>'
        '<testcase classname="tests.test_cuda" name="test_b"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_cuda" name="test_c"/></testsuite></testsuites>'
    )
    (tmp_path / "speed.json").write_text(json.dumps({"tokens_per_s": 1.0}))
    (tmp_path / "projection.json").write_text("")  # the step died before printing
    (tmp_path / "projection.log").write_text("a\nb\nRuntimeError: CUDA out of memory\n")
    out = summary(tmp_path, 1, 0, 1, 0)
    assert out["cuda_tests"] == {
        "exit": 1,
        "tests": 3,
        "failures": 1,
        "errors": 0,
        "skipped": 0,
        "failed": ["tests.test_cuda::test_b"],
    }
    assert out["speed"] == {"exit": 0, "tokens_per_s": 1.0}
    assert out["projection"]["exit"] == 1 and "CUDA out of memory" in out["projection"]["error"]
