"""Judge TopK SAEs the way Gao et al. (arXiv 2406.04093) do: reconstruction and LM loss.

For every batch of held-out contexts the model runs once: blocks 0..L on the contexts,
then a hook on block L stacks `2 + n_saes` copies of its output (copy 0 clean, copy 1 with
the residual zeroed — zero ablation —, one with each SAE's reconstruction spliced in) and
blocks L+1.. run on the stacked batch. Blocks 0..L would see identical inputs in every
copy, so they run once: the eval costs about (L+1)/n_layers + (2+n)(1 - (L+1)/n_layers)
forward passes. Position 0 of every context (BOS-like, huge norm) is left unchanged in
every copy and excluded from every metric, as in training.

The next-token cross-entropies and KLs need fp32 softmaxes over the whole vocabulary of
every copy; they run a few positions at a time so that the (copies, positions, vocab)
tensors stay in the CPU's cache (three times faster than whole contexts at 49k vocab).

Metrics (all over the evaluated tokens, i.e. positions 1..T-1 of every context):

    FVU (normalized MSE)  sum ||x - x̂||² / sum ||x - mean(x)||²   (mean over eval tokens)
    L0                    mean number of nonzero latents per token
    dead fraction         latents that never fire on the eval tokens
    dense fraction        latents that fire on more than `dense_threshold` of them
    CE clean / sae / zero next-token cross-entropy with x, x̂, 0 at block L
    Δ LM loss             CE_sae − CE_clean
    loss recovered        (CE_zero − CE_sae) / (CE_zero − CE_clean)
    KL                    KL(p_clean || p_sae) of next-token distributions, nats/token

CE and KL are over next-token predictions made at positions 1..T-2 (predictions made at
position 0 cannot change: the residual there is kept).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sae import TopKSAE, metrics
from steer.lm.models import LoadedModel, block_output

DEFAULT_HELDOUT_FRACTION = 0.01
"""Fraction of a corpus's documents `steer train` leaves out and `steer eval` uses."""

METRIC_DEFINITIONS = {
    "fvu": "normalized MSE = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the eval tokens (the first position of each context and attention-sink tokens with norm > 10x the median excluded)",
    "l0": "mean number of nonzero latents per token",
    "dead_frac": "fraction of latents that never fire on the eval tokens",
    "dense_frac": "fraction of latents that fire on more than the dense threshold of eval tokens",
    "delta_loss": "CE with x_hat spliced in at the hook point minus clean CE (nats/token)",
    "loss_recovered": "(CE_zero - CE_sae) / (CE_zero - CE_clean), zero ablation at the hook point",
    "kl": "KL(p_clean || p_spliced) of next-token distributions (nats/token)",
}


@dataclass
class EvalConfig:
    tokens: int = 8192
    """Eval tokens (positions 1..T-1 of each context) to run through every SAE."""

    batch_contexts: int = 4
    """Contexts per forward pass (the model runs on 2 + n_saes copies of them)."""

    dense_threshold: float = 0.1
    """A latent firing on more than this fraction of the eval tokens counts as dense."""

    skip_first: int = 1
    """Leading positions of each context kept unchanged and left out of every metric."""

    outlier_factor: float = 10.0
    """Tokens whose activation norm exceeds this multiple of the batch median (attention
    sinks with massive activations) are left unchanged and out of every metric."""

    autocast: bool = True
    """Run the model under bf16 autocast when its weights are fp32 (fast on CPU); the SAEs
    always run in fp32."""


class _Accumulator:
    """Running sums for one SAE (float64, so large token counts stay exact enough)."""

    def __init__(self, n_latents: int):
        self.err = 0.0
        self.l0 = 0.0
        self.fires = torch.zeros(n_latents, dtype=torch.float64)
        self.ce = 0.0
        self.kl = 0.0


def check_compatible(lm: LoadedModel, sae: TopKSAE, layer: int, name: str = "SAE") -> None:
    """Raise ValueError when the SAE cannot read this model's residual stream."""
    lm.check_layer(layer)
    if sae.d_in != lm.d_model:
        raise ValueError(
            f"{name} reads d_in={sae.d_in} activations but {lm.name} has d_model={lm.d_model}: "
            f"it was trained on another model ({sae.cfg.model_name or 'unknown'})"
        )


@torch.inference_mode()
def evaluate_saes(
    lm: LoadedModel,
    saes: dict[str, TopKSAE],
    layer: int,
    contexts: Iterable[Tensor],
    cfg: EvalConfig | None = None,
    on_progress=None,
) -> dict[str, dict]:
    """Evaluate several SAEs reading the same hook point on the same contexts.

    contexts: (T,) token-id tensors, all of one length. on_progress(tokens_done) is
    called after every batch. Returns name -> metrics (see the module docstring), each
    with a `frequencies` tensor (n_latents,) of firing frequencies for histograms.
    """
    cfg = cfg or EvalConfig()
    if not saes:
        raise ValueError("no SAE to evaluate")
    for name, sae in saes.items():
        check_compatible(lm, sae, layer, name)
    names = list(saes)
    n_variants = 2 + len(names)  # clean, zero, one per SAE
    skip = cfg.skip_first
    acc = {name: _Accumulator(saes[name].n_latents) for name in names}
    totals = {"sum_x": torch.zeros(lm.d_model, dtype=torch.float64), "sum_x2": 0.0}
    totals.update(ce_clean=0.0, ce_zero=0.0, n_tokens=0, n_preds=0)
    state: dict = {}
    head = lm_head(lm, cfg.autocast)
    base = lm.model.get_submodule(lm.blocks_path.rsplit(".", 1)[0])
    handles = [lm.block(layer).register_forward_hook(_splice_hook(saes, acc, cfg, state))]
    for block in lm.blocks[layer + 1 :]:  # later blocks see the stacked batch
        handles.append(block.register_forward_pre_hook(_stack_inputs_hook(state), with_kwargs=True))
    try:
        for ids in _batches(contexts, cfg.batch_contexts, cfg.tokens, skip):
            ids = ids.to(lm.device)  # (B, T)
            if ids.shape[1] < skip + 2:
                raise ValueError(f"contexts of {ids.shape[1]} tokens are too short to evaluate")
            with _autocast(lm, cfg.autocast):
                hidden = base(input_ids=ids, use_cache=False)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden.last_hidden_state
            if hidden.shape[0] != n_variants * ids.shape[0]:
                raise RuntimeError(f"{lm.name}'s forward pass did not keep the stacked copies")
            _add_losses(head, hidden, ids, names, acc, totals, cfg)
            x = state.pop("x").double()  # (N, d)
            totals["sum_x"] += x.sum(0).cpu()
            totals["sum_x2"] += float(x.pow(2).sum())
            totals["n_tokens"] += x.shape[0]
            if on_progress is not None:
                on_progress(totals["n_tokens"])
    finally:
        for handle in handles:
            handle.remove()
    if totals["n_tokens"] == 0:
        raise ValueError("the eval corpus yielded no contexts")
    return {name: _metrics(lm, layer, saes[name], acc[name], totals, cfg) for name in names}


def _splice_hook(saes: dict[str, TopKSAE], acc: dict[str, _Accumulator], cfg, state: dict):
    """Forward hook on block L: (B, T, d) -> (V*B, T, d), copies stacked variant-major
    (clean, zero, one per SAE), with the SAEs' sums accumulated on the way."""
    names = list(saes)
    skip = cfg.skip_first

    def hook(_module, _args, output):
        resid = block_output(output)  # (B, T, d)
        batch = resid.shape[0]
        x = resid[:, skip:]  # (B, T', d) the clean activations
        # Attention-sink tokens carry "massive activations" (here up to 200x the median
        # norm): one of them can hold most of the variance and make FVU meaningless, so,
        # like the first position, they stay unchanged and out of every metric.
        norms = x.float().norm(dim=-1)  # (B, T')
        keep = norms <= cfg.outlier_factor * norms.median()  # (B, T')
        x_flat = x[keep].float()  # (N, d)
        new = resid.repeat(2 + len(names), 1, 1)  # (V*B, T, d)
        new[batch : 2 * batch, skip:][keep] = 0  # zero ablation
        for i, name in enumerate(names):
            sae = saes[name]
            with torch.autocast(x_flat.device.type, enabled=False):  # SAEs run in fp32
                top_acts, top_indices = sae.encode(x_flat.to(sae.device))
                x_hat = sae.decode(top_acts, top_indices).to(x_flat.device)  # (N, d)
            new[(2 + i) * batch : (3 + i) * batch, skip:][keep] = x_hat.to(resid.dtype)
            a = acc[name]
            a.err += float((x_flat - x_hat).double().pow(2).sum())
            fired = top_acts > 0  # (N, k) TopK may pick zeros when few pre-acts are positive
            a.l0 += float(fired.sum())
            a.fires += torch.bincount(
                top_indices[fired].flatten().cpu(), minlength=sae.n_latents
            ).double()
        state.update(x=x_flat, batch=batch, stacked=new.shape[0])
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


def _stack_inputs_hook(state: dict):
    """Forward pre-hook on the blocks after L: the tensors the model computed once for
    the unstacked batch (attention masks, per-row position embeddings) are repeated to
    match the stacked hidden states (with B = 1 repeating is harmless, so it is done too)."""

    def stack(value):
        if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == state["batch"]:
            return value.repeat(state["stacked"] // state["batch"], *[1] * (value.dim() - 1))
        if isinstance(value, tuple | list):
            return type(value)(stack(v) for v in value)
        return value

    def hook(_module, args, kwargs):  # the hidden states (V*B rows) pass unchanged
        return stack(args), {key: stack(value) for key, value in kwargs.items()}

    return hook


def _add_losses(head, hidden: Tensor, ids: Tensor, names, acc, totals: dict, cfg) -> None:
    """Add the next-token CE of every copy and the KL of every SAE copy to the sums."""
    b = ids.shape[0]
    skip = cfg.skip_first
    targets = ids[:, skip + 1 :]  # (B, T - skip - 1) next tokens
    for row in range(b):
        rows = hidden[row::b]  # (V, T, d): the same context in every variant
        logits = head(rows[:, skip:-1])  # (V, T', vocab)
        ce, kl = next_token_losses(logits, targets[row])
        totals["ce_clean"] += float(ce[0])
        totals["ce_zero"] += float(ce[1])
        for i, name in enumerate(names):
            acc[name].ce += float(ce[2 + i])
            acc[name].kl += float(kl[i])
    totals["n_preds"] += targets.numel()


def lm_head(lm: LoadedModel, autocast: bool):
    """The unembedding as a function (..., d) -> (..., vocab), as the model computes it
    (under bf16 autocast when `autocast`). Autocast keeps no cache of cast weights in
    inference mode, so a Linear head's fp32 weight (49k x 576 here) would be cast on every
    call, a third of the head's time: it is cast once, with the same result."""
    unembed = lm.unembed
    autocasting = not isinstance(_autocast(lm, autocast), contextlib.nullcontext)
    if autocasting and isinstance(unembed, torch.nn.Linear):
        weight = unembed.weight.to(torch.bfloat16)
        bias = None if unembed.bias is None else unembed.bias.to(torch.bfloat16)
        return lambda h: F.linear(h.to(torch.bfloat16), weight, bias)

    def head(h: Tensor) -> Tensor:
        with _autocast(lm, autocast):
            return unembed(h)

    return head


CHUNK_BYTES = 1 << 23
"""fp32 bytes of (copies, positions, vocab) softmax work per step: small enough to stay in
a CPU core's cache (8 MB: 8 positions of 5 copies at 49k vocab)."""


def next_token_losses(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token CE of every copy, and KL(p_0 || p_i) of copies 2.. (float64).

    logits: (V, T, vocab), copy 0 clean; targets: (T,). Returns ce (V,), kl (V - 2,).
    """
    n_variants, n_pos, vocab = logits.shape
    step = max(1, CHUNK_BYTES // (4 * n_variants * vocab))
    ce = torch.zeros(n_variants, dtype=torch.float64)
    kl = torch.zeros(n_variants - 2, dtype=torch.float64)
    for start in range(0, n_pos, step):
        logp = F.log_softmax(logits[:, start : start + step].float(), dim=-1)  # (V, t, vocab)
        target = targets[start : start + step].expand(n_variants, -1).unsqueeze(-1)  # (V, t, 1)
        ce -= logp.gather(-1, target).squeeze(-1).double().sum(-1).cpu()
        p_clean = logp[0].exp()  # (t, vocab)
        kl += (p_clean * (logp[0] - logp[2:])).sum(-1).double().sum(-1).cpu()
    return ce, kl


def _metrics(lm, layer: int, sae: TopKSAE, a: _Accumulator, totals: dict, cfg) -> dict:
    n_tokens, n_preds = totals["n_tokens"], totals["n_preds"]
    ce_clean = totals["ce_clean"] / n_preds
    ce_zero = totals["ce_zero"] / n_preds
    ce_sae = a.ce / n_preds
    freq = (a.fires / n_tokens).float()
    return {
        "model": lm.name,
        "hookpoint": f"resid_post.{layer}",
        "n_latents": sae.n_latents,
        "k": sae.k,
        "tokens": n_tokens,
        "fvu": metrics.fvu_from_sums(a.err, totals["sum_x"], totals["sum_x2"], n_tokens),
        "l0": a.l0 / n_tokens,
        "dead_frac": metrics.dead_fraction(freq),
        "dense_frac": metrics.dense_fraction(freq, cfg.dense_threshold),
        "dense_threshold": cfg.dense_threshold,
        "ce_clean": ce_clean,
        "ce_sae": ce_sae,
        "ce_zero": ce_zero,
        "delta_loss": metrics.delta_loss(ce_sae, ce_clean),
        "loss_recovered": metrics.loss_recovered(ce_clean, ce_sae, ce_zero),
        "kl": a.kl / n_preds,
        "frequencies": freq,
    }


def _batches(contexts: Iterable[Tensor], size: int, tokens: int, skip: int) -> Iterator[Tensor]:
    """Stack contexts into (B, T) batches until `tokens` eval tokens are covered."""
    batch: list[Tensor] = []
    done = 0
    for context in contexts:
        if done >= tokens:
            break
        batch.append(context)
        done += context.shape[-1] - skip
        if len(batch) == size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def _autocast(lm: LoadedModel, enabled: bool):
    device_type = lm.device.type
    if enabled and lm.dtype == torch.float32 and device_type in ("cpu", "cuda"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_density_histogram(frequencies: dict[str, Tensor], path: str | Path, tokens: int) -> Path:
    """Histogram of log10(firing frequency) per latent, one outline per SAE; dead latents
    (frequency 0) are counted in the legend since log10(0) has no place on the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    floor = math.log10(1 / max(tokens, 1))
    bins = torch.linspace(floor, 0, 51).tolist()
    for name, freq in frequencies.items():
        live = freq[freq > 0]
        dead = int((freq == 0).sum())
        ax.hist(
            live.log10().tolist(),
            bins=bins,
            histtype="step",
            linewidth=1.5,
            label=f"{name} ({dead} dead of {freq.numel()})",
        )
    ax.set_xlabel("log10(firing frequency)")
    ax.set_ylabel("latents")
    ax.set_title(f"Latent density over {tokens:,} eval tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def find_sae_dirs(path: str | Path) -> dict[str, Path]:
    """A checkpoint folder, or a run folder holding several (`<n>-k<k>/cfg.json`); a
    Matryoshka SAE stands for all its levels (`DIR@m`), `DIR@m` for that one level."""
    from sae.matryoshka import matryoshka_levels, prefix_path, split_prefix

    base, prefix = split_prefix(Path(path).expanduser())
    if prefix is not None:
        if not base.is_dir():
            raise ValueError(f"no SAE checkpoint at {base}")
        return {f"{base.name}@{prefix}": Path(prefix_path(base, prefix))}
    folder = base
    if not folder.exists():
        raise ValueError(f"no SAE checkpoint at {folder}")
    if (folder / "cfg.json").is_file() or not folder.is_dir():
        found = {folder.name: folder}
    else:
        found = {p.parent.name: p.parent for p in sorted(folder.glob("*/cfg.json"))}
    if not found:
        raise ValueError(f"{folder} holds no SAE checkpoint (no cfg.json in it or its subfolders)")
    levels = {}
    for name, one in found.items():
        for m in matryoshka_levels(one)[:-1]:
            levels[f"{name}@{m}"] = Path(prefix_path(one, m))
        levels[name] = one
    return levels
