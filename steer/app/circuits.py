"""The circuit behind a token, for the playground (steer.attribution.circuit), no Textual.

A token of the last generation's baseline (row 0) or steered (row 1) completion is traced
in the context it was generated in, through the loaded SAE and the SAEs at the other
depths beside it on disk (<root>/resid_post.L/, as `steer circuit --all-depths` finds
them). The graph explains the model as it is, without levers: a steered token is traced
through the unsteered model in the same context (the header says so).

A latent node becomes a lever through the engine: at the loaded SAE's depth it is added
directly; at another depth the engine first switches to that depth's SAE (which clears
the levers of the previous one, as opening any SAE does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steer.attribution.circuit import Circuit, build_circuit
from steer.attribution.circuit_view import TreeItem, summary, tree, tree_line  # noqa: F401
from steer.lm.models import parse_hookpoint

from .checkpoints import sibling_depths
from .why import token_context


@dataclass
class CircuitView:
    row: int
    index: int
    token: str
    circuit: Circuit
    root: TreeItem
    summary: list[str]
    loaded_layer: int
    """The depth of the engine's SAE: its latents are levers at once."""
    paths: dict[int, Path] = field(default_factory=dict)
    """layer -> SAE folder of every depth in the graph (the loaded one may have none)."""
    without_levers: bool = False
    """The token came from the steered row with levers on: the graph is the model's own."""


class DepthSAEs:
    """The SAEs at other depths, opened once per loaded SAE: (sae, catalog) by folder."""

    def __init__(self) -> None:
        self.opened: dict[Path, tuple] = {}

    def get(self, folder: Path, device):
        if folder not in self.opened:
            from sae import load_sae
            from steer.features.catalog import CatalogMismatch, FeatureCatalog

            sae = load_sae(folder, device=device)
            try:
                catalog = FeatureCatalog.for_sae(folder, sae)
            except (CatalogMismatch, ValueError):
                catalog = None
            self.opened[folder] = (sae, catalog)
        return self.opened[folder]


def depth_paths(engine) -> dict[int, Path]:
    """layer -> SAE folder at each depth beside the loaded SAE (itself included)."""
    if engine.sae_path is None:
        return {}
    out = {}
    for folder in sibling_depths(engine.sae_path):
        try:
            layer = parse_hookpoint(folder.parent.name)
        except ValueError:
            layer = parse_hookpoint(engine.sae.cfg.hookpoint)
        out[layer] = folder
    return out


def circuit_for_token(engine, depths: DepthSAEs, row: int, index: int, nodes: int = 6):
    """The circuit of token `index` of completion `row` of the engine's last generation."""
    ids, target = token_context(engine, row, index, "a circuit")
    gen = engine.last
    loaded = parse_hookpoint(engine.sae.cfg.hookpoint)
    paths = depth_paths(engine)
    saes, labelers = [engine.sae], {loaded: engine.label}
    for layer, folder in paths.items():
        if layer == loaded:
            continue
        sae, catalog = depths.get(folder, engine.lm.device)
        saes.append(sae)
        if catalog is not None:
            labelers[layer] = catalog.label
    circuit = build_circuit(engine.lm, saes, ids, target, nodes=nodes, labelers=labelers)
    return CircuitView(
        row=row,
        index=index,
        token=circuit.target_text,
        circuit=circuit,
        root=tree(circuit, branch=3),
        summary=summary(circuit),
        loaded_layer=loaded,
        paths=paths,
        without_levers=row == 1 and any(iv.enabled for iv in gen.levers),
    )


def circuit_lever(engine, layer: int, latent: int, mode: str = "ablate"):
    """Make latent `latent` of depth `layer` a lever. -> (the lever, switched: True when
    the engine first opened that depth's SAE, clearing the previous SAE's levers)."""
    engine._require_sae()
    switched = False
    if layer != parse_hookpoint(engine.sae.cfg.hookpoint):
        folder = depth_paths(engine).get(layer)
        if folder is None:
            raise ValueError(f"no SAE at resid_post.{layer} beside the loaded one")
        engine.load_sae(folder)
        switched = True
    if mode == "ablate":
        return engine.ablate_lever(latent), switched
    return engine.add_feature(latent), switched
