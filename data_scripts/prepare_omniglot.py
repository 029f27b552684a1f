"""OMNIGLOT 28x28: Burda et al.'s chardata.mat (23,000 / 1,345 / 8,070) if --from DIR holds it, else
resized from Lake et al.'s originals (23,000 / 1,345 / 8,115; not the benchmark, not comparable).

Usage: python data_scripts/prepare_omniglot.py [--from DIR] [--out DIR] [--overwrite]  (see README.md)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from textvae.cli.data import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("omniglot"))
