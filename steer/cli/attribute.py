"""`steer attribute`: why this token? The SAE latents that caused it, checked by ablation."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .options import (
    CONTRAST_OPTION,
    DEVICE_HELP,
    MODEL_HELP,
    POSITION_OPTION,
    SAE_HELP,
    TARGET_OPTION,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    sae_or_default,
)

ROWS = ("baseline", "steered")


@friendly_errors
def attribute(
    sae: Path = typer.Option(None, "--sae", help=SAE_HELP + " Default: the shipped SAE."),
    prompt: str = typer.Option(None, "--prompt", "-p", help="The text (or the chat prompt)."),
    completion: str = typer.Option(
        None,
        "--completion",
        "-c",
        help="A completion of the prompt (e.g. from steer generate): positions then count in it, "
        "and the prompt is wrapped in the chat template as generate does.",
    ),
    generated: Path = typer.Option(
        None,
        "--generated",
        help="The JSON `steer generate --json` wrote: its prompt, its exact tokens and, for the "
        "steered row, its features applied as they were.",
    ),
    row: str = typer.Option("baseline", "--row", help="With --generated: baseline or steered."),
    target: str = TARGET_OPTION,
    position: int = POSITION_OPTION,
    contrast: str = CONTRAST_OPTION,
    top: int = typer.Option(10, "--top", "-n", help="Latents to show."),
    method: str = typer.Option(
        "linear",
        "--method",
        help="linear (attribution patching: one forward, one backward) or ig (integrated "
        "gradients over --steps points).",
    ),
    steps: int = typer.Option(10, "--steps", help="Integrated-gradient steps."),
    no_exact: bool = typer.Option(
        False, "--no-exact", help="Skip the exact ablation check (one batched forward)."
    ),
    chat: bool = typer.Option(
        None,
        "--chat/--no-chat",
        help="Wrap the prompt in the chat template [default: with a completion, when the "
        "tokenizer has one; without, the raw text].",
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Why this token? Attribute a token's logit to the SAE latents that caused it.

    Every active latent at every position is scored by attribution patching (activation x
    gradient of the logit along its decoder direction), the SAE's error term as its own
    node; the top latents are checked by ablating them; for each, the context tokens that
    drive it are found by gradient x embedding."""
    from steer.attribution.report import build_context, explain
    from steer.attribution.targets import context_position, resolve_target

    if method not in ("linear", "ig"):
        raise ValueError(f"--method must be linear or ig, got {method!r}")
    record, levers_spec = None, []
    if generated is not None:
        record = _read_generated(generated, row)
        prompt = prompt or record["prompt"]
        levers_spec = record["levers"]
    if prompt is None:
        raise ValueError("give a prompt with --prompt (or a generate JSON with --generated)")
    if completion is not None and record is not None:
        raise ValueError("give --completion or --generated, not both")

    sae = sae_or_default(sae, model)
    lm, sae_model = load_for_steering(sae, model, device, "fp32", [])
    with_completion = completion is not None or record is not None
    if record is not None and chat is None:
        chat = record["chat"]
    use_chat = (lm.is_chat if with_completion else False) if chat is None else chat
    ids, start = build_context(
        lm, prompt, record["token_ids"] if record else completion, chat=use_chat
    )
    q = context_position(lm.tokenizer, ids, start, position, target, with_completion)
    tgt = resolve_target(lm.tokenizer, ids, position=q, target=target, contrast=contrast)
    catalog = load_catalog_for(sae, sae_model)
    levers = _levers(lm, sae_model, levers_spec, record, catalog, start)
    result = explain(
        lm, sae_model, ids, tgt, top=top, method=method, steps=steps, exact=not no_exact,
        levers=levers,
    )  # fmt: skip
    labels = {r.latent: catalog.label(r.latent) if catalog else "" for r in result.rows}
    if json_out:
        out = result.to_dict()
        for r in out["rows"]:
            r["label"] = labels[r["latent"]]
        out.update(model=lm.name, sae=str(sae), hookpoint=sae_model.cfg.hookpoint, start=start)
        out["levers"] = [lv.to_dict() for lv in levers_spec]
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    _print(lm, sae_model, result, labels, start)


def _read_generated(path: Path, row: str) -> dict:
    """prompt, chat, token_ids and levers of one row of `steer generate --json` output."""
    from steer.steering import Intervention

    if row not in ROWS:
        raise ValueError(f"--row must be baseline or steered, got {row!r}")
    try:
        data = json.loads(Path(path).read_text())
        prompt, settings, result = data["prompt"], data["settings"], data[row]
        token_ids = [int(t) for t in result["token_ids"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not the JSON of steer generate --json ({err})") from None
    levers = (
        [Intervention.from_dict({k: v for k, v in iv.items() if k != "label"}) for iv in data["interventions"]]
        if row == "steered"
        else []
    )  # fmt: skip
    return {
        "prompt": prompt,
        "chat": settings.get("chat"),
        "positions": settings.get("positions", "all"),
        "relative": data.get("strength_units") == "relative",
        "token_ids": token_ids,
        "levers": levers,
    }


def _levers(lm, sae, levers_spec, record, catalog, start):
    if not any(iv.enabled for iv in levers_spec):
        return None
    from steer.steering import SteeringHook

    if record["relative"] and catalog is None:
        raise ValueError("the steered row used strengths relative to a catalog this SAE lacks")
    return SteeringHook(
        lm,
        sae,
        levers_spec,
        max_acts=catalog.max_acts if record["relative"] else None,
        positions=record["positions"],
        prompt_len=start,
    )


def _print(lm, sae, result, labels, start) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    tgt = result.target
    metric = f"logit({result.target_text!r})"
    if result.contrast_text is not None:
        metric += f" - logit({result.contrast_text!r})"
    exact = "" if result.error_exact is None else f", exact {result.error_exact:+.3g}"
    console.print(
        Text.assemble(
            (lm.name, "bold"),
            f" · {sae.cfg.hookpoint} · {result.method} · {metric} = {result.metric:.3g}"
            f" · position {tgt.read_at + 1} · {result.seconds:.2f} s",
        )
    )
    console.print(_context(result.tokens, start, {tgt.read_at}, result.target_text))
    console.print(
        f"features {result.features_total:+.3g} · SAE error {result.error_total:+.3g}{exact}"
        f" · unexplained share {result.error_share:.0%}"
    )
    table = Table(expand=False)
    for name, justify in [("feature", "right"), ("attribution", "right"), ("exact", "right")]:
        table.add_column(name, justify=justify)
    table.add_column("at", overflow="fold")
    table.add_column("driven by", overflow="fold")
    table.add_column("label", overflow="fold")
    for r in result.rows:
        where = ", ".join(repr(result.tokens[p]) for p, _ in r.positions[:2])
        drivers = " ".join(repr(result.tokens[t]) for t, _ in r.drivers)
        table.add_row(
            str(r.latent),
            f"{r.score:+.3f}",
            "" if r.exact is None else f"{r.exact:+.3f}",
            where,
            drivers,
            labels.get(r.latent, ""),
        )
    console.print(table)


def _context(tokens, start, marks, target_text):
    """The context on one line, the completion underlined, the read position bold."""
    from rich.text import Text

    text = Text()
    for i, t in enumerate(tokens):
        style = "bold reverse" if i in marks else ("underline" if i >= start else "")
        text.append(t, style=style)
    text.append(" → ", style="dim")
    text.append(target_text, style="bold green")
    return text
