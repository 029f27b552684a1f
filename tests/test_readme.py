"""The README opens with exactly two set-up commands, and CI runs the second one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_quickstart_and_test_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    quick, tests = commands
    assert quick.startswith("pip install torch==2.13.0") and "textvae quickstart" in quick
    assert tests.startswith("pip install torch==2.13.0") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    extract = re.search(r"cmd=\$\((.+?) \|\| true\)", script).group(1)
    found = subprocess.run(["bash", "-c", extract], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert found.strip() == _setup_commands()[1]
