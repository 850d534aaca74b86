"""`steer features`: which latents fire on a text, search the catalog, show one latent."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_DEFAULT_HELP,
    SAE_HELP,
    explanation_json,
    feature_caption,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    sae_or_default,
)

HEAT = [
    "on #2a2f1a",
    "on #3d4a1f",
    "on #566b22",
    "on #738f25",
    "on #93b526",
]  # low -> high activation


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
        help="Features that make the model talk about this word, phrase or sentence, ranked "
        "by a measured effect, each with a recommended mode and strength.",
    ),
    family: bool = typer.Option(
        False,
        "--family",
        help="With --id: the feature's nearest features (decoder cosine) in the wider SAEs "
        "of its family (sibling folders at the same hook point): how it splits.",
    ),
    top: int = typer.Option(
        None, "--top", "-n", help="How many latents to list (default 20; 5 with --toward)."
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
    if top is None:
        top = 5 if toward is not None else 20
    if search is not None and not search.strip():
        raise ValueError("--search is empty: give a word to look for")
    if top < 1:
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
        _show_family(sae, id, min(top, 10), json_out)
    elif id is not None:
        _show_entry(sae, id, model, device, json_out)
    elif search is not None:
        _search(sae, search, top, json_out, by_output)
    else:
        _for_text(sae, text, top, model, device, json_out, by_output)


class OutputFilter:
    """--min-output-score and --sort output over a list of candidate latents."""

    POOL = 10
    """Candidates read per feature shown when filtering or sorting (the pool they come from)."""

    def __init__(self, minimum: float | None, sort: bool):
        self.minimum, self.sort = minimum, sort

    @property
    def active(self) -> bool:
        return self.minimum is not None or self.sort

    def pool(self, n: int) -> int:
        return n * self.POOL if self.active else n

    def apply(self, catalog, latents: list[int], n: int) -> list[int]:
        if not self.active:
            return latents[:n]
        if catalog is None:
            raise ValueError("output scores live in the feature catalog: run steer index first")
        return catalog.by_output_score(latents, self.minimum, self.sort)[:n]


def _output_cell(catalog, latent: int) -> str:
    """`0.42 ' dog' ' puppy'`: the output score and the first output tokens."""
    entry = catalog.entry(latent)
    if entry.output_score is None:
        return ""
    return f"{entry.output_score:.2f} " + " ".join(repr(t) for t in entry.output_tokens[:3])


def _sae_and_catalog(sae_dir: Path):
    from sae import load_sae

    sae = load_sae(sae_dir)
    return sae, load_catalog_for(sae_dir, sae)


def _for_text(
    sae_dir: Path, text: str, n: int, model, device, json_out: bool, by_output: OutputFilter
) -> None:
    from steer.features.catalog import latents_for_text
    from steer.steering.readouts import feature_activations

    lm, sae = load_for_steering(sae_dir, model, device)
    catalog = load_catalog_for(sae_dir, sae)
    found = latents_for_text(lm, sae, text, n=by_output.pool(n), catalog=catalog)
    score_of = dict(found)
    found = [(i, score_of[i]) for i in by_output.apply(catalog, [i for i, _ in found], n)]
    has_output = catalog is not None and catalog.output_scores is not None
    ids = lm.tokenizer(text)["input_ids"]
    rows = []
    if found:
        acts = feature_activations(lm, sae, ids, [i for i, _ in found])  # (T, m)
        if acts.shape[0] > 1:
            acts[0] = 0  # the first token is skipped by the ranking too
        peak = acts.argmax(dim=0)
        for j, (latent, score) in enumerate(found):
            rows.append(
                {
                    "feature": latent,
                    "activation": float(acts[peak[j], j]),
                    "relative": score if catalog is not None else None,
                    "token": lm.tokenizer.decode([ids[int(peak[j])]]),
                    "label": catalog.label(latent) if catalog is not None else None,
                    "explanation": explanation_json(catalog, latent),
                    "caption": feature_caption(catalog, latent),
                    "output_score": catalog.entry(latent).output_score if has_output else None,
                }
            )
    if json_out:
        typer.echo(json.dumps({"text": text, "features": rows}, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"features firing on {text[:60]!r}"
        + ("" if catalog else " (no catalog: run steer index for labels)")
    )
    table.add_column("feature", justify="right")
    table.add_column("act", justify="right")
    if catalog is not None:
        table.add_column("× max", justify="right")
    table.add_column("at token")
    if catalog is not None:
        table.add_column("label", overflow="fold")
    if has_output:
        table.add_column("output score · says", overflow="fold")
    for r in rows:
        cells = [str(r["feature"]), f"{r['activation']:.3g}"]
        if catalog is not None:
            cells.append(f"{r['relative']:.2f}")
        cells.append(repr(r["token"]))
        if catalog is not None:
            cells.append(r["caption"])
        if has_output:
            cells.append(_output_cell(catalog, r["feature"]))
        table.add_row(*cells)
    Console().print(table)


def _toward(sae_dir: Path, text: str, n: int, model, device, json_out: bool) -> None:
    import torch

    from steer.steering.toward import toward

    torch.set_num_threads(1)  # measured: 2 threads on a shared 2-core CPU ran 25x slower
    lm, sae = load_for_steering(sae_dir, model, device)
    catalog = load_catalog_for(sae_dir, sae)
    max_acts = catalog.max_acts if catalog is not None else None
    output = catalog.output_table() if catalog is not None else None
    levers = toward(lm, sae, text, max_acts=max_acts, top=n, output=output)
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
    table = Table(title=f"features steering toward {text[:60]!r} (strength in {units})")
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
    if rows:
        best = rows[0]
        console.print(
            f"try: steer generate --sae {sae_dir} --prompt ... "
            f"--feature {best['feature']}={best['strength']:g}:{best['mode']}"
        )


def _search(sae_dir: Path, query: str, n: int, json_out: bool, by_output: OutputFilter) -> None:
    sae, catalog = _sae_and_catalog(sae_dir)
    if catalog is None:
        raise ValueError(
            f"no feature catalog for {sae_dir}: build one with `steer index --sae {sae_dir} --corpus ...`"
        )
    hits = catalog.search(query, limit=by_output.pool(n))
    entry_of = {e.index: e for e in hits}
    hits = [entry_of[i] for i in by_output.apply(catalog, [e.index for e in hits], n)]
    has_output = catalog.output_scores is not None
    if json_out:
        typer.echo(json.dumps([_entry_json(e, contexts=False) for e in hits], ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"catalog search {query!r}: {len(hits)} feature(s)")
    for col, just in (
        ("feature", "right"),
        ("freq", "right"),
        ("max", "right"),
        ("label", "left"),
        ("explanation", "left"),
        ("logit lens", "left"),
        *((("output score · says", "left"),) if has_output else ()),
    ):
        table.add_column(col, justify=just, overflow="fold")
    for e in hits:
        output = (_output_cell(catalog, e.index),) if has_output else ()
        table.add_row(
            str(e.index),
            f"{e.frequency:.2%}",
            f"{e.max_act:.3g}",
            e.label,
            f"{e.explanation} ({e.explanation_source} {e.explanation_score})"
            if e.explanation
            else "",
            " ".join(repr(t) for t in e.top_tokens[:5]),
            *output,
        )
    Console().print(table)


def _entry_json(e, contexts: bool = True) -> dict:
    out = asdict(e)
    if not contexts:
        out.pop("contexts")
    return out


def _show_entry(sae_dir: Path, latent: int, model, device, json_out: bool) -> None:
    from steer.steering import check_latents

    sae, catalog = _sae_and_catalog(sae_dir)
    check_latents(sae, [latent])
    if catalog is None:
        entry = _entry_without_catalog(sae_dir, latent, model, device)
    else:
        entry = catalog.entry(latent)
    if json_out:
        typer.echo(json.dumps(_entry_json(entry), ensure_ascii=False))
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


def _entry_without_catalog(sae_dir: Path, latent: int, model, device):
    from steer.features.catalog import FeatureEntry, logit_lens

    lm, sae = load_for_steering(sae_dir, model, device)
    top, bottom = logit_lens(lm, sae.decoder_directions([latent]), n=10, fast=False)
    decode = lambda ids: [lm.tokenizer.decode([t]) for t in ids.tolist()]  # noqa: E731
    return FeatureEntry(latent, "", 0.0, 0.0, 0.0, decode(top[0]), decode(bottom[0]), [])


def _show_family(sae_dir: Path, latent: int, n: int, json_out: bool) -> None:
    from steer.features.family import family_neighbours

    sae, catalog = _sae_and_catalog(sae_dir)
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
