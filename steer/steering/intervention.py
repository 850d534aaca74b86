"""What a lever is: an intervention on one SAE latent, parsed and checked.

A lever edits the residual x (B, T, d) at the output of block L (hook point
`resid_post.L`, where the SAE reads), row by row:

    clamp  latent i to v:  x' = x + (v - z_i) · dir_i     z = TopK SAE code of x
    add    s units of i:   x' = x + s · dir_i
    ablate latent i:       clamp to v = 0
    set    the projection p = x·w / w·w onto a direction w to s:  x' = x + (s - p) · w
    cap    that projection at s:                                   x' = x + min(0, s - p) · w

dir_i = W_dec[i] / input_scale (`TopKSAE.decoder_directions`) is the raw residual written
by one unit of latent i. The clamp is the "split x = SAE(x) + error, edit the latent, keep
the error" of Templeton et al. (Golden Gate Claude) written so that only the edited
latents' decoder rows are read: SAE(x) - z_i·dir_i + v·dir_i + error = x + (v - z_i)·dir_i.

Strengths are in units of each latent's max activation on the catalog's corpus when those
maxima are known (so one slider scale means the same for every latent), raw SAE units
otherwise. plan.py turns a batch's levers into tensors; hook.py applies them.

set and cap are Neuronpedia's "orthogonal decomposition" and "projection cap": they read
the residual's linear projection onto the direction w (= dir_i x the latent's strength
scale, or a saved vector, which is already raw residual per unit of strength), not the
SAE code. A lever may also name a saved vector instead of a latent (`latent` is then the
vector's name), apply at its own positions (`where`) and only where a gate holds (`gate`,
evaluated on the unedited residual of the same forward pass). steer/steering/expr.py
writes all of this as one line (`2.5 #2374 + 0.4 #55:add @generated`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from sae import TopKSAE, load_sae
from steer.lm.models import LoadedModel, load_model, parse_hookpoint

Mode = Literal["clamp", "add", "ablate", "set", "cap"]
Positions = Literal["all", "prompt", "generated"]
MODES: tuple[str, ...] = ("clamp", "add", "ablate", "set", "cap")
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated")
VECTOR_MODES: tuple[str, ...] = ("add", "ablate", "set", "cap")  # clamp reads an SAE code
GATE_OPS: tuple[str, ...] = (">", ">=", "<", "<=")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A saved vector's name (a file stem beside the SAE; no '-', which separates terms)."""
FIRST_RE = re.compile(r"first:([1-9][0-9]*)")


def check_where(where: str | None) -> str | None:
    """A lever's own positions: None (the run's `positions` setting), all, prompt,
    generated, or first:N (the positions producing the first N generated tokens)."""
    if where is None or where in POSITIONS or FIRST_RE.fullmatch(str(where)):
        return where
    raise ValueError(f"unknown positions {where!r}: use all, prompt, generated or first:N")


def check_target(target) -> int | str:
    """A latent index (int >= 0) or a saved vector's name."""
    if isinstance(target, str) and NAME_RE.fullmatch(target):
        return target
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise ValueError(f"feature index must be an integer, got {target!r}")
    try:
        target = int(target)
    except ValueError:
        raise ValueError(f"feature index must be an integer, got {target!r}") from None
    if target < 0:
        raise ValueError(f"feature index must be >= 0, got {target}")
    return target


def _finite(value, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if value != value or abs(value) == float("inf"):
        raise ValueError(f"{what} must be finite, got {value}")
    return value


@dataclass
class Gate:
    """Apply a lever only at positions where `source` (a latent's activation, in strength
    units, or a vector's projection, in its units) compares to `threshold` by `op`."""

    source: int | str
    op: str = ">"
    threshold: float = 0.0
    direction: Tensor | None = field(default=None, compare=False, repr=False)
    """A vector source's (d,) direction once resolved (steer.steering.vectors)."""

    def __post_init__(self) -> None:
        self.source = check_target(self.source)
        if self.op not in GATE_OPS:
            raise ValueError(f"unknown gate comparison {self.op!r}: use {', '.join(GATE_OPS)}")
        self.threshold = _finite(self.threshold, "gate threshold")

    def to_dict(self) -> dict:
        return {"source": self.source, "op": self.op, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d) -> Gate:
        if not isinstance(d, dict) or set(d) - {"source", "op", "threshold"} or "source" not in d:
            raise ValueError(f"a gate is {{source, op, threshold}}, got {d!r}")
        return cls(**d)


@dataclass
class Intervention:
    latent: int | str
    """Index of the SAE latent (feature) to edit, or the name of a saved vector."""

    strength: float = 0.0
    """clamp: the value the latent is set to; add: how much of its direction is added.
    In multiples of the latent's max activation when max activations are known
    ("relative"), raw SAE units otherwise. Ignored by ablate."""

    mode: Mode = "clamp"
    """clamp (set the latent, keep the SAE error), add (add its decoder direction),
    ablate (clamp to 0), set (set the residual's projection onto the direction) or cap
    (cap that projection). A vector takes add, ablate (set to 0), set or cap."""

    enabled: bool = True
    """Disabled interventions are kept (for the UI) but do nothing."""

    where: str | None = None
    """Positions of this lever: None (the run's `positions` setting), all, prompt,
    generated or first:N."""

    gate: Gate | None = None
    """Apply only where the gate holds (conditional activation steering)."""

    direction: Tensor | None = field(default=None, compare=False, repr=False)
    """A vector lever's (d,) direction (raw residual per unit of strength) once resolved."""

    def __post_init__(self) -> None:
        self.latent = check_target(self.latent)
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}: use {', '.join(MODES)}")
        if self.is_vector and self.mode not in VECTOR_MODES:
            raise ValueError(
                f"vector {self.latent!r} cannot be clamped (clamp reads an SAE feature's code): "
                f"use {', '.join(VECTOR_MODES)}"
            )
        self.strength = _finite(self.strength, "strength")
        self.where = check_where(self.where)
        if isinstance(self.gate, dict):
            self.gate = Gate.from_dict(self.gate)
        if self.gate is not None and not isinstance(self.gate, Gate):
            raise ValueError(f"a gate is {{source, op, threshold}}, got {self.gate!r}")

    @property
    def is_vector(self) -> bool:
        return isinstance(self.latent, str)

    @property
    def is_plain(self) -> bool:
        """A latent clamped, added or ablated at the run's positions with no gate: the
        batched fast path of plan.py. Other levers go through steer.steering.terms."""
        return (
            not self.is_vector
            and self.mode in ("clamp", "add", "ablate")
            and self.where is None
            and self.gate is None
        )

    def to_dict(self) -> dict:
        out = {
            "latent": self.latent,
            "strength": self.strength,
            "mode": self.mode,
            "enabled": self.enabled,
        }
        if self.where is not None:
            out["where"] = self.where
        if self.gate is not None:
            out["gate"] = self.gate.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Intervention:
        if not isinstance(d, dict) or "latent" not in d:
            raise ValueError(f"an intervention needs at least a 'latent', got {d!r}")
        known = {f.name for f in fields(cls)} - {"direction"}
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
    """Check the latents among `latents`; vector names (str) are checked when loaded."""
    for latent in latents:
        if not isinstance(latent, str):
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
