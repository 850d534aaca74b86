"""`steer features`: which latents fire on a text, search the catalog, show one latent."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .feature_entry import show_entry, show_family
from .feature_lists import OutputFilter, for_text, search_catalog
from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_DEFAULT_HELP,
    SAE_HELP,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    sae_or_default,
)


@friendly_errors
def features(
    text: str = typer.Argument(None, help="A text: list the latents that fire most on it."),
    sae: Path = typer.Option(None, "--sae", help=SAE_HELP + SAE_DEFAULT_HELP),
    id: int = typer.Option(None, "--id", help="Show the catalog entry of this latent."),
    search: str = typer.Option(
        None,
        "--search",
        "-s",
        help="Features ranked by relevance (BM25) to these words in their labels, "
        "explanations, activating tokens, logit lens and top contexts.",
    ),
    toward: str = typer.Option(
        None,
        "--toward",
        help="A set of features that, pulled together, make the model talk about this word, "
        "phrase or sentence, each with a recommended mode and strength, ranked by its "
        "measured effect.",
    ),
    family: bool = typer.Option(
        False,
        "--family",
        help="With --id: the feature's nearest features (decoder cosine) in the wider SAEs "
        "of its family (sibling folders at the same hook point): how it splits.",
    ),
    top: int = typer.Option(
        None,
        "--top",
        "-n",
        help="How many latents to list (default 20; with --toward, the size of the recommended "
        "set, default 16).",
    ),
    min_output: float = typer.Option(
        None,
        "--min-output-score",
        help="With a TEXT or --search: only features whose output score (the share of the "
        "next token's probability their direction moves onto their own tokens, 0-1) is at "
        "least this.",
    ),
    sort: str = typer.Option(
        None,
        "--sort",
        help="With a TEXT or --search: `output` ranks by output score (features that make "
        "the model say something first) instead of activation or relevance.",
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Find features: those firing on a TEXT, a --search, one --id, or levers --toward a concept.

    --id shows the feature's top activating contexts (activating tokens highlighted), its
    logit-lens tokens and statistics."""
    if family and id is None:
        raise ValueError("--family needs --id N (the feature whose splits to show)")
    asked = [x is not None for x in (text, id, search, toward)]
    if sum(asked) != 1:
        raise ValueError("give exactly one of: a TEXT, --id N, --search WORD or --toward TEXT")
    if toward is not None and not toward.strip():
        raise ValueError("the --toward text is empty")
    if text is not None and not text.strip():
        raise ValueError("the text is empty")
    if top is None and toward is None:  # --toward without --top: the whole recommended set
        top = 20
    if search is not None and not search.strip():
        raise ValueError("--search is empty: give a word to look for")
    if top is not None and top < 1:
        raise ValueError(f"--top must be positive, got {top}")
    if sort not in (None, "output"):
        raise ValueError(f"--sort takes `output`, got {sort!r}")
    by_output = OutputFilter(min_output, sort == "output")
    if by_output.active and text is None and search is None:
        raise ValueError("--min-output-score and --sort work with a TEXT or --search")
    sae = sae_or_default(sae, model)
    if toward is not None:
        _toward(sae, toward, top, model, device, json_out)
    elif family:
        show_family(sae, id, min(top, 10), json_out)
    elif id is not None:
        show_entry(sae, id, model, device, json_out)
    elif search is not None:
        search_catalog(sae, search, top, json_out, by_output)
    else:
        for_text(sae, text, top, model, device, json_out, by_output)


def _toward(sae_dir: Path, text: str, n: int | None, model, device, json_out: bool) -> None:
    import torch

    from steer.steering.toward import toward

    torch.set_num_threads(1)  # measured: 2 threads on a shared 2-core CPU ran 25x slower
    lm, sae = load_for_steering(sae_dir, model, device)
    catalog = load_catalog_for(sae_dir, sae)
    max_acts = catalog.max_acts if catalog is not None else None
    levers = toward(lm, sae, text, max_acts=max_acts, top=n)
    rows = [
        {
            "feature": lv.feature,
            "label": catalog.label(lv.feature) if catalog is not None else "",
            "mode": lv.mode,
            "strength": lv.strength,
            "score": lv.score,
        }
        for lv in levers
    ]
    if json_out:
        typer.echo(json.dumps({"toward": text, "features": rows}, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    units = "× max activation" if max_acts is not None else "raw SAE units"
    table = Table(
        title=f"features that, pulled together, steer toward {text[:60]!r} (strength in {units})"
    )
    for col, just in (
        ("feature", "right"),
        ("mode", "left"),
        ("strength", "right"),
        ("score", "right"),
        ("label", "left"),
    ):
        table.add_column(col, justify=just, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["feature"]), r["mode"], f"{r['strength']:g}", f"{r['score']:.3f}", r["label"]
        )
    console = Console()
    console.print(table)
    if rows:  # the features are a set: the recommendation pulls them all together
        levers = " ".join(f"--feature {r['feature']}={r['strength']:g}:{r['mode']}" for r in rows)
        console.print(f"try them together: steer generate --sae {sae_dir} --prompt ... {levers}")
