"""What a run was made with: package versions, machine and device (written to RUN_DIR/environment.json)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("textvae", "torch", "transformers", "datasets", "tokenizers", "sentencepiece", "sacrebleu")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(directory: Path) -> str | None:
    """The checked-out commit of the repository holding `directory` (with '+dirty' for local changes)."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def describe_environment(device: str) -> dict:
    """Versions, platform, CPU threads and the device (with its name on CUDA), and the UTC start time."""
    info = {
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        **{package: _version(package) for package in PACKAGES},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": git_commit(Path(__file__).resolve().parent),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info
