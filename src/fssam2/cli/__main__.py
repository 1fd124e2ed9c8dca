"""`python -m fssam2.cli ...`, the same as `fssam2 ...`."""

from fssam2.cli import main

main()
