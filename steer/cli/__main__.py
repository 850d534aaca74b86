"""`python -m steer.cli ...` (kept for torchrun command lines written before `-m steer`)."""

from .main import main

main()
