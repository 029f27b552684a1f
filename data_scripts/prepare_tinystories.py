"""tinystories: the TinyStories sample, one story per line (every 15th story to valid and to test).

Usage: python data_scripts/prepare_tinystories.py [--from DIR_OR_ARCHIVE] [--out DIR] [--overwrite]  (see README.md)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from textvae.cli.data import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("tinystories"))
