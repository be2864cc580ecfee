"""`python -m torchrun_cli` is the same as `torchjob`."""

from torchrun_cli.cli import main

main()
