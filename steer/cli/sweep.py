"""`steer sweep`: the dose-response curve of a steering expression."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_HELP,
    check_out_folder,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    read_prompts,
    sae_or_default,
)


def parse_strengths(text: str) -> list[float]:
    """`0,1,2,4,8` -> [0.0, 1.0, 2.0, 4.0, 8.0] (sorted, once each)."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(
                f"--strengths: {part.strip()!r} is not a number (e.g. 0,1,2,4,8)"
            ) from None
        if value != value or abs(value) == float("inf"):
            raise ValueError(f"--strengths: {part.strip()!r} is not a finite number")
        values.append(value)
    return sorted(set(values))


@friendly_errors
def sweep(
    expressions: list[str] = typer.Argument(
        ...,
        help="Steering expressions, e.g. 'v:dog' '2 #2374 + 0.5 v:dog': one curve each.",
    ),
    sae: Path = typer.Option(None, "--sae", help=SAE_HELP + " Default: the shipped one."),
    strengths: str = typer.Option(
        "0,1,2,4,8",
        "--strengths",
        help="Multipliers of the expression's strengths, comma-separated.",
    ),
    prompts: list[str] = typer.Option(
        [],
        "--prompts",
        help="A prompt, or a file with one per line; repeatable. Default: the steering "
        "benchmark's three neutral prompts.",
    ),
    concept: list[str] = typer.Option(
        [],
        "--concept",
        "-c",
        help="A word whose appearance counts as a hit (at a word start, any ending); "
        "repeatable. Without one, only coherence is measured.",
    ),
    per_term: bool = typer.Option(
        False, "--per-term", help="One curve per term (that term alone) instead of the whole."
    ),
    max_tokens: int = typer.Option(40, "--max-tokens", "-n", help="Greedy tokens per reply."),
    out: Path = typer.Option(
        Path("sweep"), "--out", help="Folder for sweep.csv, sweep.json and sweep.png."
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON summary."),
) -> None:
    """Dose-response: concept hit rate and coherence against strength, one curve per
    expression (or per term with --per-term).

    Each value s of --strengths multiplies every strength in an expression (its own
    strengths are the unit; ablations stay). Greedy replies to each prompt, with the
    baseline alongside; writes CSV, JSON (replies included) and a PNG plot to --out."""
    from steer.steering.expr import format_steering, format_term, parse_steering, resolve_recipe
    from steer.steering.success import EVAL_PROMPTS
    from steer.steering.sweep import Curve, run_sweep, write_sweep

    recipes = [parse_steering(e) for e in expressions]  # before anything loads
    if not all(recipes):
        raise ValueError("an expression has no terms")
    axis = parse_strengths(strengths)
    if max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {max_tokens}")
    check_out_folder(out)
    texts = read_prompts(prompts, "--prompts") if prompts else list(EVAL_PROMPTS)
    words = [w.strip() for w in concept if w.strip()]
    sae = sae_or_default(sae, model)
    latents = [i for r in recipes for i in r.features]
    lm, sae_model = load_for_steering(sae, model, device, latents=latents)
    catalog = load_catalog_for(sae, sae_model)
    curves = []
    for recipe in recipes:
        levers = resolve_recipe(recipe, sae_model, sae)
        if per_term:
            curves += [Curve(format_term(t), [t]) for t in levers if t.enabled]
        else:
            curves.append(Curve(format_steering(recipe), levers))
    result = run_sweep(
        lm,
        sae_model,
        curves,
        axis,
        texts,
        words,
        n_tokens=max_tokens,
        max_acts=catalog.max_acts if catalog is not None else None,
    )
    paths = write_sweep(result, out, title=f"{lm.name} · {sae_model.cfg.hookpoint}")
    if json_out:
        summary = {k: v for k, v in result.to_dict().items() if k != "points"}
        summary["points"] = [
            {k: v for k, v in vars(p).items() if k != "replies"} for p in result.points
        ]
        summary["files"] = {k: str(v) for k, v in paths.items()}
        typer.echo(json.dumps(summary, ensure_ascii=False))
        return
    _print(result, paths)


def _print(result, paths) -> None:
    from rich.console import Console
    from rich.table import Table

    def share(x):
        return "-" if x is None else f"{x:.0%}"

    table = Table(title=f"{len(result.prompts)} prompts, greedy")
    for name in ("curve", "strength", "names it", "coherent", "both", "CE over baseline"):
        table.add_column(name, justify="left" if name == "curve" else "right")
    for p in result.points:
        table.add_row(
            p.curve,
            f"{p.strength:g}",
            share(p.hit_rate),
            share(p.coherent_rate),
            share(p.success_rate),
            f"{p.excess_ce:+.2f}",
        )
    console = Console()
    console.print(table)
    if result.words:
        console.print(f"no steering: {share(result.baseline_hit_rate)} of replies name it")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), soft_wrap=True)
