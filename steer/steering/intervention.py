"""What a lever is: an intervention on one SAE latent, parsed and checked.

A lever edits the residual x (B, T, d) at the output of block L (hook point
`resid_post.L`, where the SAE reads), row by row:

    clamp  latent i to v:  x' = x + (v - z_i) · dir_i     z = TopK SAE code of x
    add    s units of i:   x' = x + s · dir_i
    ablate latent i:       clamp to v = 0

dir_i = W_dec[i] / input_scale (`TopKSAE.decoder_directions`) is the raw residual written
by one unit of latent i. The clamp is the "split x = SAE(x) + error, edit the latent, keep
the error" of Templeton et al. (Golden Gate Claude) written so that only the edited
latents' decoder rows are read: SAE(x) - z_i·dir_i + v·dir_i + error = x + (v - z_i)·dir_i.

Strengths are in units of each latent's max activation on the catalog's corpus when those
maxima are known (so one slider scale means the same for every latent), raw SAE units
otherwise. plan.py turns a batch's levers into tensors; hook.py applies them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from sae import TopKSAE, load_sae
from steer.lm.models import LoadedModel, load_model, parse_hookpoint

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
def check_latent(latent: int, n_latents: int) -> int:
    """The latent as an int; ValueError (one line) when an SAE of n_latents has no such latent."""
    latent = int(latent)
    if not 0 <= latent < n_latents:
        raise ValueError(
            f"feature {latent} is out of range: the SAE has {n_latents} latents "
            f"(0..{n_latents - 1})"
        )
    return latent


def check_latents(sae: TopKSAE, latents) -> None:
    for latent in latents:
        check_latent(latent, sae.n_latents)


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
    sae = load_sae(sae_dir, device=device)  # native, sparsify or SAELens; any arch
    check_latents(sae, latents)
    name = model or sae.cfg.model_name
    if not name:
        raise ValueError(
            f"the SAE in {sae_dir} does not name its model (cfg.model_name): pass --model"
        )
    lm = load_model(name, device=device, dtype=dtype)
    sae_layer(lm, sae)
    return lm, sae
