"""The `steer` command line: main.py builds the typer app, one module per command,
options.py holds what the commands share (one-line errors, devices, shared options)."""

from .main import app, main

__all__ = ["app", "main"]
