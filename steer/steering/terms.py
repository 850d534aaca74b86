"""Levers off the batched fast path: per-lever positions, gates, vectors, set and cap.

plan.py batches the common levers (a latent clamped, added or ablated at the run's
positions) into a few matrix products. Everything else an expression can say is applied
here, one lever at a time (there are few): for batch row b and lever t,

    mask   = where_t(position) AND gate_t(x)           (T,) per position
    add    x' = x + s · w                               w: raw residual per unit strength
    clamp  x' = x + (s·scale - z_i) · dir_i             z_i: the SAE code (exact encode)
    ablate clamp to 0 (a latent) / set to 0 (a vector)
    set    x' = x + (s - p) · w                         p = x·w / w·w, the projection
    cap    x' = x + min(0, s - p) · w

For a latent, dir_i = W_dec[i] / input_scale, scale = its max activation (strength_scales)
and w = scale · dir_i; a vector's w is its saved direction. Gates and edits read the
unedited residual x of the same forward pass (conditional activation steering, Lee et
al. 2024, arXiv 2409.05907); a gate on a latent compares its activation / scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sae import TopKSAE

from .intervention import FIRST_RE, Gate, Intervention, check_latents
from .plan import strength_scales


def where_mask(where: str, offset: int, T: int, prompt_len: int, device) -> Tensor:
    """(T,) bool: which absolute positions offset .. offset+T-1 a lever at `where` edits.

    generated = the positions producing new tokens (P-1 onwards); first:N = the first N
    of those."""
    pos = torch.arange(offset, offset + T, device=device)
    if where == "prompt":
        return pos < prompt_len
    if where == "generated":
        return pos >= prompt_len - 1
    first = FIRST_RE.fullmatch(where)
    if first:
        start = prompt_len - 1
        return (pos >= start) & (pos < start + int(first.group(1)))
    return torch.ones(T, dtype=torch.bool, device=device)


@dataclass
class _Lever:
    iv: Intervention
    w: Tensor  # (d,) raw residual per unit of strength
    dir: Tensor | None  # (d,) the latent's decoder direction (clamp / ablate of a latent)
    scale: float  # raw units per unit of strength (latents; 1 for vectors)
    gate_w: Tensor | None  # (d,) a vector gate's direction
    gate_scale: float  # a latent gate's units


class GeneralTerms:
    """The non-plain levers of each row, ready to apply."""

    def __init__(self, sae: TopKSAE, rows: list[list[Intervention]], max_acts: Tensor | None):
        self.sae = sae
        self.rows = [[self._lever(iv, max_acts) for iv in row] for row in rows]

    def __bool__(self) -> bool:
        return any(self.rows)

    def _lever(self, iv: Intervention, max_acts: Tensor | None) -> _Lever:
        sae = self.sae
        check_latents(sae, [iv.latent] + ([iv.gate.source] if iv.gate else []))
        if iv.is_vector:
            w, direction, scale = _vector(iv.latent, iv.direction, sae), None, 1.0
        else:
            scale = float(strength_scales([iv.latent], max_acts)[0])
            direction = sae.decoder_directions([iv.latent])[0].detach()  # (d,)
            w = direction * scale
        gate_w, gate_scale = None, 1.0
        if iv.gate is not None and isinstance(iv.gate.source, str):
            gate_w = _vector(iv.gate.source, iv.gate.direction, sae)
        elif iv.gate is not None:
            gate_scale = float(strength_scales([iv.gate.source], max_acts)[0])
        return _Lever(iv, w, direction, scale, gate_w, gate_scale)

    def touches_prompt(self, r: int, default_where: str) -> tuple:
        """What row r's levers do to positions before P-1 (a key for sharing the prefill)."""
        return tuple(
            repr(lv.iv)
            for lv in self.rows[r]
            if (lv.iv.where or default_where) in ("all", "prompt")
        )

    def delta(
        self, x: Tensor, rows: Tensor, offset: int, prompt_len: int, default_where: str
    ) -> Tensor | None:
        """The summed edit (B, T, d) of batch x (B, T, d) whose row b is plan row rows[b]."""
        B, T, _ = x.shape
        sae, out = self.sae, None
        xs = x.to(sae.device, sae.dtype)  # (B, T, d)
        for b, r in enumerate(rows.tolist()):
            for lv in self.rows[r]:
                mask = where_mask(lv.iv.where or default_where, offset, T, prompt_len, sae.device)
                if not bool(mask.any()):
                    continue
                if lv.iv.gate is not None:
                    mask = mask & self._gate(lv, xs[b])
                if not bool(mask.any()):
                    continue
                coef = self._coefficient(lv, xs[b])  # (T,) units of w (or of dir for clamps)
                vec = lv.dir if _reads_code(lv.iv) else lv.w
                edit = (coef * mask)[:, None] * vec  # (T, d)
                if out is None:
                    out = torch.zeros_like(xs)
                out[b] += edit
        return out

    def _gate(self, lv: _Lever, x: Tensor) -> Tensor:
        """(T,) bool: where lever lv's gate holds on x (T, d)."""
        gate: Gate = lv.iv.gate
        if lv.gate_w is not None:
            value = x @ lv.gate_w / lv.gate_w.dot(lv.gate_w)  # (T,) projection
        else:
            value = self.sae.activations(x, [gate.source])[:, 0] / lv.gate_scale  # (T,)
        threshold = torch.tensor(gate.threshold, dtype=value.dtype, device=value.device)
        return {
            ">": value > threshold,
            ">=": value >= threshold,
            "<": value < threshold,
            "<=": value <= threshold,
        }[gate.op]

    def _coefficient(self, lv: _Lever, x: Tensor) -> Tensor:
        """(T,) how much of w (dir_i for a latent's clamp / ablate) to add at each position."""
        iv, s = lv.iv, lv.iv.strength
        if iv.mode == "add":
            return torch.full(x.shape[:1], s, dtype=x.dtype, device=x.device)
        if _reads_code(iv):  # a latent's clamp / ablate: (target - z_i) in raw units
            z = self.sae.activations(x, [iv.latent])[:, 0]  # (T,)
            target = 0.0 if iv.mode == "ablate" else s * lv.scale
            return target - z
        p = x @ lv.w / lv.w.dot(lv.w)  # (T,) projection in units of w
        target = 0.0 if iv.mode == "ablate" else s
        diff = target - p
        return diff.clamp(max=0.0) if iv.mode == "cap" else diff


def _reads_code(iv: Intervention) -> bool:
    return not iv.is_vector and iv.mode in ("clamp", "ablate")


def _vector(name: str, direction: Tensor | None, sae: TopKSAE) -> Tensor:
    if direction is None:
        raise ValueError(
            f"vector {name!r} is not loaded: resolve the recipe first "
            "(steer.steering.expr.resolve_recipe)"
        )
    direction = torch.as_tensor(direction).to(sae.device, sae.dtype).flatten()
    if direction.shape != (sae.d_in,) or not bool(direction.ne(0).any()):
        raise ValueError(f"vector {name!r} is not a non-zero ({sae.d_in},) direction")
    return direction
