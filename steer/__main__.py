"""`python -m steer ...` runs the command line (also what torchrun launches: `-m steer train`)."""

from steer.cli.main import main

main()
