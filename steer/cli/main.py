"""The `steer` command line. Commands live in steer/commands/, one module each.

Only typer is imported here: torch and transformers load inside the commands, so
`steer --help` answers at once.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="steer",
    help="Train TopK sparse autoencoders on a language model and steer it with their features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Train TopK sparse autoencoders on a language model and steer it with their features."""


# (command name, module in steer.cli, function name)
COMMANDS = [
    ("chat", "chat", "chat"),
    ("train", "train", "train"),
    ("cache", "cache", "cache"),
    ("report", "report", "report"),
    ("eval", "evaluate", "evaluate"),
    ("generate", "generate", "generate"),
    ("attribute", "attribute", "attribute"),
    ("circuit", "circuit", "circuit"),
    ("features", "features", "features"),
    ("index", "index", "index"),
    ("explain", "explain", "explain"),
    ("models", "models", "models"),
    ("web", "web", "web"),
    ("serve", "serve", "serve"),
    ("vector", "vector", "vector"),
    ("sweep", "sweep", "sweep"),
    ("history", "history", "history_app"),  # a group: steer history export / list
]

for name, module_name, function_name in COMMANDS:
    try:
        module = importlib.import_module(f"steer.cli.{module_name}")
    except ModuleNotFoundError as err:
        if err.name != f"steer.cli.{module_name}":
            raise
        continue  # command not built yet
    command = getattr(module, function_name)
    if isinstance(command, typer.Typer):
        app.add_typer(command, name=name)
    else:
        app.command(name)(command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
