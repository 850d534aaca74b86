"""A steering plan: a batch's levers turned into tensors on the SAE's device.

Per row r and edited latent j: the raw units of dir_j to add (add mode), and whether and
to what value latent j is clamped (clamp / ablate). Strengths are scaled into raw units
here (`strength_scales`), so applying a plan (hook.py) is tensor arithmetic only.

The clamp needs the TopK code z of the residual, whose threshold comes from the full
(N, d) x (d, n_latents) pre-activation product: ~8% of a SmolLM2-135M forward in fp32 and
~20% of one cached decoding step (memory-bound). Where the hardware has fast bf16 (CUDA,
CPUs with AVX512-BF16/AMX) the plan keeps a bf16 copy of the encoder for that threshold
only; the edited latents' own pre-activations stay exact in the SAE's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae import TopKSAE

from .intervention import Intervention, check_latents


def strength_scales(latents: list[int], max_acts: Tensor | None) -> Tensor:
    """Raw units per unit of strength for each latent: its max activation (relative
    strengths), or 1 when max activations are unknown. Latents that never fired on the
    corpus (max 0) use the median max of the live latents, so the scale stays sensible."""
    if max_acts is None:
        return torch.ones(len(latents))
    max_acts = torch.as_tensor(max_acts, dtype=torch.float32).cpu()
    live = max_acts[max_acts > 0]
    fallback = float(live.median()) if live.numel() else 1.0
    scales = max_acts[torch.as_tensor(latents, dtype=torch.long)] if latents else torch.zeros(0)
    return torch.where(scales > 0, scales, torch.full_like(scales, fallback))


def fast_bf16_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


@dataclass
class SteeringPlan:
    """What each batch row does, as tensors (R rows, m edited latents, mc of them clamped)."""

    rows: list[list[Intervention]]
    """The interventions of each row, as given (disabled ones included)."""
    latents: Tensor  # (m,) the edited latents, sorted
    dirs: Tensor  # (m, d) their raw-space directions
    add: Tensor  # (R, m) raw units of each direction to add
    has_add: Tensor  # (R,) rows that add anything
    clamp_latents: Tensor  # (mc,) latents that some row clamps
    clamp_dirs: Tensor  # (mc, d)
    clamp_val: Tensor  # (R, mc) target values, raw units
    clamp_mask: Tensor  # (R, mc) which latents each row clamps
    has_clamp: Tensor  # (R,) rows that clamp anything
    w_enc_c: Tensor  # (mc, d) encoder rows of the clamped latents
    b_enc_c: Tensor  # (mc,)
    lowp: tuple[Tensor, Tensor] | None
    """(W_enc, b_enc) in a lower precision for the TopK threshold, or None (exact encode)."""

    @property
    def is_noop(self) -> bool:
        return not bool(self.has_add.any() or self.has_clamp.any())

    @classmethod
    def build(
        cls,
        sae: TopKSAE,
        rows: list[list[Intervention]],
        max_acts: Tensor | None = None,
        encode_dtype: torch.dtype | str | None = "auto",
    ) -> SteeringPlan:
        """encode_dtype: dtype of the full pre-activation product that finds the TopK
        threshold: "auto" (bf16 where fast, else the SAE's dtype), None (exact:
        `sae.encode`), or a torch dtype."""
        # Plain levers only: the rest (vectors, set / cap, own positions, gates) is terms.py's.
        active = [[iv for iv in row if iv.enabled and iv.is_plain] for row in rows]
        latents = sorted({iv.latent for row in active for iv in row})
        check_latents(sae, latents)
        add, clamp_val, clamp_mask = _row_tensors(active, latents, max_acts)
        dev, dt = sae.device, sae.dtype
        index = torch.tensor(latents, dtype=torch.long, device=dev)
        dirs = (
            sae.decoder_directions(index).detach()
            if latents
            else torch.zeros(0, sae.d_in, device=dev)
        )
        # Clamp bookkeeping restricted to the columns that some row clamps.
        cols = clamp_mask.any(dim=0).nonzero().flatten()
        clamp_latents = index[cols.to(dev)]  # (mc,)
        clamp_mask_c = clamp_mask[:, cols].to(dev)  # (R, mc)
        has_clamp = clamp_mask_c.any(dim=1)  # (R,)
        with torch.no_grad():
            w_enc_c = sae.W_enc[clamp_latents].detach()  # (mc, d)
            b_enc_c = sae.b_enc[clamp_latents].detach()  # (mc,)
        lowp = None
        if bool(has_clamp.any()):
            if encode_dtype == "auto":
                encode_dtype = (
                    torch.bfloat16 if fast_bf16_available(dev) and dt == torch.float32 else dt
                )
            if encode_dtype is not None and encode_dtype != dt:
                lowp = (sae.W_enc.detach().to(encode_dtype), sae.b_enc.detach().to(encode_dtype))
        return cls(
            rows=[list(r) for r in rows],
            latents=index,
            dirs=dirs,
            add=add.to(dev, dt),
            has_add=add.ne(0).any(dim=1).to(dev),
            clamp_latents=clamp_latents,
            clamp_dirs=dirs[cols.to(dev)],
            clamp_val=clamp_val[:, cols].to(dev, dt),
            clamp_mask=clamp_mask_c,
            has_clamp=has_clamp,
            w_enc_c=w_enc_c,
            b_enc_c=b_enc_c,
            lowp=lowp,
        )


def _row_tensors(
    active: list[list[Intervention]], latents: list[int], max_acts: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """add (R, m) raw units per direction, clamp values (R, m) and clamp mask (R, m)."""
    column = {latent: j for j, latent in enumerate(latents)}
    n_rows, m = len(active), len(latents)
    scales = strength_scales(latents, max_acts)
    add = torch.zeros(n_rows, m)
    clamp_val = torch.zeros(n_rows, m)
    clamp_mask = torch.zeros(n_rows, m, dtype=torch.bool)
    for r, row in enumerate(active):
        for iv in row:
            j = column[iv.latent]
            if iv.mode == "add":
                add[r, j] += iv.strength * scales[j]
            else:  # clamp / ablate: the last one listed wins
                clamp_mask[r, j] = True
                clamp_val[r, j] = 0.0 if iv.mode == "ablate" else iv.strength * scales[j]
    return add, clamp_val, clamp_mask
