"""One module per `steer` subcommand. Each imports only typer at module level."""
