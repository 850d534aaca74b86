"""`steer web`: link a family's features from broad to fine and store the web beside it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    parse_tokens,
    sae_or_default,
)


@friendly_errors
def web(
    sae: Path = typer.Option(
        None,
        "--sae",
        help="A Matryoshka SAE folder (its levels are the web's levels) or one SAE of a family of widths on one hook point (its siblings are).",
    ),
    corpus: str = typer.Option(
        None,
        "--corpus",
        "-c",
        envvar="STEER_CORPUS",
        help="Text to measure co-activation on (default: the corpus the SAE was trained on); its held-out documents are read.",
    ),
    tokens: str = typer.Option("64k", "--tokens", "-n", help="Tokens to encode, e.g. 64k."),
    ctx_len: int = typer.Option(128, "--ctx-len", help="Tokens per context."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    split: str = typer.Option(
        "heldout", "--split", help="heldout (the documents steer train leaves out) or all."
    ),
    activations: Path = typer.Option(
        None,
        "--activations",
        help="Read the tokens' activations from a steer cache folder instead of running the model (it must hold the SAEs' hook point).",
    ),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build again even when web.json exists."),
    branch: int = typer.Option(
        None, "--branch", help="Print the branch under this feature of the narrowest level."
    ),
    html_out: Path = typer.Option(
        None,
        "--html",
        help="Also write the web as one self-contained HTML page (a collapsible tree).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Build the feature web of a family: each feature linked to its parent one level narrower.

    Links by decoder cosine and by co-activation, P(parent fires | child fires) on corpus
    tokens. Stored as web.json in the SAE folder (beside catalog/); labels come from each
    level's catalog (steer index)."""
    from sae.matryoshka import split_prefix
    from steer.features.web import FeatureWeb, family_levels, find_web
    from steer.features.web_html import render_html

    n_tokens = parse_tokens(tokens)
    if split not in ("heldout", "all"):
        raise ValueError(f"--split must be heldout or all, got {split!r}")
    if ctx_len < 2:
        raise ValueError(f"--ctx-len must be at least 2, got {ctx_len}")
    folder, _ = split_prefix(Path(sae_or_default(sae, model)).expanduser())
    levels = family_levels(folder)
    path = find_web(folder)  # this SAE's, or a family member's
    if rebuild or path is None:
        text = (ctx_len, text_field, split)
        if activations is not None:
            result = _build_from_cache(levels, activations, n_tokens)
        else:
            result = _build(levels, corpus, n_tokens, text, model, device)
        path = result.save(folder)
        typer.echo(f"web of {len(levels)} levels on {result.tokens:,} tokens -> {path}", err=True)
    result = FeatureWeb.load(path)
    if [lv.name for lv in result.levels] != [lv.name for lv in levels]:
        raise ValueError(f"{path} was built for other levels: pass --rebuild")
    if html_out is not None:
        Path(html_out).write_text(render_html(result, title=f"feature web: {folder}"))
        typer.echo(f"wrote {html_out}", err=True)
    lines = _branch(result, branch) if branch is not None else None
    if as_json:
        out = {"web": str(path), "tokens": result.tokens}
        out["summary"] = result.summary()
        if lines is not None:
            out["branch"] = lines
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    _print_summary(result)
    for line in lines or []:
        typer.echo("  " * line["depth"] + _describe(line))


def _build(levels, corpus, n_tokens, text, model, device):
    from sae import load_sae
    from steer.evals.evaluate import DEFAULT_HELDOUT_FRACTION
    from steer.features.web import build_web
    from steer.lm.activations import ActivationStream
    from steer.lm.data import TokenContexts
    from steer.lm.models import parse_hookpoint

    from .options import provenance_of

    widest = levels[-1].path
    lm, _ = load_for_steering(Path(widest), model, device)
    saes = [load_sae(lv.path, device=lm.device) for lv in levels]
    hooks = {s.cfg.hookpoint for s in saes}
    if len(hooks) != 1:
        raise ValueError(f"the levels read different hook points: {sorted(hooks)}")
    corpus = corpus or provenance_of(saes[-1].cfg).get("corpus")
    if not corpus:
        raise ValueError("no corpus: pass --corpus (the SAE does not name its training corpus)")
    labels = _labels(levels, saes)
    ctx_len, text_field, split = text
    contexts = TokenContexts(
        corpus,
        lm.tokenizer,
        ctx_len=ctx_len,
        text_field=text_field,
        split="heldout" if split == "heldout" else "train",
        heldout_fraction=DEFAULT_HELDOUT_FRACTION if split == "heldout" else 0.0,
    )
    stream = ActivationStream(lm, parse_hookpoint(hooks.pop()), contexts, batch_tokens=2048)
    result = build_web(levels, saes, stream, labels=labels, max_tokens=n_tokens)
    result.meta = {"corpus": str(corpus), "split": split, "ctx_len": ctx_len}
    return result


def _labels(levels, saes) -> list[list[str]]:
    labels = []
    for lv, s in zip(levels, saes, strict=True):
        catalog = load_catalog_for(Path(lv.path), s, warn=False)
        labels.append(
            [catalog.label(i) for i in range(s.n_latents)] if catalog else [""] * s.n_latents
        )
    return labels


def _build_from_cache(levels, folder: Path, n_tokens: int):
    from sae import TopKSAE
    from steer.features.web import build_web
    from steer.lm.cache import CachedActivations

    saes = [TopKSAE.load(lv.path) for lv in levels]
    stream = CachedActivations(folder, batch_tokens=2048, repeat=False)
    hook = stream.meta.get("hookpoint")
    if {s.cfg.hookpoint for s in saes} != {hook}:
        raise ValueError(f"the cache {folder} holds {hook}, the SAEs read {saes[0].cfg.hookpoint}")
    result = build_web(levels, saes, stream, labels=_labels(levels, saes), max_tokens=n_tokens)
    result.meta = {"activations": str(folder), "corpus": stream.meta.get("corpus", "")}
    return result


def _branch(result, latent: int) -> list[dict]:
    if not 0 <= latent < result.levels[0].n_latents:
        raise ValueError(
            f"--branch {latent}: the narrowest level has latents 0..{result.levels[0].n_latents - 1}"
        )
    children = result.children()
    out = []

    def walk(node, depth, link):
        out.append({**result.node(*node), "depth": depth, "link": link})
        for kid in children.get(node, []):
            j, i = kid
            row = i - result.levels[j].new_from
            link = {"cos": float(result.cos[j][row]), "p": float(result.p_parent[j][row])}
            walk(kid, depth + 1, link)

    walk((0, latent), 0, None)
    return out


def _describe(line: dict) -> str:
    text = f"#{line['latent']} {line['label'] or '(no label)'}  freq {line['freq']:.3%}"
    if line["link"]:
        text += f"  cos {line['link']['cos']:.2f}  P {line['link']['p']:.2f}"
    return text


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"feature web ({result.tokens:,} tokens)")
    for col in ("level", "latents", "new", "parent by cos", "by P", "by both"):
        table.add_column(col, justify="right")
    for row in result.summary():
        cells = [row["level"], f"{row['n_latents']:,}"]
        if "children" in row:
            cells.append(f"{row['children']:,}")
            cells += [
                f"{row[k]:.1%}" for k in ("parent_by_cos", "parent_by_coact", "parent_by_both")
            ]
        else:
            cells += ["", "", "", ""]
        table.add_row(*cells)
    Console().print(table)
