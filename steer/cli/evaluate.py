"""`steer eval`: judge SAE checkpoints spliced into their model, on held-out text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .eval_paper import paper_metrics
from .options import SAE_DEFAULT_HELP, friendly_errors, resolve_device, sae_or_default


def _count(value: str) -> int:
    from .options import parse_count

    return parse_count(value, "--tokens")


@friendly_errors
def evaluate(
    sae: Path = typer.Option(
        None,
        "--sae",
        help="An SAE folder (ours, EleutherAI sparsify or SAELens format), or a run folder holding several (one per width/k)."
        + SAE_DEFAULT_HELP,
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Model to splice the SAE into (default: the model named in the SAE's cfg.json).",
    ),
    layer: str = typer.Option(
        None, "--layer", "-l", help="Hook point, 8 or resid_post.8 (default: the SAE's hookpoint)."
    ),
    corpus: str = typer.Option(
        None,
        "--corpus",
        help="Eval text: a file, a directory or hf:<dataset> (default: the training corpus, its held-out split).",
    ),
    split: str = typer.Option(
        "auto",
        "--split",
        help="Documents to use: heldout (the split steer train left out), all, or auto (heldout when --corpus is the training corpus, else all).",
    ),
    text_field: str = typer.Option(
        None,
        "--text-field",
        help="JSON/parquet field holding the text (default: as in training, else 'text').",
    ),
    ctx_len: int = typer.Option(
        None, "--ctx-len", help="Tokens per context (default: as in training, else 128)."
    ),
    tokens: str = typer.Option(
        "8k",
        "--tokens",
        "-n",
        help="Eval tokens (positions 1..T-1 of each context); accepts 8k, 64k, 1M.",
    ),
    batch_contexts: int = typer.Option(4, "--batch-contexts", help="Contexts per forward pass."),
    dense_threshold: float = typer.Option(
        0.1,
        "--dense-threshold",
        help="A latent firing on more than this fraction of eval tokens is dense.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="Model precision: auto (fp32 weights, bf16 autocast), bf16 or fp32. The SAE always runs in fp32.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object (name -> metrics) instead of a table."
    ),
    hist: Path = typer.Option(
        None, "--hist", help="Save a latent-density histogram (log10 firing frequency) to this PNG."
    ),
    probes: bool = typer.Option(
        False,
        "--probes",
        help="Probe loss (Gao et al. §4.2): ten binary tasks built from the held-out text (year, quote, parenthesis, gender, sport, music, place, article start, shuffled, uppercase); best 1-D logistic probe on one latent, and on one residual coordinate for comparison.",
    ),
    probe_examples: int = typer.Option(
        64, "--probe-examples", help="Examples per class and task (windows of 32 tokens)."
    ),
    ablation: bool = typer.Option(
        False,
        "--ablation",
        help="Ablation sparsity (Gao et al. §4.5): ablate each active latent at a position, (L1/L2)^2 of the median-centred logit change over the next --ablation-horizon positions.",
    ),
    ablation_contexts: int = typer.Option(
        8, "--ablation-contexts", help="Contexts (24 tokens each) for --ablation."
    ),
    ablation_positions: int = typer.Option(
        2, "--ablation-positions", help="Positions per context whose active latents are ablated."
    ),
    ablation_horizon: int = typer.Option(
        8, "--ablation-horizon", help="Positions, from the ablated one on, whose logits count."
    ),
    n2g: bool = typer.Option(
        False,
        "--n2g",
        help="Explainability (Gao et al. §4.3): N2G token patterns of every latent fitted on half of --n2g-tokens held-out tokens, precision and recall on the other half (steer explain's N2G).",
    ),
    n2g_tokens: str = typer.Option("16k", "--n2g-tokens", help="Held-out tokens for --n2g."),
) -> None:
    """Evaluate SAEs on held-out text, with their reconstruction spliced into the model.

    Metrics as Gao et al. (2024) define them, over the eval tokens: every position of a context but the first, which stays unchanged and is excluded, as in training.

      FVU             normalized MSE = sum|x - x_hat|^2 / sum|x - mean(x)|^2
      L0              mean number of nonzero latents per token
      dead            fraction of latents that never fire on the eval tokens
      dense           fraction of latents firing on > --dense-threshold of them
      delta loss      CE(x_hat spliced in at the hook point) - CE(clean)
      loss recovered  (CE_zero - CE_sae) / (CE_zero - CE_clean), where CE_zero
                      zeroes the residual at the hook point (1 = perfect,
                      0 = no better than zero ablation)
      KL              KL(p_clean || p_spliced), next-token distributions

    CE and KL are in nats per predicted token. Dead and dense fractions are measured on the eval tokens only: a short eval overstates the dead fraction.

    With --probes / --ablation (the paper's feature-quality metrics, on the same held-out text):

      probe loss      mean over tasks of the best held-out cross-entropy of a 1-D
                      logistic probe on one latent (log 2 = 0.693 is chance);
                      "resid" is the same on one residual coordinate
      abl. sparsity   (L1/L2)^2 of the median-centred logit change (horizon x vocab)
                      when one active latent is ablated: about how many logits move
      N2G P / R       mean precision / recall of the latents' N2G patterns on held-out
                      tokens (a latent fires above half its max), over latents that fire
    """
    from steer.evals.evaluate import EvalConfig, save_density_histogram
    from steer.lm.data import TokenContexts
    from steer.lm.models import DEFAULT_MODEL, load_model

    from .options import (
        check_ctx_len,
        check_device,
        model_dtype,
        provenance_of,
        quiet_model_loading,
    )

    n_tokens = _count(tokens)
    _check_numbers(batch_contexts, dense_threshold, hist)
    dev = check_device(resolve_device(device))
    if split not in ("auto", "heldout", "all"):
        raise ValueError(f"--split must be auto, heldout or all, got {split!r}")
    saes, layer_index = _open_saes(sae, model, layer)
    first = next(iter(saes.values()))
    prov = provenance_of(first.cfg)
    model_name = model or first.cfg.model_name or DEFAULT_MODEL
    corpus, split, heldout_fraction = _eval_text(corpus, split, prov)

    quiet_model_loading()
    lm = load_model(model_name, device=dev, dtype=model_dtype(dtype))
    lm.check_layer(layer_index)
    if ctx_len is not None:
        check_ctx_len(lm, ctx_len)
    saes = {name: one.to(dev) for name, one in saes.items()}
    contexts = TokenContexts(
        corpus,
        lm.tokenizer,
        ctx_len=ctx_len or int(prov.get("ctx_len", 128)),
        text_field=text_field or prov.get("text_field", "text"),
        split=split,
        heldout_fraction=heldout_fraction if split == "heldout" else 0.0,
        shuffle_buffer=0,
    )
    cfg = EvalConfig(
        tokens=n_tokens,
        batch_contexts=batch_contexts,
        dense_threshold=dense_threshold,
        autocast=dtype == "auto",
    )
    results = _run(lm, saes, layer_index, contexts, cfg, quiet=as_json)
    if probes or ablation or n2g:
        paper_metrics(results, lm, saes, layer_index, contexts, locals(), quiet=as_json)
    if hist is not None:
        freqs = {name: r["frequencies"] for name, r in results.items()}
        save_density_histogram(freqs, hist, next(iter(results.values()))["tokens"])
    for r in results.values():
        r.pop("frequencies")
        r.update(corpus=str(corpus), split=split)

    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        _print_table(results, hist)


def _check_numbers(batch_contexts: int, dense_threshold: float, hist: Path | None) -> None:
    from .options import check_out_file, check_positive

    check_positive(batch_contexts=batch_contexts)
    if not 0 < dense_threshold < 1:
        raise ValueError(
            f"--dense-threshold is a fraction of the eval tokens, in (0, 1); got {dense_threshold}"
        )
    check_out_file(hist, "--hist")


def _open_saes(sae: Path | None, model: str | None, layer: str | None):
    """The SAEs of --sae (one folder, or a run folder of several: native, sparsify or
    SAELens) and the layer they read, which must be one."""
    from sae import load_sae
    from steer.evals.evaluate import find_sae_dirs
    from steer.lm.models import parse_hookpoint

    folders = find_sae_dirs(sae_or_default(sae, model))
    saes = {name: load_sae(folder) for name, folder in folders.items()}  # native, sparsify, SAELens
    first = next(iter(saes.values()))
    hookpoint = layer if layer is not None else first.cfg.hookpoint
    if not hookpoint:
        raise ValueError(f"{sae} does not say which layer it reads: pass --layer")
    layer_index = parse_hookpoint(hookpoint)
    for name, one in saes.items():
        if (
            layer is None
            and one.cfg.hookpoint
            and parse_hookpoint(one.cfg.hookpoint) != layer_index
        ):
            raise ValueError(
                f"{name} reads {one.cfg.hookpoint}, not resid_post.{layer_index}: evaluate it separately"
            )
    return saes, layer_index


def _eval_text(corpus: str | None, split: str, prov: dict) -> tuple[str, str, float]:
    """(corpus, split, held-out fraction): by default the training corpus's held-out
    documents, as its provenance records them."""
    from steer.evals.evaluate import DEFAULT_HELDOUT_FRACTION

    train_corpus = prov.get("corpus")
    corpus = corpus or train_corpus
    if not corpus:
        raise ValueError(
            "the SAE does not record its training corpus: pass --corpus PATH (held-out text)"
        )
    heldout_fraction = float(prov.get("heldout_fraction", DEFAULT_HELDOUT_FRACTION))
    if split == "auto":
        same = train_corpus is not None and _same_source(corpus, train_corpus)
        split = "heldout" if same and heldout_fraction > 0 else "all"
    return corpus, split, heldout_fraction


def _same_source(a: str, b: str) -> bool:
    if a.startswith("hf:") or b.startswith("hf:"):
        return a == b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _run(lm, saes, layer, contexts, cfg, quiet: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from steer.evals.evaluate import evaluate_saes

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return evaluate_saes(lm, saes, layer, contexts, cfg)
    with Progress(
        TextColumn("evaluating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tokens"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("eval", total=cfg.tokens)
        return evaluate_saes(
            lm,
            saes,
            layer,
            contexts,
            cfg,
            on_progress=lambda done: progress.update(task, completed=min(done, cfg.tokens)),
        )


def _print_table(results: dict, hist: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    first = next(iter(results.values()))
    table = Table(
        title=f"{first['model']} {first['hookpoint']}: {first['tokens']:,} eval tokens "
        f"({first['corpus']}, {first['split']})"
    )
    for column in (
        "SAE",
        "latents",
        "k",
        "FVU",
        "L0",
        "dead",
        "dense",
        "Δ loss",
        "loss rec.",
        "KL",
    ):
        table.add_column(column, justify="left" if column == "SAE" else "right", no_wrap=True)
    heads = {"probe_loss": "probe", "ablation_sparsity": "abl. sparsity"}
    heads.update(n2g_precision="N2G P", n2g_recall="N2G R")
    extra = [c for c in heads if c in first]
    for column in extra:
        table.add_column(heads[column], justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['n_latents']:,}",
            str(r["k"]),
            f"{r['fvu']:.4f}",
            f"{r['l0']:.1f}",
            f"{r['dead_frac']:.1%}",
            f"{r['dense_frac']:.1%}",
            f"{r['delta_loss']:+.4f}",
            f"{r['loss_recovered']:.1%}",
            f"{r['kl']:.4f}",
            *[f"{r[c]:.1f}" if c == "ablation_sparsity" else f"{r[c]:.3f}" for c in extra],
        )
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        # pipes and logs: don't squeeze to 80
        console = Console(file=sys.stdout, width=130 + 14 * len(extra))
    console.print(table)
    _print_notes(console, first, hist)


def _print_notes(console, first: dict, hist: Path | None) -> None:
    """What the table's numbers are, under it."""
    console.print(
        f"CE clean {first['ce_clean']:.4f}, zero-ablated {first['ce_zero']:.4f} nats/token. "
        f"dead/dense: never / on >{first['dense_threshold']:.0%} of the eval tokens."
    )
    if "probe_loss" in first:
        console.print(
            f"probe loss: best 1-D probe per task, mean over {len(first['probe_tasks'])} tasks "
            f"(chance 0.693); on one residual coordinate instead: {first['probe_loss_residual']:.3f}"
        )
    if "ablation_sparsity" in first:
        console.print(
            f"ablation sparsity: (L1/L2)^2 over {first['ablation_horizon']} positions x vocab, "
            f"mean of {first['ablation_count']} ablations (first SAE)"
        )
    if hist is not None:
        console.print(f"latent-density histogram: {hist}")
