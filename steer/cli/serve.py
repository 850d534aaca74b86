"""`steer serve`: steered generation for any OpenAI client (steer/serve/ does the work)."""

from __future__ import annotations

from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_HELP,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    sae_or_default,
)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@friendly_errors
def serve(
    sae: Path = typer.Option(
        None,
        "--sae",
        help=SAE_HELP + " Default: the SAE shipped for the embedded model.",
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    steer: str = typer.Option(
        "",
        "--steer",
        help="The steering expression for requests that name none (default: the baseline). "
        'A request\'s own "steer" field wins; "" or null there asks for the baseline.',
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (default: this machine only)."
    ),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    api_key: str = typer.Option(
        None,
        "--api-key",
        envvar="STEER_API_KEY",
        help="Require 'Authorization: Bearer TOKEN' on every /v1 call (or set $STEER_API_KEY).",
    ),
    max_tokens: int = typer.Option(
        256, "--max-tokens", "-n", help="Tokens per reply when a request names no max_tokens."
    ),
    raw: bool = typer.Option(
        False, "--raw", help="Strengths in raw SAE units even when a catalog exists."
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("fp32", "--dtype", help="Model weights: fp32 or bf16."),
) -> None:
    """Serve steered generation over an OpenAI-compatible HTTP API.

    POST /v1/chat/completions and /v1/completions (streaming or not), GET /v1/models.
    Steer a request with a top-level "steer" field: extra_body={"steer": EXPR} in the
    openai client. Requests are queued and run one at a time."""
    import uvicorn

    from steer.serve.api import create_app
    from steer.serve.service import SteeringService

    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {port}")
    if max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {max_tokens}")
    _check_can_listen(host, port)  # before the model loads: a taken port fails at once
    sae = sae_or_default(sae)
    lm, sae_model = load_for_steering(sae, model, device, dtype)
    catalog = None if raw else load_catalog_for(sae, sae_model)
    service = SteeringService(
        lm,
        sae_model,
        sae_dir=sae,
        max_acts=catalog.max_acts if catalog is not None else None,
        default_steer=steer,
        max_tokens=max_tokens,
    )
    if host not in LOCAL_HOSTS and not api_key:
        typer.echo(
            f"warning: listening on {host} without --api-key: anyone who can reach it can use it",
            err=True,
        )
    units = "x max activation" if catalog is not None else "raw SAE units"
    typer.echo(
        f"serving {service.model_id} steered by {sae} ({sae_model.cfg.hookpoint}, strengths in "
        f"{units}) at http://{host}:{port}/v1 · default steer: "
        f"{service.default_steer or '(baseline)'}",
        err=True,
    )
    uvicorn.run(create_app(service, api_key), host=host, port=port, log_level="warning")


def _check_can_listen(host: str, port: int) -> None:
    """ValueError (one line) when host:port cannot be listened on: taken, not ours."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as err:
        reason = err.strerror or str(err)
        raise ValueError(f"cannot listen on {host}:{port}: {reason}") from None
