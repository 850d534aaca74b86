"""The catalog's on-disk format, in `<sae folder>/catalog/` (`catalog@m` for level m of a
Matryoshka SAE): `catalog.safetensors` (statistics, context token ids and activations,
logit-lens token ids) and `catalog.json` (metadata, labels, and the strings of the token
ids used). Both are written atomically; a catalog of another format version is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from sae import atomic_write
from sae.matryoshka import split_prefix

CATALOG_DIR = "catalog"
TENSORS_FILE = "catalog.safetensors"
META_FILE = "catalog.json"
FORMAT_VERSION = 2


def catalog_dir(sae_dir: str | Path) -> Path:
    """`<sae>/catalog`; for level m of a Matryoshka SAE (`DIR@m`), `DIR/catalog@m`."""
    folder, prefix = split_prefix(sae_dir)
    return folder / (CATALOG_DIR if prefix is None else f"{CATALOG_DIR}@{prefix}")


def resolve_folder(folder: str | Path) -> Path:
    """A catalog folder, or an SAE folder holding one in catalog/ (DIR@m: catalog@m)."""
    if split_prefix(folder)[1] is not None:
        return catalog_dir(folder)
    folder = Path(folder)
    if not (folder / META_FILE).is_file() and (folder / CATALOG_DIR / META_FILE).is_file():
        return folder / CATALOG_DIR
    return folder


def files_exist(folder: str | Path) -> bool:
    folder = resolve_folder(folder)
    return (folder / META_FILE).is_file() and (folder / TENSORS_FILE).is_file()


def write_files(
    folder: str | Path, tensors: dict[str, Tensor], labels: list[str], pieces: list[str], meta: dict
) -> Path:
    """Write into `folder` (an SAE folder: into its catalog/). Returns the folder."""
    folder = Path(folder)
    if split_prefix(folder)[1] is not None:
        folder = catalog_dir(folder)
    elif (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file():
        folder = folder / CATALOG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in tensors.items()}
    meta = {**meta, "version": FORMAT_VERSION, "labels": labels, "pieces": pieces}
    atomic_write(folder / TENSORS_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write(
        folder / META_FILE,
        lambda tmp: Path(tmp).write_text(json.dumps(meta, ensure_ascii=False)),
    )
    return folder


def read_files(
    folder: str | Path,
) -> tuple[Path, dict[str, Tensor], list[str], list[str], dict]:
    """(the catalog folder, tensors, labels, pieces, meta) of a catalog folder or of the
    catalog/ of an SAE folder. ValueError if absent or bad."""
    folder = resolve_folder(folder)
    if not files_exist(folder):
        raise ValueError(f"no feature catalog in {folder}: build one with `steer index`")
    try:
        meta = json.loads((folder / META_FILE).read_text())
        tensors = load_file(str(folder / TENSORS_FILE))
        labels, pieces = meta.pop("labels"), meta.pop("pieces")
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"corrupt feature catalog in {folder}: {err}") from None
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"feature catalog in {folder} has format {meta.get('version')}, expected {FORMAT_VERSION}: rebuild it"
        )
    return folder, tensors, labels, pieces, meta
