"""Helpers shared by the CLI commands: one-line errors, device choice."""

from __future__ import annotations

import functools
import sys

import typer


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return an Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(command):
    """Turn the library's ValueError/OSError into one line on stderr and exit code 1.

    Library code signals bad input by raising ValueError (or a subclass) with a message
    written for the user; a traceback would only hide that message.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise fail(message) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def resolve_device(device: str) -> str:
    """`auto` -> cuda when available, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
