"""Configuration of one sparse autoencoder, as stored in its `cfg.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .archs import ARCHS

_TYPES = {
    "d_in": int,
    "n_latents": int,
    "k": int,
    "multi_topk": bool,
    "input_scale": (int, float),
    "hookpoint": str,
    "model_name": str,
    "extra": dict,
    "arch": str,
    "matryoshka": list,
}
_KIND_NAMES = {
    int: "an integer",
    bool: "true or false",
    (int, float): "a number",
    str: "a string",
    dict: "an object",
    list: "a list",
}


@dataclass
class SAEConfig:
    d_in: int
    """Width of the activations the SAE reads (the model's d_model)."""

    n_latents: int
    """Number of latents (dictionary size). Often a multiple of d_in: 4x ... 32x."""

    k: int
    """Number of latents kept active per token (TopK). Other architectures have no fixed
    k: 0, or the L0 they were trained for (BatchTopK), for the record."""

    multi_topk: bool = False
    """Train with Multi-TopK (loss = L(k) + L(4k)/8) so k can be raised at inference."""

    input_scale: float = 1.0
    """Raw activations are multiplied by this before encoding (so that E||x||^2 = d_in) and
    divided by it after decoding: the SAE takes and returns raw residual-stream units."""

    hookpoint: str = ""
    """Where in the model the SAE reads, e.g. `resid_post.8` (output of block 8, 0-based)."""

    model_name: str = ""
    """The model whose activations the SAE was trained on."""

    matryoshka: list[int] = field(default_factory=list)
    """Matryoshka SAE: nested level sizes, narrowest first, the last = n_latents; the first m
    latents of each level form an SAE of their own (sae/matryoshka.py). Empty: a plain SAE."""

    extra: dict = field(default_factory=dict)
    """Provenance: training command, tokens seen, final metrics, ... (free-form)."""

    arch: str = "topk"
    """Activation function: "topk", "relu", "jumprelu" or "gated" (sae/archs.py)."""

    def __post_init__(self) -> None:
        for name, kind in _TYPES.items():
            value = getattr(self, name)
            # bool is an int subclass: refuse it where a count is meant
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"SAE config: {name} must be {_KIND_NAMES[kind]}, got {value!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"SAE config: unknown arch {self.arch!r}: use {', '.join(ARCHS)}")
        if self.d_in <= 0 or self.n_latents <= 0:
            raise ValueError(
                f"d_in and n_latents must be positive, got {self.d_in}, {self.n_latents}"
            )
        low = 1 if self.arch == "topk" else 0
        if not low <= self.k <= self.n_latents:
            raise ValueError(f"k must be in {low}..n_latents ({self.n_latents}), got {self.k}")
        if self.multi_topk and self.arch != "topk":
            raise ValueError(f"multi_topk needs arch topk, not {self.arch}")
        if not self.input_scale > 0 or self.input_scale == float("inf"):
            raise ValueError(f"input_scale must be positive and finite, got {self.input_scale}")
        self.input_scale = float(self.input_scale)
        if self.matryoshka:
            if self.arch != "topk":
                raise ValueError(f"matryoshka levels need arch topk, not {self.arch}")
            from .matryoshka import check_levels  # late: matryoshka imports the model

            self.matryoshka = check_levels(self.matryoshka, self.n_latents, self.k)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        missing = {"d_in", "n_latents", "k"} - data.keys()
        if missing:
            raise ValueError(f"cfg.json lacks {sorted(missing)}")
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def from_json(cls, path: str | Path) -> SAEConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read SAE config {path}: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"SAE config {path} is not a JSON object")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
