"""Yahoo Answers (Yang et al. 2017 split, He et al. 2019 release): 100k/10k/10k + vocab.txt.

Usage: python data_scripts/prepare_yahoo.py [--from DIR_OR_ARCHIVE] [--out DIR] [--overwrite]  (see README.md)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from textvae.cli.data import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("yahoo"))
