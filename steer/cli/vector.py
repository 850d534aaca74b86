"""`steer vector`: build a contrastive steering vector, or show what a saved one is made of."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_HELP,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    read_prompts,
    sae_or_default,
)

PROMPTS_HELP = (
    "A prompt, or a file with one prompt per line (blank lines and # comments skipped); repeatable."
)


@friendly_errors
def vector(
    name: str = typer.Argument(None, help="The vector's name (letters, digits, _)."),
    sae: Path = typer.Option(None, "--sae", help=SAE_HELP + " Default: the shipped one."),
    positive: list[str] = typer.Option(
        [], "--positive", "-p", help="Prompts that carry the concept. " + PROMPTS_HELP
    ),
    negative: list[str] = typer.Option(
        [], "--negative", "-n", help="Prompts that do not. " + PROMPTS_HELP
    ),
    tokens: str = typer.Option(
        "mean",
        "--tokens",
        help="mean: each prompt's residual averaged over its tokens (the first skipped); "
        "last: its last token (CAA).",
    ),
    top: int = typer.Option(10, "--top", help="Features to decompose the vector into."),
    force: bool = typer.Option(False, "--force", help="Replace a saved vector of that name."),
    list_saved: bool = typer.Option(False, "--list", help="List the vectors saved beside the SAE."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Build a steering vector from two sets of prompts, or show a saved one.

    With --positive and --negative: the difference of the prompts' mean activations at the
    SAE's hook point, saved beside the SAE (vectors/NAME.*) and usable in steering
    expressions as v:NAME. Strength 1 adds that difference (moves the negative prompts'
    mean onto the positive ones'). Without them: the saved vector NAME.

    Either way, the vector is decomposed into SAE features (orthogonal matching pursuit
    over the decoder directions): the features that make it up, their weights, the share
    of the vector they explain, and the expression that steers with them instead."""
    from sae import load_sae
    from steer.steering.vectors import list_vectors, read_vector, vector_path

    sae = sae_or_default(sae, model)
    if list_saved:
        _list(sae, json_out, list_vectors, read_vector)
        return
    if name is None:
        raise ValueError("give the vector's NAME (or --list)")
    if top < 1:
        raise ValueError(f"--top must be positive, got {top}")
    path = vector_path(sae, name)  # checks the name before anything loads
    if positive or negative:
        if not (positive and negative):
            raise ValueError("give both --positive and --negative prompts")
        if path.is_file() and not force:
            raise ValueError(
                f"vector {name!r} is already saved in {path.parent}: --force replaces it"
            )
        pos, neg = read_prompts(positive, "--positive"), read_prompts(negative, "--negative")
        vec, sae_model = _build(sae, name, pos, neg, tokens, model, device)
    else:
        sae_model = load_sae(sae)
        vec = read_vector(name, sae, sae=sae_model)
    report = _report(sae, sae_model, vec, top)
    if json_out:
        typer.echo(json.dumps(report, ensure_ascii=False))
    else:
        _print(report)


def _build(sae: Path, name, positive, negative, tokens, model, device):
    from steer.steering.vectors import build_vector, save_vector

    lm, sae_model = load_for_steering(sae, model, device)
    vec = build_vector(lm, sae_model, name, positive, negative, tokens)
    save_vector(sae, vec)
    return vec, sae_model


def _list(sae: Path, json_out: bool, list_vectors, read_vector) -> None:
    rows = []
    for name in list_vectors(sae):
        vec = read_vector(name, sae)
        rows.append(
            {
                "name": name,
                "scale": round(vec.scale, 4),
                "hookpoint": vec.hookpoint,
                "positive": len(vec.positive),
                "negative": len(vec.negative),
            }
        )
    if json_out:
        typer.echo(json.dumps({"sae": str(sae), "vectors": rows}))
    elif not rows:
        typer.echo(f"no vectors saved beside {sae} (build one: steer vector NAME -p ... -n ...)")
    else:
        for r in rows:
            typer.echo(
                f"{r['name']:16s} scale {r['scale']:.3g}  {r['hookpoint']}  "
                f"{r['positive']} positive / {r['negative']} negative prompts"
            )


def _report(sae_dir: Path, sae, vec, top: int) -> dict:
    """What `steer vector` prints (the --json object)."""
    from steer.steering import Intervention
    from steer.steering.decompose import decompose, feature_strengths
    from steer.steering.expr import format_steering
    from steer.steering.vectors import vector_path

    catalog = load_catalog_for(sae_dir, sae)
    max_acts = catalog.max_acts if catalog is not None else None
    parts = decompose(sae, vec.direction, n=top)
    strengths = feature_strengths(parts.parts, max_acts)
    features = [
        {
            "feature": p.latent,
            "weight": round(p.weight, 4),
            "strength": round(s, 4),
            "explained": round(e, 4),
            "label": catalog.label(p.latent) if catalog is not None else "",
        }
        for p, s, e in zip(parts.parts, strengths, parts.explained, strict=True)
    ]
    terms = [Intervention(f["feature"], float(f"{f['strength']:.3g}"), "add") for f in features]
    return {
        "name": vec.name,
        "sae": str(sae_dir),
        "path": str(vector_path(sae_dir, vec.name)),
        "hookpoint": vec.hookpoint,
        "model": vec.model,
        "tokens": vec.tokens,
        "scale": round(vec.scale, 4),
        "negative_projection": vec.negative_projection,
        "positive": vec.positive,
        "negative": vec.negative,
        "strength_units": "relative" if max_acts is not None else "raw",
        "features": features,
        "explained": round(parts.fraction, 4),
        "steer": f"v:{vec.name}",
        "steer_features": format_steering(terms),
    }


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    made = (
        f"{len(r['positive'])} positive / {len(r['negative'])} negative prompts "
        f"({r['tokens']} over tokens)"
        if r["positive"]
        else "a saved direction"
    )
    where = f" · {r['hookpoint']}" if r["hookpoint"] else ""
    console.print(
        f"[bold]vector {r['name']}[/bold]{where} · {made} · "
        f"strength 1 = a residual of norm {r['scale']:.3g}"
    )
    if r["negative_projection"] is not None:
        p = r["negative_projection"]
        console.print(f"projection: negative prompts {p:.2f}, positive prompts {p + 1:.2f}")
    console.print(f"saved in {r['path']}", soft_wrap=True)
    units = "x max activation" if r["strength_units"] == "relative" else "raw SAE units"
    table = Table(title="made of these SAE features (orthogonal matching pursuit)")
    table.add_column("feature", justify="right")
    table.add_column("weight", justify="right")
    table.add_column(f"add ({units})", justify="right")
    table.add_column("explained", justify="right")
    table.add_column("label", overflow="fold")
    for f in r["features"]:
        table.add_row(
            str(f["feature"]),
            f"{f['weight']:.3g}",
            f"{f['strength']:.3g}",
            f"{f['explained']:.0%}",
            f["label"],
        )
    console.print(table)
    n = len(r["features"])
    console.print(
        f"{n} features explain {r['explained']:.0%} of the vector (1 - |v - Σ w_i d_i|² / |v|²)"
    )
    # soft_wrap: the commands stay on one line, to be copied
    console.print(
        f"steer with the vector at strength S:   steer generate --steer 'S {r['steer']}'",
        soft_wrap=True,
    )
    console.print(
        f"steer with its features (strength 1): steer generate --steer '{r['steer_features']}'",
        soft_wrap=True,
    )
