"""`python -m textvae ...` (also what `torchrun -m textvae` runs)."""

from textvae.cli.app import main

main()
