"""The paper's feature-quality metrics for `steer eval`, on held-out text.

Each adds keys to the per-SAE result dict of steer.evals.evaluate.evaluate_saes:

    probe_loss           mean over the probe tasks of the best 1-D probe's held-out CE
    probe_loss_residual  the same with raw residual coordinates instead of latents
    probe_tasks          task -> {loss, feature, accuracy}
    ablation_sparsity    mean (L1/L2)² of the median-centred logit change when one active
                         latent is ablated at one position (effective logits touched)
    ablation_fraction    ablation_sparsity / (horizon · vocab)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import Tensor

from .ablation import ablation_sparsity
from .probes import build_tasks, probe_eval

PAPER_DEFINITIONS = {
    "probe_loss": "mean over tasks of the lowest held-out cross-entropy of a 1-D logistic probe on one latent (window-mean activation); log 2 = chance",
    "probe_loss_residual": "the same probes on the raw residual coordinates",
    "ablation_sparsity": "(L1/L2)^2 of the median-centred logit change over horizon x vocab when one active latent is ablated at one position; 1 = one logit moved",
}


def add_probe_metrics(
    results: dict,
    lm,
    saes: dict,
    layer: int,
    texts: Iterable[str],
    n_per_class: int = 64,
    window: int = 32,
    seed: int = 0,
    autocast: bool = True,
) -> dict:
    """Build the probe tasks from `texts` (held-out documents) and add the probe keys to
    results[name] for every SAE. Returns the tasks' sizes, task -> examples."""
    tasks = build_tasks(texts, lm.tokenizer, n_per_class=n_per_class, window=window, seed=seed)
    probes = probe_eval(lm, saes, layer, tasks, seed=seed, autocast=autocast)
    residual = probes.pop("residual")
    for name, entry in probes.items():
        results[name].update(
            probe_loss=entry["mean_loss"],
            probe_loss_residual=residual["mean_loss"],
            probe_tasks=entry["tasks"],
            probe_tasks_residual=residual["tasks"],
        )
    return {name: int(task.labels.numel()) for name, task in tasks.items()}


def add_ablation_metrics(
    results: dict,
    lm,
    saes: dict,
    layer: int,
    contexts: Iterable[Tensor],
    n_contexts: int = 8,
    length: int = 24,
    positions: int = 2,
    horizon: int = 8,
    seed: int = 0,
    autocast: bool = True,
) -> None:
    """Ablation sparsity of every SAE on the first `n_contexts` contexts, cut to `length`."""
    if length < horizon + 2:
        raise ValueError(
            f"ablation contexts of {length} tokens are too short for horizon {horizon}"
        )
    ids = torch.stack([c[:length] for c in itertools.islice(contexts, n_contexts)])  # (B, length)
    for name, sae in saes.items():
        out = ablation_sparsity(
            lm, sae, layer, ids, positions=positions, horizon=horizon, seed=seed, autocast=autocast
        )
        results[name].update(
            ablation_sparsity=out["sparsity"],
            ablation_fraction=out["fraction"],
            ablation_count=out["ablations"],
            ablation_horizon=horizon,
        )
