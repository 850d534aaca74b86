"""Feature splitting across a family of SAEs of growing width.

SAEs trained together on one hook point sit side by side: `<hookpoint>/<n>-k<k>/`. For a
feature of one member, its nearest features in every wider member (cosine similarity of
decoder rows) show how the concept splits as the dictionary grows.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from sae.model import CONFIG_FILE, WEIGHTS_FILE
from steer.steering import check_latent


@dataclass
class Neighbour:
    member: str  # folder name of the wider SAE, e.g. "9216-k32"
    latent: int
    cosine: float
    label: str


def _cfg(folder: Path) -> dict:
    return json.loads((folder / CONFIG_FILE).read_text())


def family_members(sae_dir: str | Path) -> list[Path]:
    """The SAE folders beside `sae_dir` (itself included) that read the same hook point
    with the same d_in, narrowest first."""
    sae_dir = Path(sae_dir).resolve()
    own = _cfg(sae_dir)
    members = []
    for folder in sorted(sae_dir.parent.iterdir()):
        if not ((folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()):
            continue
        try:
            cfg = _cfg(folder)
        except (OSError, json.JSONDecodeError):
            continue
        if cfg.get("d_in") == own.get("d_in") and cfg.get("hookpoint") == own.get("hookpoint"):
            members.append((int(cfg.get("n_latents", 0)), folder.name, folder))
    return [folder for _, _, folder in sorted(members)]


@functools.lru_cache(maxsize=8)
def _unit_decoder(folder: Path, mtime: float) -> torch.Tensor:
    """Unit-norm decoder rows (n, d) of an SAE folder, read without the encoder."""
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        w_dec = f.get_tensor("W_dec").float()
    return w_dec / w_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)


def decoder_rows(folder: Path) -> torch.Tensor:
    folder = Path(folder).resolve()
    return _unit_decoder(folder, (folder / WEIGHTS_FILE).stat().st_mtime)


@functools.lru_cache(maxsize=8)
def _catalog(folder: Path):
    from .catalog import FeatureCatalog

    try:
        return FeatureCatalog.load(folder)
    except (ValueError, OSError):
        return None


def family_neighbours(
    sae_dir: str | Path, latent: int, n: int = 3, wider_only: bool = True
) -> dict[str, list[Neighbour]]:
    """member name -> the n features of that member closest to `latent` of `sae_dir`."""
    sae_dir = Path(sae_dir).resolve()
    own = decoder_rows(sae_dir)
    check_latent(latent, own.shape[0])
    direction = own[latent]  # (d,)
    result: dict[str, list[Neighbour]] = {}
    for folder in family_members(sae_dir):
        if folder == sae_dir:
            continue
        rows = decoder_rows(folder)
        if wider_only and rows.shape[0] <= own.shape[0]:
            continue
        cos = rows @ direction  # (n_member,)
        top = cos.topk(min(n, cos.numel()))
        catalog = _catalog(folder)
        # The catalog's label(): the best explanation when there is one, as everywhere else.
        result[folder.name] = [
            Neighbour(
                folder.name,
                int(i),
                float(c),
                catalog.label(int(i)) if catalog and int(i) < catalog.n_latents else "",
            )
            for c, i in zip(top.values, top.indices, strict=True)
        ]
    return result
