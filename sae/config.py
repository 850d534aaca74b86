"""Configuration of one TopK sparse autoencoder, as stored in its `cfg.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class SAEConfig:
    d_in: int
    """Width of the activations the SAE reads (the model's d_model)."""

    n_latents: int
    """Number of latents (dictionary size). Often a multiple of d_in: 4x ... 32x."""

    k: int
    """Number of latents kept active per token (TopK)."""

    multi_topk: bool = False
    """Train with Multi-TopK (loss = L(k) + L(4k)/8) so k can be raised at inference."""

    input_scale: float = 1.0
    """Raw activations are multiplied by this before encoding (so that E||x||^2 = d_in) and
    divided by it after decoding: the SAE takes and returns raw residual-stream units."""

    hookpoint: str = ""
    """Where in the model the SAE reads, e.g. `resid_post.8` (output of block 8, 0-based)."""

    model_name: str = ""
    """The model whose activations the SAE was trained on."""

    extra: dict = field(default_factory=dict)
    """Provenance: training command, tokens seen, final metrics, ... (free-form)."""

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.n_latents <= 0:
            raise ValueError(
                f"d_in and n_latents must be positive, got {self.d_in}, {self.n_latents}"
            )
        if not 0 < self.k <= self.n_latents:
            raise ValueError(f"k must be in 1..n_latents ({self.n_latents}), got {self.k}")
        if not self.input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {self.input_scale}")

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
        return cls.from_dict(data)
