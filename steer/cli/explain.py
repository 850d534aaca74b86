"""`steer explain`: explanations of an SAE's features, stored in its catalog."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .options import (
    DEVICE_HELP,
    MODEL_HELP,
    SAE_HELP,
    friendly_errors,
    load_catalog_for,
    load_for_steering,
    parse_tokens,
    sae_or_default,
)


@friendly_errors
def explain(
    sae: list[Path] = typer.Option(
        None,
        "--sae",
        help=SAE_HELP + " With --n2g it may repeat: SAEs at one hook point share the model pass."
        " Default: the shipped SAE.",
    ),
    n2g: bool = typer.Option(
        False,
        "--n2g",
        help="Fit N2G token patterns for every feature and score their precision and recall "
        "on held-out --corpus text (what `steer index` does after indexing).",
    ),
    corpus: str = typer.Option(
        None,
        "--corpus",
        "-c",
        help="Held-out text (not the catalog's own sample): a .txt/.jsonl/.parquet file "
        "(optionally .xz/.gz), a directory of them, or hf:<dataset>.",
    ),
    tokens: str = typer.Option(
        None,
        "--tokens",
        "-n",
        help="Held-out tokens to read [default: 100k with --n2g (half fit, half score), "
        "20k with --explainer (scoring windows)].",
    ),
    explainer: str = typer.Option(
        None,
        "--explainer",
        "-e",
        help="Explain with this instruct LM (smollm2-135m works offline, weakly; a Hub id or "
        "local dir of any causal LM): it reads each feature's marked top contexts.",
    ),
    scorer: str = typer.Option(
        None,
        "--scorer",
        help="The LM that scores explanations by detection [default: the explainer].",
    ),
    latents: str = typer.Option(
        None, "--latents", "-l", help="Features to explain with --explainer, e.g. 0-99,512."
    ),
    sample: int = typer.Option(
        None, "--sample", help="With --explainer: this many live features at random (seed 0)."
    ),
    no_score: bool = typer.Option(
        False, "--no-score", help="With --explainer: explain only, no detection scoring."
    ),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Explain features: N2G patterns (--n2g) or an LM's explanations (--explainer MODEL), scored.

    N2G: token patterns with precision and recall on held-out text. LM: explanations scored
    by detection.

    Detection: the scorer sees the explanation and held-out windows of --corpus text, half
    where the feature fires and half where it is silent, and says yes or no to each; the
    score is the balanced accuracy (0.5 chance, 1 perfect). LM runs are resumable: rerun
    the same command and features already explained by MODEL are skipped. Explanations go
    beside the catalog (<sae>/catalog/explanations.*); labels, search, `steer features`
    and the playground show them."""
    if n2g == (explainer is not None):
        raise ValueError("give one of --n2g (token patterns) or --explainer MODEL")
    sae = sae or [sae_or_default(None, model)]
    if corpus is None and (n2g or not no_score):
        raise ValueError("give --corpus: held-out text to fit and score on (or --no-score)")
    if n2g:
        _n2g(sae, corpus, parse_tokens(tokens or "100k"), text_field, model, device)
        return
    if len(sae) != 1:
        raise ValueError("--explainer explains one SAE at a time: give one --sae")
    _lm(
        sae[0], explainer, scorer, latents, sample, None if no_score else corpus,
        parse_tokens(tokens or "20k"), text_field, model, device,
    )  # fmt: skip


def parse_latents(spec: str, n: int) -> list[int]:
    """`0-99,512` -> [0, ..., 99, 512]; ValueError outside 0..n-1."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise ValueError(f"--latents: cannot read {part!r} (e.g. 0-99,512)") from None
        if first > last:
            raise ValueError(f"--latents: {part} is an empty range")
        if not 0 <= first <= last < n:
            raise ValueError(f"--latents: {part} is outside 0..{n - 1}")
        out.extend(range(first, last + 1))
    return list(dict.fromkeys(out))


def _n2g(sae_dirs: list[Path], corpus: str, n_tokens: int, text_field: str, model, device) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from sae import load_sae
    from steer.features.catalog import catalog_dir
    from steer.features.explain.from_catalog import explain_catalogs
    from steer.features.explain.store import Explanations

    lm, first = load_for_steering(sae_dirs[0], model, device)
    saes = [first] + [load_sae(d, device=first.device) for d in sae_dirs[1:]]
    catalogs = []
    for sae_dir, sae in zip(sae_dirs, saes, strict=True):
        catalog = load_catalog_for(sae_dir, sae)
        if catalog is None:
            raise ValueError(
                f"no feature catalog for {sae_dir}: build one with `steer index` first"
            )
        catalogs.append(catalog)
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]held-out pass"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tokens"),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("n2g", total=n_tokens)
        results = explain_catalogs(
            lm, saes, catalogs, corpus, n_tokens, text_field=text_field,
            progress=lambda done, total: progress.update(task, completed=done),
        )  # fmt: skip
    for sae_dir, catalog, (patterns, scores) in zip(sae_dirs, catalogs, results, strict=True):
        folder = catalog_dir(sae_dir)
        explanations = Explanations.for_catalog(folder, catalog)
        explanations.set_n2g(
            patterns, scores, lm.tokenizer, corpus=str(corpus), n_tokens=n_tokens, fraction=0.5
        )
        explanations.save(folder)
        catalog.folder = folder
        catalog.set_explanations(explanations)
        catalog.search_index()  # rebuilt now, so the first search is quick
        live = catalog.frequency > 0
        p, r = scores.mean(live)
        covered = int(((patterns.counts() > 0) & live).sum())
        typer.echo(
            f"{sae_dir}: N2G patterns for {covered} of {int(live.sum())} live features; on "
            f"held-out text mean precision {p:.3f}, recall {r:.3f} (over features firing "
            f"there); saved in {folder}"
        )
    typer.echo(f"N2G for {len(sae_dirs)} SAE(s) in {time.perf_counter() - start:.0f} s")


def _lm(sae_dir, explainer_name, scorer_name, latents, sample, corpus, n_tokens, text_field,
        model, device) -> None:  # fmt: skip
    import torch

    from steer.features.catalog import catalog_dir
    from steer.features.explain.heldout import sae_codes
    from steer.features.explain.lm import LMExplainer, ScoringWindows, explain_latents
    from steer.features.explain.n2g import FIRE_FRACTION
    from steer.features.explain.store import Explanations
    from steer.lm.models import load_model

    from .options import resolve_device

    if latents is not None and sample is not None:
        raise ValueError("give --latents or --sample, not both")
    if sample is not None and sample < 1:
        raise ValueError(f"--sample must be positive, got {sample}")
    lm, sae = load_for_steering(sae_dir, model, device)
    catalog = load_catalog_for(sae_dir, sae)
    if catalog is None:
        raise ValueError(f"no feature catalog for {sae_dir}: build one with `steer index` first")
    live = (catalog.frequency > 0).nonzero().flatten().tolist()
    if latents is not None:
        chosen = parse_latents(latents, catalog.n_latents)
    elif sample is not None:
        g = torch.Generator().manual_seed(0)
        chosen = [live[int(i)] for i in torch.randperm(len(live), generator=g)[:sample]]
    else:
        chosen = live
    windows = None
    if corpus is not None:
        codes = sae_codes(lm, sae, corpus, n_tokens, text_field=text_field)
        windows = ScoringWindows(codes, FIRE_FRACTION * catalog.max_acts, lm.tokenizer)
    dev = resolve_device(device)
    explainer = LMExplainer(load_model(explainer_name, device=dev), explainer_name)
    scorer = None
    if corpus is not None:
        same = scorer_name in (None, explainer_name)
        scorer = (
            explainer if same else LMExplainer(load_model(scorer_name, device=dev), scorer_name)
        )
    folder = catalog_dir(sae_dir)
    explanations = Explanations.for_catalog(folder, catalog)

    def show(latent, result) -> None:
        score = "unscored" if result.score is None else f"detection {result.score:.2f}"
        typer.echo(f"{latent}\t{score}\t{result.text}")

    done = explain_latents(
        explainer, scorer, catalog, chosen, explanations, windows,
        save=lambda: explanations.save(folder), progress=show,
    )  # fmt: skip
    scored = [
        e.score for i in chosen for e in explanations.lm.get(i, [])
        if e.explainer == explainer_name and e.score is not None
    ]  # fmt: skip
    mean = (
        f"mean detection {sum(scored) / len(scored):.3f} over {len(scored)}"
        if scored
        else "none scored"
    )
    typer.echo(f"explained {done} feature(s) now ({len(chosen)} asked; {mean}); saved in {folder}")
