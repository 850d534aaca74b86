"""Contrastive steering vectors: a direction built from two sets of prompts, saved beside an SAE.

A vector is the difference of mean residuals at the SAE's hook point (block L's output)
between prompts that carry a concept and prompts that do not ("representation
engineering"; CAA, Rimsky et al. 2024). Each prompt is first averaged over its tokens
(the first token skipped: its residual is an attention sink with a huge norm), then the
prompts are averaged, so every prompt weighs the same whatever its length:

    mu+ = mean_p mean_t x_t(p)   over positive prompts p      (d,)
    mu- = the same over negative prompts
    v   = mu+ - mu-,   u = v / |v|,   scale = |v|

`tokens="last"` uses each prompt's last token instead (CAA reads the answer token of its
A/B prompts). The mean is the default because steering adds the vector at every position
of free text, where a concept is spread over the sentence; a prompt's last token is
mostly punctuation.

Units, chosen so strengths read like a feature's: the vector's direction per unit of
strength is w = v = scale·u, so `add s` adds s·(mu+ - mu-): strength 1 moves the negative
prompts' mean exactly onto the positive prompts' (the typical projection of a positive
prompt, measured from the negative mean; CAA's multiplier 1). Projections (the `set` and
`cap` modes and gates of steer/steering/expr.py) read p(x) = x·w / w·w in the same units;
the file records p at the negative and positive means (they differ by exactly 1), so a
threshold or a target can be set between them. On SmolLM2-135M's shipped SAE a concept
vector's strength 1 adds a residual of norm 23-25 where a typical feature at strength 1
(its max activation) adds 33 (median over live latents), and "dog" steers coherently
around strength 1.5-2.5, where features need 2-4.

Files, beside the SAE (one vector is usable with any SAE at the same hook point):
    <SAE_DIR>/vectors/<name>.safetensors   tensor "direction" (d,) float32: the raw
                                           residual per unit of strength (w above)
    <SAE_DIR>/vectors/<name>.json          how it was made: hookpoint, model, tokens, the
                                           prompts, the projections of both means, created
`load_vector(name, sae_dir)` (the direction) is what expressions read; `read_vector` gives
the whole record.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sae import TopKSAE, atomic_write
from steer.lm.models import LoadedModel

from .intervention import sae_layer

VECTORS_DIR = "vectors"
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""Vector names are identifiers, so an expression can name them (`v:formal`; no '-',
which separates terms)."""
TOKENS = ("mean", "last")


@dataclass
class SteeringVector:
    name: str
    direction: Tensor  # (d,) raw residual per unit of strength
    hookpoint: str = ""
    model: str = ""
    tokens: str = "mean"
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    negative_projection: float | None = None
    """p(mu-): the projection of the negative prompts' mean (that of mu+ is 1 more)."""
    created: str = ""

    def __post_init__(self) -> None:
        check_vector_name(self.name)
        self.direction = torch.as_tensor(self.direction, dtype=torch.float32).flatten()
        if not self.scale > 0:
            raise ValueError(f"vector {self.name!r} is zero")

    @property
    def d(self) -> int:
        return self.direction.numel()

    @property
    def scale(self) -> float:
        """Raw residual norm of strength 1 (|mu+ - mu-| for a contrastive vector)."""
        return float(self.direction.norm())

    def projection(self, x: Tensor) -> Tensor:
        """p(x) = x·w / w·w for residuals x (..., d), in strength units."""
        w = self.direction.to(x.device, x.dtype)
        return x @ w / (w @ w)

    def meta(self) -> dict:
        return {
            "name": self.name,
            "scale": self.scale,
            "d": self.d,
            "hookpoint": self.hookpoint,
            "model": self.model,
            "tokens": self.tokens,
            "negative_projection": self.negative_projection,
            "positive": list(self.positive),
            "negative": list(self.negative),
            "created": self.created,
        }


def check_vector_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"bad vector name {name!r}: letters, digits and '_', not starting with a digit"
        )
    return name


# ---------------------------------------------------------------------- building
@torch.inference_mode()
def prompt_means(
    lm: LoadedModel, layer: int, prompts: list[str], tokens: str = "mean", batch: int = 16
) -> Tensor:
    """(P, d): each prompt's residual after block `layer`, averaged over its tokens (the
    first skipped when there are others) or its last token, on the CPU in float32."""
    if tokens not in TOKENS:
        raise ValueError(f"unknown token reduction {tokens!r}: use {', '.join(TOKENS)}")
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = []
    for start in range(0, len(prompts), batch):
        ids = [tok(p)["input_ids"] for p in prompts[start : start + batch]]
        T = max(len(i) for i in ids)
        x = torch.full((len(ids), T), pad, dtype=torch.long)  # (B, T) right-padded
        mask = torch.zeros(len(ids), T, dtype=torch.long)
        for r, i in enumerate(ids):
            x[r, : len(i)] = torch.tensor(i)
            mask[r, : len(i)] = 1
        resid = lm.residual(x.to(lm.device), layer, attention_mask=mask.to(lm.device))
        resid = resid.float().cpu()  # (B, T, d)
        for r, i in enumerate(ids):
            n = len(i)
            if tokens == "last":
                out.append(resid[r, n - 1])
            else:
                out.append(resid[r, 1 if n > 1 else 0 : n].mean(dim=0))
    return torch.stack(out)


def _check_prompts(prompts: list[str], which: str) -> list[str]:
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ValueError(f"no {which} prompts: give at least one")
    return prompts


def build_vector(
    lm: LoadedModel,
    sae: TopKSAE,
    name: str,
    positive: list[str],
    negative: list[str],
    tokens: str = "mean",
) -> SteeringVector:
    """The difference of mean activations at the SAE's hook point (module docstring)."""
    check_vector_name(name)
    positive = _check_prompts(positive, "positive")
    negative = _check_prompts(negative, "negative")
    layer = sae_layer(lm, sae)
    mu_pos = prompt_means(lm, layer, positive, tokens).mean(dim=0)  # (d,)
    mu_neg = prompt_means(lm, layer, negative, tokens).mean(dim=0)  # (d,)
    v = mu_pos - mu_neg
    if not float(v.norm()) > 1e-6 * float(mu_pos.norm()):
        raise ValueError("the positive and negative prompts give the same mean: no direction")
    return SteeringVector(
        name=name,
        direction=v,
        hookpoint=sae.cfg.hookpoint,
        model=lm.name,
        tokens=tokens,
        positive=positive,
        negative=negative,
        negative_projection=float(mu_neg @ v / (v @ v)),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


# ---------------------------------------------------------------------- files
def vector_path(sae_dir: str | Path, name: str) -> Path:
    """<SAE_DIR>/vectors/<name>.safetensors (its record <name>.json beside it)."""
    return Path(sae_dir).expanduser() / VECTORS_DIR / f"{check_vector_name(name)}.safetensors"


def save_vector(sae_dir: str | Path, vector: SteeringVector) -> Path:
    path = vector_path(sae_dir, vector.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"direction": vector.direction.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    text = json.dumps(vector.meta(), indent=1, ensure_ascii=False)
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    return path


def read_vector(name: str, sae_dir: str | Path, sae: TopKSAE | None = None) -> SteeringVector:
    """The vector `name` saved beside the SAE, with its record when there is one; with
    `sae`, checked to fit it."""
    from safetensors import SafetensorError

    path = vector_path(sae_dir, name)
    if not path.is_file():
        saved = list_vectors(sae_dir)
        known = f"saved: {', '.join(saved)}" if saved else "none is saved (make one: steer vector)"
        raise ValueError(f"no vector {name!r} beside the SAE in {sae_dir} ({known})")
    try:
        direction = load_file(str(path)).get("direction")
        record = path.with_suffix(".json")
        meta = json.loads(record.read_text()) if record.is_file() else {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"cannot read vector {path}: {err}") from None
    if direction is None or direction.ndim != 1:
        raise ValueError(f"vector file {path} holds no 1-d 'direction' tensor")
    known = set(SteeringVector.__dataclass_fields__) - {"name", "direction"}
    fields = {k: v for k, v in meta.items() if k in known} if isinstance(meta, dict) else {}
    vector = SteeringVector(name=name, direction=direction, **fields)
    if sae is not None:
        check_fits(vector, sae)
    return vector


def load_vector(name: str, sae_dir: str | Path) -> Tensor:
    """The (d,) direction of a saved vector (raw residual per unit of strength);
    ValueError (one line) when it is missing."""
    return read_vector(name, sae_dir).direction


def check_fits(vector: SteeringVector, sae: TopKSAE) -> None:
    if vector.d != sae.d_in:
        raise ValueError(
            f"vector {vector.name!r} has {vector.d} dimensions but the SAE reads {sae.d_in}"
        )
    if vector.hookpoint and sae.cfg.hookpoint and vector.hookpoint != sae.cfg.hookpoint:
        raise ValueError(
            f"vector {vector.name!r} was built at {vector.hookpoint}, the SAE reads "
            f"{sae.cfg.hookpoint}"
        )


def list_vectors(sae_dir: str | Path) -> list[str]:
    """Names of the vectors saved beside the SAE, sorted."""
    folder = Path(sae_dir).expanduser() / VECTORS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.safetensors") if NAME_RE.fullmatch(p.stem))
