"""Interventions on SAE latents inside the language model's forward pass.

A `SteeringHook` sits on the output of block L (hook point `resid_post.L`, where the SAE
reads) and edits the residual x (B, T, d) of each batch row with that row's interventions:

    clamp  latent i to v:  x' = x + (v - z_i) · dir_i     z = TopK SAE code of x
    add    s units of i:   x' = x + s · dir_i
    ablate latent i:       clamp to v = 0

dir_i = W_dec[i] / input_scale (`TopKSAE.decoder_directions`) is the raw residual written
by one unit of latent i. The clamp is the "split x = SAE(x) + error, edit the latent, keep
the error" of Templeton et al. (Golden Gate Claude) written so that only the edited
latents' decoder rows are read: SAE(x) - z_i·dir_i + v·dir_i + error = x + (v - z_i)·dir_i.

Strengths are in units of each latent's max activation on the catalog's corpus when those
maxima are known (so one slider scale means the same for every latent), raw SAE units
otherwise.

Positions, for a prompt of P tokens (0-based absolute positions, KV cache included):
    all        every position
    prompt     the prompt tokens, 0 .. P-1
    generated  the positions that produce generated tokens: P-1 (its output is the first
               new token) onwards. Positions 0 .. P-2, their logits and their KV cache
               are untouched.
The hook counts positions itself (`offset` advances by T at every forward), so
incremental decoding with a KV cache sees absolute positions.

Cost: encoding needs the full pre-activations of all latents (the TopK threshold), an
(N, d) x (d, n_latents) product, ~8% of a SmolLM2-135M forward in fp32 and ~20% of one
cached decoding step (memory-bound). The hook therefore runs that product in bf16 where
the hardware has fast bf16 (CUDA, CPUs with AVX512-BF16/AMX) only to find the TopK
threshold, and computes the edited latents' own pre-activations exactly in the SAE's
dtype; it encodes only rows and positions that have a clamp or ablation, and only the
tokens where an edited latent's own pre-activation is positive (elsewhere z_i = 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel, block_output, load_model, parse_hookpoint

Mode = Literal["clamp", "add", "ablate"]
Positions = Literal["all", "prompt", "generated"]
MODES: tuple[str, ...] = ("clamp", "add", "ablate")
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")


@dataclass
class Intervention:
    latent: int
    """Index of the SAE latent (feature) to edit."""

    strength: float = 0.0
    """clamp: the value the latent is set to; add: how much of its direction is added.
    In multiples of the latent's max activation when max activations are known
    ("relative"), raw SAE units otherwise. Ignored by ablate."""

    mode: Mode = "clamp"
    """clamp (set the latent, keep the SAE error), add (add its decoder direction) or
    ablate (clamp to 0)."""

    enabled: bool = True
    """Disabled interventions are kept (for the UI) but do nothing."""

    def __post_init__(self) -> None:
        if isinstance(self.latent, bool) or not isinstance(self.latent, int):
            try:
                self.latent = int(self.latent)
            except (TypeError, ValueError):
                raise ValueError(f"feature index must be an integer, got {self.latent!r}") from None
        if self.latent < 0:
            raise ValueError(f"feature index must be >= 0, got {self.latent}")
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}: use {', '.join(MODES)}")
        try:
            self.strength = float(self.strength)
        except (TypeError, ValueError):
            raise ValueError(f"strength must be a number, got {self.strength!r}") from None
        if self.strength != self.strength or abs(self.strength) == float("inf"):
            raise ValueError(f"strength must be finite, got {self.strength}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Intervention:
        if not isinstance(d, dict) or "latent" not in d:
            raise ValueError(f"an intervention needs at least a 'latent', got {d!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown intervention keys {sorted(unknown)}: use {sorted(known)}")
        return cls(**d)

    def describe(self) -> str:
        """`1234=10 clamp`, `77 ablate`."""
        if self.mode == "ablate":
            return f"{self.latent} ablate"
        return f"{self.latent}={self.strength:g} {self.mode}"


def parse_feature(spec: str, mode: Mode = "clamp") -> Intervention:
    """`1234=10`, `77=-4:add`, `5:ablate` or `5` (ablate only) -> Intervention."""
    text = spec.strip()
    body, _, mode_part = text.partition(":")
    mode = mode_part.strip() or mode  # type: ignore[assignment]
    index, eq, value = body.partition("=")
    try:
        latent = int(index)
    except ValueError:
        raise ValueError(
            f"bad feature {spec!r}: use INDEX=STRENGTH, e.g. 1234=10 or 77=-4:add"
        ) from None
    if not eq and mode != "ablate":
        raise ValueError(f"feature {spec!r} has no strength: use INDEX=STRENGTH, e.g. {latent}=10")
    try:
        strength = float(value) if eq else 0.0
    except ValueError:
        raise ValueError(f"bad strength in feature {spec!r}: {value!r} is not a number") from None
    return Intervention(latent, strength, mode)


# ---------------------------------------------------------------------- checks and loading
def check_latents(sae: TopKSAE, latents) -> None:
    n = sae.n_latents
    for latent in latents:
        if not 0 <= int(latent) < n:
            raise ValueError(
                f"feature {int(latent)} is out of range: the SAE has {n} latents (0..{n - 1})"
            )


def sae_layer(lm: LoadedModel, sae: TopKSAE) -> int:
    """The block the SAE reads, after checking that the SAE fits the model."""
    if sae.d_in != lm.d_model:
        raise ValueError(
            f"the SAE does not fit {lm.name}: it reads d_in={sae.d_in} activations but the model "
            f"has d_model={lm.d_model} (was it trained on another model?)"
        )
    if not sae.cfg.hookpoint:
        raise ValueError("the SAE's cfg.json names no hookpoint (e.g. resid_post.8)")
    return lm.check_layer(parse_hookpoint(sae.cfg.hookpoint))


def open_sae(
    sae_dir: str | Path,
    model: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    latents: list[int] = (),
) -> tuple[LoadedModel, TopKSAE]:
    """Load an SAE checkpoint and its model (cfg.model_name unless `model` is given).

    `latents` are checked against the SAE before the (slower) model load."""
    sae = TopKSAE.load(sae_dir, device=device)
    check_latents(sae, latents)
    name = model or sae.cfg.model_name
    if not name:
        raise ValueError(
            f"the SAE in {sae_dir} does not name its model (cfg.model_name): pass --model"
        )
    lm = load_model(name, device=device, dtype=dtype)
    sae_layer(lm, sae)
    return lm, sae


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


# ---------------------------------------------------------------------- the hook
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

        active = [[iv for iv in row if iv.enabled] for row in self.rows]
        latents = sorted({iv.latent for row in active for iv in row})
        check_latents(sae, latents)
        column = {latent: j for j, latent in enumerate(latents)}
        n_rows, m = len(active), len(latents)
        scales = strength_scales(latents, max_acts)
        add = torch.zeros(n_rows, m)  # (R, m) raw units of each direction to add
        clamp_val = torch.zeros(n_rows, m)  # (R, m) target values
        clamp_mask = torch.zeros(n_rows, m, dtype=torch.bool)  # (R, m) which latents are clamped
        for r, row in enumerate(active):
            for iv in row:
                j = column[iv.latent]
                if iv.mode == "add":
                    add[r, j] += iv.strength * scales[j]
                else:  # clamp / ablate: the last one listed wins
                    clamp_mask[r, j] = True
                    clamp_val[r, j] = 0.0 if iv.mode == "ablate" else iv.strength * scales[j]

        dev, dt = sae.device, sae.dtype
        self.latents = torch.tensor(latents, dtype=torch.long, device=dev)
        self.dirs = (
            sae.decoder_directions(self.latents).detach()
            if m
            else torch.zeros(0, sae.d_in, device=dev)
        )
        self.add = add.to(dev, dt)
        self.has_add = add.ne(0).any(dim=1).to(dev)  # (R,)
        # Clamp bookkeeping restricted to the columns that some row clamps.
        cols = clamp_mask.any(dim=0).nonzero().flatten()
        self.clamp_latents = self.latents[cols.to(dev)]  # (mc,)
        self.clamp_dirs = self.dirs[cols.to(dev)]  # (mc, d)
        self.clamp_val = clamp_val[:, cols].to(dev, dt)  # (R, mc)
        self.clamp_mask = clamp_mask[:, cols].to(dev)  # (R, mc)
        self.has_clamp = self.clamp_mask.any(dim=1)  # (R,)
        with torch.no_grad():
            self._w_enc_c = sae.W_enc[self.clamp_latents].detach()  # (mc, d)
            self._b_enc_c = sae.b_enc[self.clamp_latents].detach()  # (mc,)
        self._lowp: tuple[Tensor, Tensor] | None = None
        if bool(self.has_clamp.any()):
            if encode_dtype == "auto":
                encode_dtype = (
                    torch.bfloat16 if fast_bf16_available(dev) and dt == torch.float32 else dt
                )
            if encode_dtype is not None and encode_dtype != dt:
                self._lowp = (
                    sae.W_enc.detach().to(encode_dtype),
                    sae.b_enc.detach().to(encode_dtype),
                )

    @property
    def is_noop(self) -> bool:
        return not bool(self.has_add.any() or self.has_clamp.any())

    def row_key(self, r: int) -> tuple:
        """What row r does to the prompt positions before the last one: rows with equal
        keys can share those positions' forward pass (and KV cache)."""
        if self.positions == "generated":
            return ()
        return tuple(
            (iv.latent, iv.mode, iv.strength if iv.mode != "ablate" else 0.0)
            for iv in self.rows[r]
            if iv.enabled
        )

    # ------------------------------------------------------------------ the edit
    def position_mask(self, offset: int, T: int) -> Tensor:
        pos = torch.arange(offset, offset + T, device=self.sae.device)
        if self.positions == "prompt":
            return pos < self.prompt_len
        if self.positions == "generated":
            return pos >= self.prompt_len - 1
        return torch.ones(T, dtype=torch.bool, device=pos.device)

    def clamped_acts(self, x: Tensor) -> Tensor:
        """TopK activations z (N, mc) of the clamped latents for raw residuals x (N, d).

        z_i = pre_i when latent i is among the k largest pre-activations, else 0. The
        edited latents' own pre-activations are cheap (mc rows of W_enc); the full
        (N, n_latents) product that decides TopK membership is run only for the tokens
        where one of them is positive (elsewhere z_i = 0 whatever the others do).
        """
        sae = self.sae
        x_n = sae.normalize(x) - sae.b_pre  # (N, d)
        own = F.relu(F.linear(x_n, self._w_enc_c, self._b_enc_c))  # (N, mc) in the SAE dtype
        live = own.gt(0).any(dim=-1).nonzero().flatten()  # tokens that may have z_i > 0
        z = torch.zeros_like(own)
        if live.numel() == 0:
            return z
        if self._lowp is None:  # exact: the SAE's own encode
            top_acts, top_idx = sae.encode(x[live])  # (L, k)
            hit = top_idx.unsqueeze(-1) == self.clamp_latents  # (L, k, mc)
            z[live] = (top_acts.unsqueeze(-1) * hit).sum(dim=1).to(z.dtype)
            return z
        w, b = self._lowp
        pre = F.linear(x_n[live].to(w.dtype), w, b).relu_()  # (L, n) low precision, threshold only
        kth = (
            pre.topk(sae.k, dim=-1, sorted=False).values.min(dim=-1, keepdim=True).values
        )  # (L, 1)
        member = pre[:, self.clamp_latents] >= kth  # (L, mc) in the TopK?
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
        pmask = self.position_mask(offset, T)  # (T,)
        if not bool(pmask.any()):
            return x
        delta = None
        sel = self.has_add[rows]  # (B,)
        if bool(sel.any()):
            a = self.add[rows] @ self.dirs  # (B, d)
            delta = a[:, None, :] * pmask[None, :, None].to(a.dtype)  # (B, T, d)
        sel = self.has_clamp[rows]
        if bool(sel.any()):
            bidx = sel.nonzero().flatten()  # batch rows that clamp
            tidx = pmask.nonzero().flatten()  # positions steered
            xs = x.to(self.sae.device)[bidx][:, tidx]  # (Bc, Tp, d)
            z = self.clamped_acts(xs.reshape(-1, xs.shape[-1])).view(
                len(bidx), len(tidx), -1
            )  # (Bc, Tp, mc)
            r = rows[bidx]
            diff = (self.clamp_val[r][:, None, :] - z) * self.clamp_mask[r][
                :, None, :
            ]  # (Bc, Tp, mc)
            dc = diff @ self.clamp_dirs  # (Bc, Tp, d)
            if delta is None:
                delta = torch.zeros(B, T, x.shape[-1], device=dc.device, dtype=dc.dtype)
            delta[bidx[:, None], tidx[None, :]] += dc
        if delta is None:
            return x
        return x + delta.to(device=x.device, dtype=x.dtype)

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
