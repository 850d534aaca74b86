"""The hook that applies a steering plan inside the model's forward pass.

A `SteeringHook` sits on the output of block L and edits the residual x (B, T, d) of each
batch row with that row's part of the plan (see intervention.py for the edit, plan.py for
the tensors).

Positions, for a prompt of P tokens (0-based absolute positions, KV cache included):
    all        every position
    prompt     the prompt tokens, 0 .. P-1
    generated  the positions that produce generated tokens: P-1 (its output is the first
               new token) onwards. Positions 0 .. P-2, their logits and their KV cache
               are untouched.
The hook counts positions itself (`offset` advances by T at every forward), so
incremental decoding with a KV cache sees absolute positions.

Cost: the hook encodes only rows and positions that have a clamp or ablation, and only
the tokens where an edited latent's own pre-activation is positive (elsewhere z_i = 0);
the full pre-activation product that finds the TopK threshold runs in the plan's
precision (bf16 where fast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel, block_output

from .intervention import POSITIONS, Intervention, Positions, sae_layer
from .plan import SteeringPlan
from .terms import GeneralTerms, where_mask


class SteeringHook:
    """Context manager: while entered, block L's output is edited row by row.

    rows[r] lists the interventions of batch row r (`[]` = baseline, untouched). A single
    row applies to every row of the batch. Set `rows_index` to say which rows of `rows`
    the next forward's batch holds (generation drops finished rows), and `offset` to the
    absolute position of its first token (it then advances by itself).
    """

    def __init__(
        self,
        lm: LoadedModel,
        sae: TopKSAE,
        rows: list[list[Intervention]] | list[Intervention],
        *,
        max_acts: Tensor | None = None,
        positions: Positions = "all",
        prompt_len: int = 0,
        encode_dtype: torch.dtype | str | None = "auto",
    ):
        """
        encode_dtype: dtype of the full pre-activation product that finds the TopK
            threshold: "auto" (bf16 where fast, else the SAE's dtype), None (exact:
            `sae.encode`), or a torch dtype.
        """
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions {positions!r}: use {', '.join(POSITIONS)}")
        if rows and isinstance(rows[0], Intervention):
            rows = [rows]  # type: ignore[list-item]
        self.rows: list[list[Intervention]] = [list(r) for r in rows]  # type: ignore[arg-type]
        if not self.rows:
            raise ValueError("no rows to steer")
        self.lm, self.sae = lm, sae
        self.layer = sae_layer(lm, sae)
        self.positions = positions
        self.prompt_len = prompt_len
        self.offset = 0
        self.rows_index: Tensor | None = None
        self._handle = None
        self.plan = SteeringPlan.build(sae, self.rows, max_acts, encode_dtype)
        # Vectors, set / cap, levers with their own positions or a gate: one at a time.
        self.terms = GeneralTerms(
            sae, [[iv for iv in r if iv.enabled and not iv.is_plain] for r in self.rows], max_acts
        )

    @property
    def is_noop(self) -> bool:
        return self.plan.is_noop and not self.terms

    def row_key(self, r: int) -> tuple:
        """What row r does to the prompt positions before the last one: rows with equal
        keys can share those positions' forward pass (and KV cache)."""
        plain = ()
        if self.positions != "generated":
            plain = tuple(
                (iv.latent, iv.mode, iv.strength if iv.mode != "ablate" else 0.0)
                for iv in self.rows[r]
                if iv.enabled and iv.is_plain
            )
        return plain + (self.terms.touches_prompt(r, self.positions) if self.terms else ())

    # ------------------------------------------------------------------ the edit
    def position_mask(self, offset: int, T: int) -> Tensor:
        return where_mask(self.positions, offset, T, self.prompt_len, self.sae.device)

    def clamped_acts(self, x: Tensor) -> Tensor:
        """TopK activations z (N, mc) of the clamped latents for raw residuals x (N, d).

        z_i = pre_i when latent i is among the k largest pre-activations, else 0. The
        edited latents' own pre-activations are cheap (mc rows of W_enc); the full
        (N, n_latents) product that decides TopK membership is run only for the tokens
        where one of them is positive (elsewhere z_i = 0 whatever the others do).
        """
        sae = self.sae
        x_n = sae.normalize(x) - sae.b_pre  # (N, d)
        own = F.relu(
            F.linear(x_n, self.plan.w_enc_c, self.plan.b_enc_c)
        )  # (N, mc) in the SAE dtype
        live = own.gt(0).any(dim=-1).nonzero().flatten()  # tokens that may have z_i > 0
        z = torch.zeros_like(own)
        if live.numel() == 0:
            return z
        if sae.is_elementwise:  # relu, jumprelu, gated: each latent on its own encoder row
            z[live] = sae.activations(x[live], self.plan.clamp_latents).to(z.dtype)
            return z
        if self.plan.lowp is None:  # exact: the SAE's own encode
            top_acts, top_idx = sae.encode(x[live])  # (L, k)
            hit = top_idx.unsqueeze(-1) == self.plan.clamp_latents  # (L, k, mc)
            z[live] = (top_acts.unsqueeze(-1) * hit).sum(dim=1).to(z.dtype)
            return z
        w, b = self.plan.lowp
        pre = F.linear(x_n[live].to(w.dtype), w, b).relu_()  # (L, n) low precision, threshold only
        kth = (
            pre.topk(sae.k, dim=-1, sorted=False).values.min(dim=-1, keepdim=True).values
        )  # (L, 1)
        member = pre[:, self.plan.clamp_latents] >= kth  # (L, mc) in the TopK?
        z[live] = own[live] * member
        return z

    def edit(self, x: Tensor, offset: int | None = None) -> Tensor:
        """Steered copy of x (B, T, d) whose first token is at absolute `offset`."""
        B, T, _ = x.shape
        offset = self.offset if offset is None else offset
        if self.rows_index is not None:
            rows = self.rows_index.to(self.sae.device)
        elif len(self.rows) == 1:
            rows = torch.zeros(B, dtype=torch.long, device=self.sae.device)
        else:
            rows = torch.arange(B, device=self.sae.device)
        if rows.numel() != B or (len(self.rows) > 1 and B > len(self.rows)):
            raise ValueError(f"the batch has {B} rows but the hook was given {len(self.rows)}")
        delta = self._plain_delta(x, rows, offset)
        if self.terms:
            more = self.terms.delta(x, rows, offset, self.prompt_len, self.positions)
            if more is not None:
                delta = more if delta is None else delta.to(more.dtype) + more
        if delta is None:
            return x
        return x + delta.to(device=x.device, dtype=x.dtype)

    def _plain_delta(self, x: Tensor, rows: Tensor, offset: int) -> Tensor | None:
        """The plan's batched edit (B, T, d) of x (B, T, d), or None when it edits nothing."""
        B, T, _ = x.shape
        pmask = self.position_mask(offset, T)  # (T,)
        if not bool(pmask.any()):
            return None
        delta = None
        sel = self.plan.has_add[rows]  # (B,)
        if bool(sel.any()):
            a = self.plan.add[rows] @ self.plan.dirs  # (B, d)
            delta = a[:, None, :] * pmask[None, :, None].to(a.dtype)  # (B, T, d)
        sel = self.plan.has_clamp[rows]
        if bool(sel.any()):
            bidx = sel.nonzero().flatten()  # batch rows that clamp
            tidx = pmask.nonzero().flatten()  # positions steered
            xs = x.to(self.sae.device)[bidx][:, tidx]  # (Bc, Tp, d)
            z = self.clamped_acts(xs.reshape(-1, xs.shape[-1])).view(
                len(bidx), len(tidx), -1
            )  # (Bc, Tp, mc)
            r = rows[bidx]
            diff = (self.plan.clamp_val[r][:, None, :] - z) * self.plan.clamp_mask[r][
                :, None, :
            ]  # (Bc, Tp, mc)
            dc = diff @ self.plan.clamp_dirs  # (Bc, Tp, d)
            if delta is None:
                delta = torch.zeros(B, T, x.shape[-1], device=dc.device, dtype=dc.dtype)
            delta[bidx[:, None], tidx[None, :]] += dc
        return delta

    # ------------------------------------------------------------------ hook plumbing
    def _hook(self, _module, _args, output):
        x = block_output(output)
        new = self.edit(x, self.offset)
        self.offset += x.shape[1]
        if new is x:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    def reset(self, offset: int = 0, rows_index: Tensor | list[int] | None = None) -> SteeringHook:
        self.offset = offset
        self.rows_index = (
            None if rows_index is None else torch.as_tensor(rows_index, dtype=torch.long)
        )
        return self

    def __enter__(self) -> SteeringHook:
        if self._handle is None:
            self._handle = self.lm.block(self.layer).register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
