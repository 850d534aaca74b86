"""Where SAEs live on disk: the checkpoint folders, the shipped default SAE, presets."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SAE_ROOT = "smollm2-135m"  # checkpoints/<this>/ holds the SAE shipped with the project


def checkpoint_roots() -> list[Path]:
    """Folders named `checkpoints` that may hold SAEs: in the package, the repo, the cwd."""
    package = Path(__file__).resolve().parents[1]  # steer/ (its parent: the repository)
    roots = [package / "checkpoints", package.parent / "checkpoints", Path.cwd() / "checkpoints"]
    unique: list[Path] = []
    for root in roots:
        if root.is_dir() and root.resolve() not in unique:
            unique.append(root.resolve())
    return unique


def is_sae_folder(folder: Path) -> bool:
    return (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file()


def find_default_sae(roots: list[Path] | None = None) -> Path | None:
    """The SAE shipped for the embedded model, or None.

    Under checkpoints/smollm2-135m/: the folder holding a `DEFAULT` marker file (the file
    may also name a folder relative to itself), else the first `*/*/cfg.json`.
    """
    for root in roots if roots is not None else checkpoint_roots():
        base = root / DEFAULT_SAE_ROOT
        if not base.is_dir():
            continue
        for marker in sorted(base.rglob("DEFAULT")):
            named = marker.read_text().strip() if marker.stat().st_size < 4096 else ""
            candidates = [marker.parent / named] if named else []
            candidates.append(marker.parent)
            for folder in candidates:
                if folder.is_dir() and (folder / "cfg.json").is_file():
                    return folder
                nested = sorted(folder.rglob("cfg.json")) if folder.is_dir() else []
                if nested:
                    return nested[0].parent
        found = sorted(base.glob("*/*/cfg.json"))
        if found:
            return found[0].parent
    return None


def list_checkpoints(roots: list[Path] | None = None) -> list[Path]:
    """Every SAE folder (cfg.json + sae.safetensors) under the checkpoint roots."""
    found: list[Path] = []
    for root in roots if roots is not None else checkpoint_roots():
        found.extend(sorted(p.parent for p in root.rglob("cfg.json") if is_sae_folder(p.parent)))
    return found


def default_presets_dir() -> Path:
    from steer.lm.models import steer_home

    return steer_home() / "presets"


def sibling_depths(sae_dir: Path) -> list[Path]:
    """The SAE folder and its siblings at other depths, shallowest first.

    A family trained at several depths lies as <root>/resid_post.L/<name>/. For each
    other resid_post.L beside this SAE's, the sibling is the folder of the same name, else
    the widest SAE there (most latents in cfg.json). A folder outside that layout: itself.
    """
    import json
    import re

    sae_dir = Path(sae_dir)
    here = re.fullmatch(r"resid_post\.(\d+)", sae_dir.parent.name)
    if not here:
        return [sae_dir]
    found = {int(here.group(1)): sae_dir}
    for depth in sae_dir.parent.parent.glob("resid_post.*"):
        match = re.fullmatch(r"resid_post\.(\d+)", depth.name)
        if not match or int(match.group(1)) in found or not depth.is_dir():
            continue
        same = depth / sae_dir.name
        if is_sae_folder(same):
            found[int(match.group(1))] = same
            continue
        sizes = []
        for folder in sorted(p for p in depth.iterdir() if is_sae_folder(p)):
            try:
                sizes.append(
                    (int(json.loads((folder / "cfg.json").read_text())["n_latents"]), folder)
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if sizes:
            found[int(match.group(1))] = max(sizes, key=lambda s: s[0])[1]
    return [found[d] for d in sorted(found)]
