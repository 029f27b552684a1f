"""MNIST, 28x28 grey digits for dynamic binarisation: 55,000 / 5,000 / 10,000 images.

Usage: python data_scripts/prepare_mnist.py [--from DIR] [--out DIR] [--overwrite]  (see README.md)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from textvae.cli.data import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("mnist"))
