"""`steer index`: build the feature catalog of an SAE from a corpus sample."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_HELP,
    friendly_errors,
    load_for_steering,
    parse_tokens,
)


@friendly_errors
def index(
    sae: Path = typer.Option(..., "--sae", help=SAE_HELP),
    corpus: str = typer.Option(
        ...,
        "--corpus",
        "-c",
        help="Text corpus: a .txt/.jsonl/.parquet file (optionally .xz/.gz), a directory of them, or hf:<dataset>.",
    ),
    tokens: str = typer.Option("200k", "--tokens", "-n", help="Tokens to read, e.g. 200k, 1M."),
    ctx_len: int = typer.Option(128, "--ctx-len", help="Tokens per context."),
    batch_size: int = typer.Option(16, "--batch-size", help="Contexts per forward pass."),
    contexts: int = typer.Option(8, "--contexts", help="Top activating contexts kept per feature."),
    text_field: str = typer.Option(
        "text", "--text-field", help="Field holding the text in .jsonl/.parquet records."
    ),
    out: Path = typer.Option(None, "--out", help="Catalog folder [default: <sae>/catalog]."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Build an SAE's feature catalog (labels, top contexts, logit lens) from a corpus sample.

    Per feature: firing frequency, mean and max activation, top activating contexts,
    logit-lens tokens (its decoder row through the final norm's weight and the
    unembedding) and a short label. Saved in <sae>/catalog, where generate, features and
    chat find it."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from steer.features.catalog import build_catalog, catalog_dir

    n_tokens = parse_tokens(tokens)
    for name, value in (
        ("--ctx-len", ctx_len),
        ("--batch-size", batch_size),
        ("--contexts", contexts),
    ):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if ctx_len < 8:
        raise ValueError(f"--ctx-len must be at least 8, got {ctx_len}")
    lm, sae_model = load_for_steering(sae, model, device)
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tokens"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("index", total=n_tokens, rate="")

        def report(done: int, total: int) -> None:
            elapsed = max(time.perf_counter() - start, 1e-9)
            progress.update(task, completed=done, rate=f"{done / elapsed:,.0f} tok/s")

        catalog = build_catalog(
            lm,
            sae_model,
            corpus,
            n_tokens,
            ctx_len=ctx_len,
            batch_size=batch_size,
            n_contexts=contexts,
            text_field=text_field,
            progress=report,
        )
    folder = catalog.save(out or catalog_dir(sae))
    elapsed = time.perf_counter() - start
    dead = float((catalog.frequency == 0).float().mean())
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    typer.echo(
        f"indexed {catalog.meta['n_tokens']:,} tokens in {elapsed:.1f} s: {catalog.n_latents} features, "
        f"{dead:.1%} never fired; catalog ({size / 1e6:.1f} MB) in {folder}"
    )
