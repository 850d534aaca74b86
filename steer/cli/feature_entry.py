"""One feature in full for `steer features --id N`: its statistics, explanation, logit
lens, output tokens and top contexts (activations as background heat), or, with
--family, its nearest features in the wider SAEs of its family.

Not a command: steer/cli/features.py alone imports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from .options import load_catalog_for, load_for_steering

HEAT = [
    "on #2a2f1a",
    "on #3d4a1f",
    "on #566b22",
    "on #738f25",
    "on #93b526",
]  # low -> high activation


def sae_and_catalog(sae_dir: Path):
    from sae import load_sae

    sae = load_sae(sae_dir)
    return sae, load_catalog_for(sae_dir, sae)


def entry_json(e, contexts: bool = True) -> dict:
    out = asdict(e)
    if not contexts:
        out.pop("contexts")
    return out


def show_entry(sae_dir: Path, latent: int, model, device, json_out: bool) -> None:
    from steer.steering import check_latents

    sae, catalog = sae_and_catalog(sae_dir)
    check_latents(sae, [latent])
    if catalog is None:
        entry = entry_without_catalog(sae_dir, latent, model, device)
    else:
        entry = catalog.entry(latent)
    if json_out:
        typer.echo(json.dumps(entry_json(entry), ensure_ascii=False))
        return
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console()
    body = Text()
    if catalog is not None:
        body.append(
            f"fires on {entry.frequency:.3%} of tokens · mean {entry.mean_act:.3g} when active · max {entry.max_act:.3g}"
            f" (measured on {catalog.meta.get('n_tokens', '?')} tokens)\n"
        )
    else:
        body.append(
            "no catalog: only the logit lens is known (run steer index for contexts and statistics)\n",
            style="dim",
        )
    if entry.explanation:
        body.append("explained  ", style="bold")
        body.append(entry.explanation)
        body.append(f"  ({entry.explanation_source} · {entry.explanation_score})\n", style="dim")
    body.append("raises  ", style="bold green")
    body.append("  ".join(repr(t) for t in entry.top_tokens) + "\n")
    body.append("lowers  ", style="bold red")
    body.append("  ".join(repr(t) for t in entry.bottom_tokens) + "\n")
    if entry.output_score is not None:
        body.append(f"says    output score {entry.output_score:.2f}  ", style="bold cyan")
        body.append("  ".join(repr(t) for t in entry.output_tokens) + "\n")
    for c in entry.contexts:
        body.append("\n")
        body.append_text(render_context(c.tokens, c.acts, c.max_pos, entry.max_act))
        body.append(f"  {c.max_act:.3g}", style="dim")
    console.print(Panel(body, title=f"feature {entry.index}: {entry.label}", title_align="left"))


def render_context(tokens: list[str], acts: list[float], max_pos: int, scale: float):
    """A context as rich Text: background heat by activation, the max token bold and underlined."""
    from rich.text import Text

    text = Text()
    scale = scale if scale > 0 else max(acts + [1e-9])
    for j, (tok, act) in enumerate(zip(tokens, acts, strict=True)):
        shown = tok.replace("\n", "⏎")
        style = ""
        if act > 0:
            style = HEAT[min(len(HEAT) - 1, int(len(HEAT) * act / scale))]
        if j == max_pos:
            style += " bold underline"
        text.append(shown, style=style.strip() or None)
    return text


def entry_without_catalog(sae_dir: Path, latent: int, model, device):
    from steer.features.catalog import FeatureEntry, logit_lens

    lm, sae = load_for_steering(sae_dir, model, device)
    top, bottom = logit_lens(lm, sae.decoder_directions([latent]), n=10, fast=False)
    decode = lambda ids: [lm.tokenizer.decode([t]) for t in ids.tolist()]  # noqa: E731
    return FeatureEntry(latent, "", 0.0, 0.0, 0.0, decode(top[0]), decode(bottom[0]), [])


def show_family(sae_dir: Path, latent: int, n: int, json_out: bool) -> None:
    from steer.features.family import family_neighbours

    sae, catalog = sae_and_catalog(sae_dir)
    label = catalog.label(latent) if catalog is not None and 0 <= latent < sae.n_latents else ""
    neighbours = family_neighbours(sae_dir, latent, n=n)
    if json_out:
        out = {
            "sae": str(sae_dir),
            "feature": latent,
            "label": label,
            "wider": {m: [asdict(nb) for nb in hits] for m, hits in neighbours.items()},
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not neighbours:
        console.print(
            f"no wider SAE beside {sae_dir} (the family is the sibling folders at its hook point)"
        )
        return
    table = Table(
        title=f"feature {latent} of {Path(sae_dir).name} {label!r}: nearest features in wider SAEs"
    )
    table.add_column("SAE")
    table.add_column("feature", justify="right")
    table.add_column("cosine", justify="right")
    table.add_column("label", overflow="fold")
    for member, hits in neighbours.items():
        for nb in hits:
            table.add_row(member, str(nb.latent), f"{nb.cosine:.3f}", nb.label)
    console.print(table)
