"""`python -m fmlab` is the `fmlab` command."""

from fmlab.cli import main

main()
