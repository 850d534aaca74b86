"""Building a catalog: one pass of the model and the SAE over a corpus sample.

A batch of contexts runs up to the SAE's block (bf16 autocast), is encoded, and
per-latent statistics and the running top contexts are updated with tensor operations
(scatter-max per context, one topk over (n, C + B)), never a Python loop over latents.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.data import contexts_from
from steer.lm.models import LoadedModel
from steer.steering import sae_layer

from .labels import make_label
from .lens import logit_lens
from .store import FeatureCatalog, sae_fingerprint, token_bytes

F16_MAX = 65504.0


class _TopContexts:
    """Running top-C contexts per latent, kept on tensors.

    For each latent: values (n, C) of the best contexts' max activations, and for each a
    window of token ids (n, C, W) around that max (-1 outside the context) with the
    latent's activations on it (n, C, W).
    """

    def __init__(self, n: int, C: int, before: int, after: int):
        self.C, self.before, self.after, self.W = C, before, after, before + 1 + after
        self.values = torch.full((n, C), -1.0)
        self.tokens = torch.full((n, C, self.W), -1, dtype=torch.int32)
        self.acts = torch.zeros(n, C, self.W)

    def update(self, ids: Tensor, acts: Tensor, idx: Tensor, skip: int) -> None:
        """ids (B, T) tokens; acts, idx (B, T - skip, k) TopK codes of positions skip..T-1."""
        B, T = ids.shape
        n, C, W = *self.values.shape, self.W
        k = acts.shape[-1]
        # Per (context, latent): max activation and the first position reaching it.
        key = (torch.arange(B)[:, None, None] * n + idx).flatten()  # (B*Tm*k,)
        flat = acts.flatten()
        dense = torch.zeros(B * n).scatter_reduce(0, key, flat, "amax")  # (B*n,)
        pos_of = (torch.arange(skip, T)[None, :, None]).expand_as(idx).flatten()
        at_max = (flat == dense[key]) & (flat > 0)
        pos = torch.full((B * n,), T).scatter_reduce(0, key[at_max], pos_of[at_max], "amin")
        cand = dense.view(B, n).T  # (n, B)
        cand = torch.where(cand > 0, cand, torch.full_like(cand, -1.0))
        top_vals, sel = torch.cat([self.values, cand], dim=1).topk(C, dim=1)  # (n, C)
        keep = sel.clamp(max=C - 1)[..., None].expand(-1, -1, W)
        tokens, new_acts = self.tokens.gather(1, keep), self.acts.gather(1, keep)
        lat, slot = ((sel >= C) & (top_vals > 0)).nonzero(as_tuple=True)  # entries from this batch
        # Dense (B, T, k) codes with the skipped positions empty, to read windows from.
        full_idx = torch.full((B, T, k), -1, dtype=idx.dtype)
        full_acts = torch.zeros(B, T, k)
        full_idx[:, skip:], full_acts[:, skip:] = idx, acts
        offsets = torch.arange(-self.before, self.after + 1)  # (W,)
        for s in range(0, lat.numel(), 8192):  # bounded memory: (chunk, W, k)
            la, sl = lat[s : s + 8192], slot[s : s + 8192]
            b = sel[la, sl] - C
            wpos = pos.view(B, n)[b, la][:, None] + offsets  # (E, W)
            valid = (wpos >= 0) & (wpos < T)
            wpos = wpos.clamp(0, T - 1)
            tok = ids[b[:, None], wpos].to(torch.int32).masked_fill(~valid, -1)
            hit = full_idx[b[:, None], wpos] == la[:, None, None]  # (E, W, k)
            win = (full_acts[b[:, None], wpos] * hit).sum(-1) * valid  # (E, W)
            tokens[la, sl], new_acts[la, sl] = tok, win
        self.values, self.tokens, self.acts = top_vals, tokens, new_acts


class _Statistics:
    """Per-latent running statistics over the indexed tokens, and the top contexts."""

    def __init__(self, n: int, n_contexts: int, window: tuple[int, int]):
        self.count = torch.zeros(n, dtype=torch.float64)  # tokens fired on
        self.total = torch.zeros(n, dtype=torch.float64)  # sum of activations when fired
        self.max_act = torch.zeros(n)
        self.top = _TopContexts(n, n_contexts, *window)
        self.seen = 0  # tokens counted (the skipped first positions are not)

    def add(self, ids: Tensor, acts: Tensor, idx: Tensor, skip: int) -> None:
        """ids (B, T); acts, idx (B*(T - skip), k) codes of positions skip..T-1."""
        B, T = ids.shape
        n = self.count.numel()
        fired = acts > 0
        self.count += torch.bincount(idx[fired], minlength=n)
        self.total += torch.bincount(idx[fired], weights=acts[fired].double(), minlength=n)
        self.max_act = self.max_act.scatter_reduce(0, idx.flatten(), acts.flatten(), "amax")
        self.top.update(ids, acts.view(B, T - skip, -1), idx.view(B, T - skip, -1), skip)
        self.seen += B * (T - skip)


@torch.inference_mode()
def build_catalog(
    lm: LoadedModel,
    sae: TopKSAE,
    source,
    n_tokens: int = 200_000,
    *,
    ctx_len: int = 128,
    batch_size: int = 16,
    n_contexts: int = 8,
    window: tuple[int, int] = (16, 4),
    n_logit: int = 10,
    skip_first: int = 1,
    autocast: bool = True,
    seed: int = 0,
    text_field: str = "text",
    progress: Callable[[int, int], None] | None = None,
) -> FeatureCatalog:
    """Index `n_tokens` tokens of `source` (a corpus path / hf: spec for steer.lm.data, an
    iterable of texts, or of token contexts (T,)) and return the catalog.

    progress(tokens_done, n_tokens) is called after every batch.
    """
    layer = sae_layer(lm, sae)
    if n_tokens < 1:
        raise ValueError(f"--tokens must be positive, got {n_tokens}")
    n, d, dev = sae.n_latents, sae.d_in, lm.device
    use_autocast = autocast and lm.dtype == torch.float32 and dev.type in ("cpu", "cuda")
    stats = _Statistics(n, n_contexts, window)
    done = T = 0  # tokens read; context length
    contexts = contexts_from(source, lm.tokenizer, ctx_len, seed, text_field)
    while done < n_tokens:
        wanted = min(batch_size, -(-(n_tokens - done) // ctx_len))  # do not overshoot n_tokens
        batch = list(itertools.islice(contexts, wanted))
        if not batch:
            break
        ids = torch.stack(batch)  # (B, T)
        B, T = ids.shape
        if T <= skip_first:
            raise ValueError(
                f"contexts of {T} tokens are too short (the first {skip_first} are skipped)"
            )
        amp = torch.autocast(dev.type, dtype=torch.bfloat16) if use_autocast else nullcontext()
        with amp:
            resid = lm.residual(ids.to(dev), layer)[:, skip_first:]  # (B, Tm, d)
            acts, idx = sae.encode(resid.reshape(-1, d).to(sae.device))  # (B*Tm, k)
        stats.add(ids, acts.float().cpu(), idx.cpu(), skip_first)
        done += B * T
        if progress is not None:
            progress(min(done, n_tokens), n_tokens)
    if stats.seen == 0:
        raise ValueError("the corpus gave no tokens to index")
    lens_top, lens_bottom = logit_lens(
        lm, sae.decoder_directions(torch.arange(n)), n_logit, fast=use_autocast
    )
    meta = _catalog_meta(lm, sae, source, stats.seen, T, window, skip_first)
    return _assemble(stats, lens_top, lens_bottom, lm.tokenizer, window[0], meta)


def _catalog_meta(
    lm: LoadedModel,
    sae: TopKSAE,
    source,
    n_seen: int,
    ctx_len: int,
    window: tuple[int, int],
    skip_first: int,
) -> dict:
    """What the catalog records about how it was built."""
    return {
        "model": lm.name,
        "hookpoint": sae.cfg.hookpoint,
        "n_latents": sae.n_latents,
        "n_tokens": n_seen,
        "ctx_len": ctx_len,
        "window": list(window),
        "skip_first": skip_first,
        "sae_fingerprint": sae_fingerprint(sae),
        "logit_lens": "W_U (norm weight ⊙ centered(W_dec[i])): no norm bias, no RMS division",
        "corpus": str(source) if isinstance(source, (str, Path)) else type(source).__name__,
    }


def _assemble(
    stats: _Statistics, lens_top: Tensor, lens_bottom: Tensor, tokenizer, before: int, meta: dict
) -> FeatureCatalog:
    """The catalog's tensors and labels, over a compact vocabulary: only the token strings
    the catalog uses are stored, and token ids are renumbered into them."""
    top = stats.top
    used = torch.unique(
        torch.cat([top.tokens[top.tokens >= 0].long(), lens_top.flatten(), lens_bottom.flatten()])
    )
    remap = torch.full((int(used.max()) + 1 if used.numel() else 1,), -1, dtype=torch.int32)
    remap[used] = torch.arange(used.numel(), dtype=torch.int32)
    pieces = [b.decode("latin-1") for b in token_bytes(tokenizer, used.tolist())]
    texts = [b.encode("latin-1").decode("utf-8", "replace") for b in pieces]

    def compact(t: Tensor) -> Tensor:
        return torch.where(
            t >= 0, remap[t.long().clamp(min=0)], torch.full_like(t, -1, dtype=torch.int32)
        )

    ctx_tokens, lens_top_c, lens_bottom_c = (
        compact(top.tokens),
        compact(lens_top),
        compact(lens_bottom),
    )
    labels = _labels(
        ctx_tokens[:, :, before], top.values, lens_top_c[:, :3], stats.count > 0, texts
    )
    tensors = {
        "frequency": (stats.count / stats.seen).float(),
        "mean_act": (stats.total / stats.count.clamp(min=1)).float(),
        "max_act": stats.max_act,
        "ctx_values": top.values.clamp(min=0),
        "ctx_tokens": ctx_tokens,
        "ctx_acts": top.acts.clamp(-F16_MAX, F16_MAX).half(),
        "lens_top": lens_top_c,
        "lens_bottom": lens_bottom_c,
    }
    return FeatureCatalog(tensors, labels, pieces, meta)


def _labels(
    peak_ids: Tensor, values: Tensor, lens_ids: Tensor, fired: Tensor, texts: list[str]
) -> list[str]:
    """make_label for every latent: peak_ids (n, C) compact ids of each top context's max
    token, values (n, C) their activations, lens_ids (n, 3) top logit-lens ids."""
    peak_ids, values, lens_ids, fired = (
        peak_ids.tolist(), values.tolist(), lens_ids.tolist(), fired.tolist()
    )  # fmt: skip
    labels = []
    for i in range(len(peak_ids)):
        peaks = [
            (texts[t], v) for t, v in zip(peak_ids[i], values[i], strict=True) if v > 0 and t >= 0
        ]
        labels.append(
            make_label(
                [p for p, _ in peaks],
                [v for _, v in peaks],
                [texts[t] for t in lens_ids[i]],
                fired[i],
            )
        )
    return labels
