"""One pass of the model and SAE over held-out text, and N2G patterns fitted and scored on it.

    codes = sae_codes(lm, sae, "wiki-07.jsonl.xz", n_tokens=100_000)   # the only model pass
    patterns, scores = fit_and_score(codes)    # every latent; a few seconds for 9216
    scores.mean()                              # mean precision, recall

The TopK codes of every token are kept (k activations and indices per token: 100k tokens
x k=32 is ~13 MB), so fitting and scoring read them from memory. Contexts alternate
between the fit split and the score split, so both cover the same documents' styles
but never share a context.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sae import TopKSAE, concat_codes
from steer.lm.data import contexts_from
from steer.lm.models import LoadedModel
from steer.steering import sae_layer

from .n2g import (
    FIRE_FRACTION,
    Examples,
    Patterns,
    Scores,
    firing_events,
    fit_patterns,
    score_patterns,
)


@dataclass
class HeldoutCodes:
    """Token contexts and the SAE's TopK code of every token."""

    tokens: Tensor
    """(B, T) int64."""
    valid: Tensor
    """(B, T) bool: positions that count (the first `skip_first` of each context do not:
    their residual is an attention sink)."""
    top_acts: Tensor
    """(B, T, k) float16."""
    top_idx: Tensor
    """(B, T, k) int32."""
    n_latents: int
    vocab: int

    def rows(self, select: Tensor) -> HeldoutCodes:
        """The contexts `select` (a bool mask or indices over B)."""
        return HeldoutCodes(
            self.tokens[select],
            self.valid[select],
            self.top_acts[select],
            self.top_idx[select],
            self.n_latents,
            self.vocab,
        )

    def split(self) -> tuple[HeldoutCodes, HeldoutCodes]:
        """(fit, score): even and odd contexts."""
        even = torch.arange(self.tokens.shape[0]) % 2 == 0
        return self.rows(even), self.rows(~even)

    def max_acts(self) -> Tensor:
        """(n_latents,) each latent's max activation over the valid tokens."""
        acts = self.top_acts.float() * self.valid[..., None]
        out = torch.zeros(self.n_latents)
        return out.scatter_reduce(0, self.top_idx.long().flatten(), acts.flatten(), "amax")

    def events(self, thresholds: Tensor) -> tuple[Tensor, Tensor]:
        """(latent, flat position) of every token where a latent reaches its threshold."""
        return firing_events(self.top_acts, self.top_idx, thresholds, self.valid)


def _vocab(lm: LoadedModel) -> int:
    emb = lm.model.get_input_embeddings()
    return max(int(emb.num_embeddings), len(lm.tokenizer))


def sae_codes(lm: LoadedModel, sae: TopKSAE, source, n_tokens: int = 100_000, **options):
    """TopK codes of `n_tokens` tokens of `source` (a corpus path for steer.lm.data, a
    (B, T) tensor of token ids, an iterable of token contexts (T,) or of texts), in
    contexts of ctx_len tokens. The forward runs in bf16 autocast on an fp32 model, as
    `steer index` does. Options: see `sae_codes_many`."""
    return sae_codes_many(lm, [sae], source, n_tokens, **options)[0]


@torch.inference_mode()
def sae_codes_many(
    lm: LoadedModel,
    saes: list[TopKSAE],
    source,
    n_tokens: int = 100_000,
    *,
    ctx_len: int = 128,
    batch_size: int = 16,
    skip_first: int = 1,
    seed: int = 0,
    text_field: str = "text",
    autocast: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[HeldoutCodes]:
    """The codes of several SAEs reading the same hook point, from one model pass (the
    model forward costs far more than the encodes: a family of widths shares it)."""
    if n_tokens < 1:
        raise ValueError(f"the number of tokens must be positive, got {n_tokens}")
    layers = {sae_layer(lm, sae) for sae in saes}
    if len(layers) != 1:
        raise ValueError("the SAEs read different hook points: give them one at a time")
    (layer,) = layers
    dev = lm.device
    use_amp = autocast and lm.dtype == torch.float32 and dev.type in ("cpu", "cuda")
    amp = (
        (lambda: torch.autocast(dev.type, dtype=torch.bfloat16))
        if use_amp
        else contextlib.nullcontext
    )
    contexts = contexts_from(source, lm.tokenizer, ctx_len, seed, text_field)
    ids_parts: list[Tensor] = []
    codes_parts: list[list[tuple[Tensor, Tensor]]] = [[] for _ in saes]
    done = 0
    while done < n_tokens:
        batch = list(itertools.islice(contexts, min(batch_size, -(-(n_tokens - done) // ctx_len))))
        if not batch:
            break
        ids = torch.stack(batch).long()  # (B, T)
        B, T = ids.shape
        with amp():
            resid = lm.residual(ids.to(dev), layer).reshape(B * T, -1)  # (B*T, d)
            for parts, sae in zip(codes_parts, saes, strict=True):
                acts, idx = sae.encode(resid.to(sae.device))  # (B*T, k)
                parts.append((acts.view(B, T, -1).half().cpu(), idx.view(B, T, -1).int().cpu()))
        ids_parts.append(ids)
        done += B * T
        if progress is not None:
            progress(min(done, n_tokens), n_tokens)
    if not ids_parts:
        raise ValueError("the held-out text gave no tokens")
    tokens = torch.cat(ids_parts)
    if tokens.shape[1] <= skip_first:
        raise ValueError(f"contexts of {tokens.shape[1]} tokens are too short")
    valid = torch.ones_like(tokens, dtype=torch.bool)
    valid[:, :skip_first] = False
    out = []
    for parts, sae in zip(codes_parts, saes, strict=True):
        # widths differ from batch to batch for non-TopK SAEs
        acts, idx = concat_codes([a for a, _ in parts], [i for _, i in parts])
        out.append(HeldoutCodes(tokens, valid, acts, idx, sae.n_latents, _vocab(lm)))
    return out


def fit_and_score(
    codes: HeldoutCodes,
    max_acts: Tensor | None = None,
    *,
    fraction: float = FIRE_FRACTION,
    examples: Examples | None = None,
    **fit_options,
) -> tuple[Patterns, Scores]:
    """Fit every latent's patterns on half of the contexts and score them on the other.

    A latent fires where its activation reaches `fraction` of max_acts (n,) (default: its
    max over these codes; give the catalog's, measured on more text, when there is one).
    examples: top-context windows to fit from as well (see n2g.Examples).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"the firing fraction must be in (0, 1], got {fraction}")
    if codes.tokens.shape[0] < 2:
        raise ValueError("N2G needs at least two held-out contexts (one to fit, one to score)")
    if max_acts is None:
        max_acts = codes.max_acts()
    thresholds = fraction * max_acts.float()
    fit, held = codes.split()
    patterns = fit_patterns(
        fit.tokens,
        fit.valid,
        fit.events(thresholds),
        codes.n_latents,
        codes.vocab,
        examples=examples,
        **fit_options,
    )
    scores = score_patterns(patterns, held.tokens, held.valid, held.events(thresholds), codes.vocab)
    return patterns, scores
