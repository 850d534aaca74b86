"""The paper's feature-quality metrics for `steer eval` (Gao et al. 2024 §4): 1-D probe
loss (--probes), ablation sparsity (--ablation) and N2G precision / recall (--n2g), added
to each SAE's results.

Not a command: steer/cli/evaluate.py alone imports it.
"""

from __future__ import annotations

import typer

from .options import parse_count


def paper_metrics(results, lm, saes, layer, contexts, opts: dict, quiet: bool) -> None:
    from steer.evals.paper import add_ablation_metrics, add_probe_metrics

    note = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    autocast = opts["dtype"] == "auto"
    if opts["probes"]:
        if opts["probe_examples"] < 8:
            raise ValueError("--probe-examples must be at least 8")
        note("probe tasks: building from the held-out text, fitting 1-D probes ...")
        sizes = add_probe_metrics(
            results,
            lm,
            saes,
            layer,
            contexts.documents(),
            n_per_class=opts["probe_examples"],
            autocast=autocast,
        )
        note(f"probe tasks ({len(sizes)}): " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    if opts["n2g"]:
        note("N2G: fitting token patterns of every latent on held-out text ...")
        n2g_metrics(
            results, lm, saes, contexts, parse_count(opts["n2g_tokens"], "--tokens"), autocast
        )
    if opts["ablation"]:
        note("ablation sparsity: ablating active latents one at a time ...")
        add_ablation_metrics(
            results,
            lm,
            saes,
            layer,
            contexts,
            n_contexts=opts["ablation_contexts"],
            positions=opts["ablation_positions"],
            horizon=opts["ablation_horizon"],
            autocast=autocast,
        )


def n2g_metrics(results, lm, saes, contexts, n_tokens: int, autocast: bool) -> None:
    """N2G precision / recall per SAE (steer.features.explain, shared with steer explain)."""
    import itertools

    import torch

    from steer.features.explain.heldout import fit_and_score, sae_codes_many

    ctx_len = len(next(iter(contexts)))
    ids = torch.stack(list(itertools.islice(contexts, max(2, -(-n_tokens // ctx_len)))))
    names = list(saes)  # one model pass for every SAE of the hook point
    every = sae_codes_many(
        lm, list(saes.values()), ids, n_tokens, ctx_len=ctx_len, autocast=autocast
    )
    for name, codes in zip(names, every, strict=True):
        _patterns, scores = fit_and_score(codes)
        precision, recall = scores.mean()
        fires = scores.fires > 0
        results[name].update(
            n2g_precision=precision,
            n2g_recall=recall,
            n2g_f1=float(scores.f1()[fires].mean()) if bool(fires.any()) else float("nan"),
            n2g_latents=int(fires.sum()),
        )
