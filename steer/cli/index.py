"""`steer index`: build the feature catalog of an SAE from a corpus sample."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_DEFAULT_HELP,
    SAE_HELP,
    check_ctx_len,
    check_out_folder,
    friendly_errors,
    load_for_steering,
    parse_tokens,
    sae_or_default,
)


@friendly_errors
def index(
    sae: Path = typer.Option(None, "--sae", help=SAE_HELP + SAE_DEFAULT_HELP),
    corpus: str = typer.Option(
        None,
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
    n2g_tokens: str = typer.Option(
        "100k",
        "--n2g-tokens",
        help="Held-out tokens for N2G pattern explanations (half fit, half score).",
    ),
    n2g_corpus: str = typer.Option(
        None,
        "--n2g-corpus",
        help="Held-out text for N2G [default: the --corpus text after the indexed sample].",
    ),
    no_n2g: bool = typer.Option(False, "--no-n2g", help="Skip the N2G explanations."),
    no_output: bool = typer.Option(
        False,
        "--no-output-scores",
        help="Skip the output scores (what each feature makes the model say).",
    ),
    output_only: bool = typer.Option(
        False,
        "--output-scores-only",
        help="Add output scores to the SAE's existing catalog (no corpus pass, no N2G).",
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Build an SAE's feature catalog (labels, top contexts, logit lens) from a corpus sample.

    Per feature: firing frequency, mean and max activation, top activating contexts,
    logit-lens tokens (its decoder row through the final norm's weight and the
    unembedding) and a short label. Then N2G explanations: token patterns that predict
    where each feature fires, fitted on its top contexts and held-out text and scored by
    precision and recall on other held-out text (see `steer explain --n2g`); a feature's
    label becomes its best pattern when that is precise. Then output scores: how much
    adding each feature's direction moves the model's next token onto its own tokens
    (`steer features --sort output`). Saved in <sae>/catalog, where generate, features and
    chat find it."""
    from steer.features.catalog import build_catalog, catalog_dir

    if output_only:
        _output_only(sae, out, model, device)
        return
    if corpus is None:
        raise ValueError("--corpus is required (or --output-scores-only)")
    n_tokens = parse_tokens(tokens)
    n2g_count = parse_tokens(n2g_tokens, "--n2g-tokens")
    _check_sizes(ctx_len, batch_size, contexts)
    check_out_folder(out)
    sae = sae_or_default(sae, model)
    lm, sae_model = load_for_steering(sae, model, device)
    check_ctx_len(lm, ctx_len)
    start = time.perf_counter()
    with _progress_bar() as progress:
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
        n2g_note = ""
        if not no_n2g:
            task = progress.add_task("n2g", total=n2g_count, rate="N2G held-out pass")
            source = n2g_corpus or _after_sample(
                corpus, lm.tokenizer, n_tokens, ctx_len, text_field
            )
            n2g_note = _n2g(
                lm, sae_model, catalog, folder, source, n2g_count, ctx_len, text_field,
                lambda done, total: progress.update(task, completed=done),
            )  # fmt: skip
        if not no_output:
            task = progress.add_task("output", total=sae_model.n_latents, rate="output scores")
            _output(lm, sae_model, catalog, folder, lambda d, t: progress.update(task, completed=d))
    elapsed = time.perf_counter() - start
    dead = float((catalog.frequency == 0).float().mean())
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    typer.echo(
        f"indexed {catalog.meta['n_tokens']:,} tokens in {elapsed:.1f} s: {catalog.n_latents} features, "
        f"{dead:.1%} never fired; catalog ({size / 1e6:.1f} MB) in {folder}"
    )
    if n2g_note:
        typer.echo(n2g_note)


def _check_sizes(ctx_len: int, batch_size: int, contexts: int) -> None:
    for name, value in (
        ("--ctx-len", ctx_len),
        ("--batch-size", batch_size),
        ("--contexts", contexts),
    ):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if ctx_len < 8:
        raise ValueError(f"--ctx-len must be at least 8, got {ctx_len}")


def _progress_bar():
    """The indexing bar on stderr (tokens, rate, time left); nothing where it is no terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(
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
    )


def _output(lm, sae, catalog, folder, progress=None) -> None:
    from steer.features.catalog.output import add_output_scores

    add_output_scores(catalog, lm, sae, progress=progress)
    catalog.save(folder)


def _output_only(sae: Path, out: Path | None, model, device) -> None:
    """Output scores for an existing catalog (one built before them, or to redo them)."""
    from steer.features.catalog import FeatureCatalog, catalog_dir

    lm, sae_model = load_for_steering(sae, model, device)
    folder = out or catalog_dir(sae)
    catalog = FeatureCatalog.load(folder)
    if not catalog.matches(sae_model):
        raise ValueError(f"the feature catalog in {folder} was built for another SAE")
    start = time.perf_counter()
    _output(lm, sae_model, catalog, folder)
    scores = catalog.output_scores
    typer.echo(
        f"output scores for {catalog.n_latents} features in {time.perf_counter() - start:.1f} s "
        f"(median {float(scores.median()):.3f}, max {float(scores.max()):.3f}) in {folder}"
    )


def _after_sample(corpus: str, tokenizer, n_tokens: int, ctx_len: int, text_field: str):
    """The corpus's contexts after those the catalog read (the same deterministic order)."""
    import itertools

    from steer.lm.data import TokenContexts

    contexts = TokenContexts(corpus, tokenizer, ctx_len=ctx_len, text_field=text_field, seed=0)
    return itertools.islice(contexts, -(-n_tokens // ctx_len), None)


def _n2g(lm, sae, catalog, folder, source, n_tokens, ctx_len, text_field, progress) -> str:
    """Fit, score and save N2G explanations; the line to print."""
    from steer.features.explain.from_catalog import explain_catalog
    from steer.features.explain.store import Explanations

    try:
        patterns, scores = explain_catalog(
            lm, sae, catalog, source, n_tokens, ctx_len=ctx_len, text_field=text_field,
            progress=progress,
        )  # fmt: skip
    except ValueError as err:
        return f"note: no N2G explanations ({err}); give --n2g-corpus or more text"
    explanations = Explanations.for_catalog(folder, catalog)  # keeps LM explanations
    explanations.set_n2g(
        patterns, scores, lm.tokenizer, corpus=str(source) if isinstance(source, (str, Path))
        else "the indexed corpus after its sample", n_tokens=n_tokens, fraction=0.5,
    )  # fmt: skip
    explanations.save(folder)
    catalog.set_explanations(explanations)
    catalog.search_index()  # built now beside the catalog, so the first search is quick
    p, r = scores.mean(catalog.frequency > 0)
    return f"N2G explanations: mean precision {p:.3f}, recall {r:.3f} on held-out text"
