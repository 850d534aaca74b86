"""`steer generate`: baseline and steered completions of one prompt, side by side."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_HELP,
    check_out_file,
    check_seed,
    explanation_json,
    feature_caption,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    max_positions,
    sae_or_default,
)


# ---------------------------------------------------------------------- the command
@friendly_errors
def generate(
    sae: Path = typer.Option(
        None,
        "--sae",
        help=SAE_HELP + " Default: the one a --preset names, else the SAE shipped for the "
        "embedded model.",
    ),
    prompt: str = typer.Option(
        None,
        "--prompt",
        "-p",
        help="The prompt (wrapped in the chat template of instruct models). Default: the "
        "one a --preset records (a run exported by `steer history export`).",
    ),
    steer: str = typer.Option(
        None,
        "--steer",
        "-e",
        help="A steering expression, e.g. '2.5 #2374 + 0.4 #55:add @generated' or "
        "'3 #100 @when:#55>0.4' (README: Steering expressions). Adds to --feature.",
    ),
    feature: list[str] = typer.Option(
        [],
        "--feature",
        "-f",
        help="INDEX=STRENGTH[:MODE], repeatable, e.g. 1234=10 or 77=-4:add. Strength: multiples of the "
        "feature's max activation when the SAE has a catalog (steer index), raw SAE units otherwise.",
    ),
    mode: str = typer.Option(
        "clamp",
        "--mode",
        help="clamp: set the feature to STRENGTH, keeping the SAE error; add: add STRENGTH x its decoder "
        "direction; ablate: clamp to 0. For features without :MODE.",
    ),
    positions: str = typer.Option(
        None,
        "--positions",
        help="all (default), prompt (the prompt tokens), or generated (the positions that produce new tokens).",
    ),
    max_tokens: int = typer.Option(
        None, "--max-tokens", "-n", help="Tokens to generate [default: 64]."
    ),
    temperature: float = typer.Option(None, "--temperature", "-t", help="0 = greedy [default: 0]."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling threshold [default: 1]."),
    seed: int = typer.Option(None, "--seed", help="Seed of both rows' samplers [default: 0]."),
    chat: bool = typer.Option(
        None,
        "--chat/--no-chat",
        help="Use the chat template [default: when the tokenizer has one].",
    ),
    preset: Path = typer.Option(
        None, "--preset", help="Load features and settings from a preset JSON (flags override)."
    ),
    save_preset: Path = typer.Option(
        None, "--save-preset", help="Write the features and settings used to this preset JSON."
    ),
    raw: bool = typer.Option(
        False, "--raw", help="Strengths in raw SAE units even when a catalog exists."
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("fp32", "--dtype", help="Model weights: fp32 or bf16."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Generate a baseline and a steered completion of a prompt, side by side.

    Both rows run in one batch with identically seeded samplers, so the only difference
    between them is the steering."""

    from steer.steering import parse_feature
    from steer.steering.expr import Recipe, parse_steering, resolve_recipe
    from steer.steering.generate import GenerationSettings, generate_text
    from steer.steering.presets import save_preset as write_preset

    check_seed(seed)
    check_out_file(save_preset, "--save-preset")
    interventions, settings, prompt, sae, model = _from_preset(preset, prompt, sae, model)
    if prompt is None:
        raise ValueError("give a prompt with --prompt")
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    if steer is not None:  # a bad expression stops here, before any model work
        interventions += parse_steering(steer).interventions()
    interventions += [parse_feature(spec, mode) for spec in feature]
    sae = sae_or_default(sae, model)
    overrides = {
        "max_new_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "positions": positions,
        "chat": chat,
    }
    settings = GenerationSettings.from_dict(
        {**settings.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
    )
    if not any(iv.enabled for iv in interventions):
        raise ValueError(
            "nothing to steer: give --steer EXPR or --feature INDEX=STRENGTH (or a --preset)"
        )
    recipe = Recipe(tuple(interventions))

    lm, sae_model = load_for_steering(sae, model, device, dtype, recipe.features)
    interventions = resolve_recipe(recipe, sae_model, sae)  # vectors loaded
    limit = max_positions(lm)
    if limit is not None and settings.max_new_tokens >= limit:
        raise ValueError(
            f"--max-tokens {settings.max_new_tokens} is beyond the model's {limit} positions"
        )
    catalog = None if raw else load_catalog_for(sae, sae_model)
    max_acts = catalog.max_acts if catalog is not None else None
    if save_preset is not None:
        write_preset(save_preset, interventions, settings, sae=str(sae))

    units = "x max activation" if max_acts is not None else "raw SAE units"
    features = recipe.features
    captions = {i: feature_caption(catalog, i) for i in features}
    rows = [[], interventions]
    if not json_out:  # the table grows token by token, as in the playground
        with _side_by_side(lm, sae_model, interventions, captions, units, settings) as show:
            generate_text(lm, sae_model, prompt, rows, settings, max_acts=max_acts, on_step=show)
        return
    texts = generate_text(lm, sae_model, prompt, rows, settings, max_acts=max_acts)
    record = _json_record(
        lm, sae, sae_model, prompt, settings, recipe, interventions, catalog, texts
    )
    typer.echo(json.dumps(record, ensure_ascii=False))


def _json_record(lm, sae, sae_model, prompt, settings, recipe, interventions, catalog, texts):
    """What --json prints: the run, its levers with their labels, both completions."""
    from steer.steering.expr import format_steering

    baseline, steered = texts
    features = recipe.features
    labels = {i: catalog.label(i) for i in features} if catalog is not None else {}
    max_acts = catalog.max_acts if catalog is not None else None
    return {
        "model": lm.name,
        "sae": str(sae),
        "hookpoint": sae_model.cfg.hookpoint,
        "prompt": prompt,
        "strength_units": "relative" if max_acts is not None else "raw",
        "settings": settings.to_dict(),
        "interventions": [{**iv.to_dict(), "label": labels.get(iv.latent)} for iv in interventions],
        "steer": format_steering(recipe),
        "explanations": {str(i): explanation_json(catalog, i) for i in features},
        "baseline": baseline,
        "steered": steered,
    }


def _from_preset(preset: Path | None, prompt, sae, model):
    """(levers, settings, prompt, sae, model): the preset's, where the flags do not say."""
    from steer.steering.generate import GenerationSettings
    from steer.steering.presets import load_preset

    if preset is None:
        return [], GenerationSettings(), prompt, sae, model
    loaded = load_preset(preset)
    return (
        list(loaded.interventions),
        loaded.settings or GenerationSettings(),
        prompt if prompt is not None else loaded.prompt,
        sae if sae is not None else (Path(loaded.sae) if loaded.sae else None),
        model if model is not None else loaded.model,
    )


@contextlib.contextmanager
def _side_by_side(lm, sae, interventions, labels, units, settings):
    """Print the header, then yield show(rows): the baseline | steered table, redrawn as
    the rows grow (rich Live). Where stdout is not a terminal only the finished table is
    written, so a file gets the table and no redraws."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    console = Console()
    from steer.steering.expr import format_term

    steer_desc = " + ".join(
        format_term(iv) + (f" ({labels[iv.latent]})" if labels.get(iv.latent) else "")
        for iv in interventions
        if iv.enabled
    )
    enabled = [iv for iv in interventions if iv.enabled]
    # A term's own @where overrides --positions, and a vector's strength is in multiples of
    # its difference of means (steer.steering.vectors), whatever the features' unit is.
    if any(isinstance(iv.latent, str) for iv in enabled):
        units += "; vectors in x their difference of means"
    positions = f"positions={settings.positions}"
    if any(iv.where for iv in enabled):
        positions += " (terms with @ keep their own)"
    console.print(
        Text.assemble(
            (f"{lm.name}", "bold"),
            f" · {sae.cfg.hookpoint} · strengths in {units} · {positions}"
            f" · {'greedy' if settings.temperature == 0 else f'T={settings.temperature:g} seed={settings.seed}'}",
        )
    )

    def cell(row: dict) -> Text:
        text = Text(row["text"])
        if row["stopped"] == "eos":
            text.append(" ⏹", style="dim")
        return text

    def table(rows: list[dict]) -> Table:
        grid = Table(show_lines=False, expand=True)
        grid.add_column("baseline", ratio=1, overflow="fold")
        grid.add_column(f"steered: {steer_desc}", ratio=1, overflow="fold")
        grid.add_row(*(cell(row) for row in rows))
        return grid

    empty = {"text": "", "stopped": None}
    with Live(table([empty, empty]), console=console, auto_refresh=False) as live:
        yield lambda rows: live.update(table(rows), refresh=True)
