"""Lists of features for `steer features`: those firing on a TEXT and a --search of the
catalog, as tables or JSON, filtered or sorted by output score.

Not a command: steer/cli/features.py alone imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .feature_entry import entry_json, sae_and_catalog
from .options import explanation_json, feature_caption, load_catalog_for, load_for_steering


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


def output_cell(catalog, latent: int) -> str:
    """`0.42 ' dog' ' puppy'`: the output score and the first output tokens."""
    entry = catalog.entry(latent)
    if entry.output_score is None:
        return ""
    return f"{entry.output_score:.2f} " + " ".join(repr(t) for t in entry.output_tokens[:3])


def for_text(
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
    else:
        _print_text_table(text, rows, catalog, has_output)


def _print_text_table(text: str, rows: list[dict], catalog, has_output: bool) -> None:
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
            cells.append(output_cell(catalog, r["feature"]))
        table.add_row(*cells)
    Console().print(table)


def search_catalog(
    sae_dir: Path, query: str, n: int, json_out: bool, by_output: OutputFilter
) -> None:
    sae, catalog = sae_and_catalog(sae_dir)
    if catalog is None:
        raise ValueError(
            f"no feature catalog for {sae_dir}: build one with `steer index --sae {sae_dir} --corpus ...`"
        )
    hits = catalog.search(query, limit=by_output.pool(n))
    entry_of = {e.index: e for e in hits}
    hits = [entry_of[i] for i in by_output.apply(catalog, [e.index for e in hits], n)]
    has_output = catalog.output_scores is not None
    if json_out:
        typer.echo(json.dumps([entry_json(e, contexts=False) for e in hits], ensure_ascii=False))
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
        output = (output_cell(catalog, e.index),) if has_output else ()
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
