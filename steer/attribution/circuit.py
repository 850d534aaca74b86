"""Feature circuits: from the input tokens through SAE latents at several depths to a token.

Marks et al. 2024 ("Sparse Feature Circuits", arXiv 2403.19647), on the residual stream.
SAEs at depths L1 < L2 < ... < Ln are spliced in: x_L = x̂_L(z) + ε_L, every active
(latent, position) a node, the SAE's error ε_L one node per depth (summed over the
positions >= first; ablating it puts the reconstruction in place of the residual there).
The input tokens (their embeddings) are nodes, and so is the metric m (the target's logit,
or logit(target) - logit(contrast)).

Node effects are attribution patching: A(node) = value · ∂m/∂value, one backward for
every depth (tokens: e_t · ∂m/∂e_t; latent i at p: z_i(p) · (∂m/∂x_L(p) · dir_i); error:
Σ_p ε_L(p) · ∂m/∂x_L(p)). Ablating a node changes m by about -A.

Edges (u at stage a -> d at the next stage b) are the effect of u on m through d:

    w(u -> d) = ∂m/∂d · ∂d/∂u · u

with d's value a function of x_b (a latent through its encoder row, the error as
x_b - x̂_b(x_b), TopK membership held fixed) and u's value a part of x_a. Every path from
a to m runs through stage b's nodes (x_b = x̂_b + ε_b exactly, and a node at position
p >= first cannot reach position 0), so with every node kept a node's outgoing edges sum
to its effect exactly (the tests check it). The edges into d need not sum to d's effect:
d is not linear in the upstream values, and the decoder bias and position 0 are not
nodes. Edges into the output are the last depth's node effects.

Pruning keeps, per stage, the `nodes` latents (or tokens) with the largest |A|, plus the
error node of every depth. Reported per depth: the share of the depth's attribution
(Σ |A| over its latents and its error) that the kept latents carry, the part of the
target the kept graph explains there, and the error's share, what no latent explains
there. (Signed sums are kept too: Σ A of the kept nodes against Σ A of all; positive
and negative effects cancel in them, so they are no share.)

Position 0 (the attention sink) is not decomposed at any depth (`first=1`, as in
`attribute`): paths through it are outside the graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel
from steer.steering import sae_layer

from .inputs import _pre_act
from .passes import gradients_everywhere, reconstruct, upstream_gradients
from .patching import _nodes
from .targets import Target, as_ids

OUTPUT = "out"
RANKED = 128


@dataclass
class Node:
    id: str
    kind: str
    """token | latent | error | output"""
    layer: int | None
    """The block whose output the SAE reads (None for tokens and the output)."""
    pos: int | None
    """Position in the context (None for an error node and the output)."""
    feature: int | None
    activation: float | None
    """A latent's activation; the output's metric; None for tokens and errors."""
    effect: float
    """A: the estimated drop of the metric when the node is ablated (output: the metric)."""
    label: str = ""
    token: str = ""
    """The context's token at `pos`; for the output, the target token."""


@dataclass
class Edge:
    src: str
    dst: str
    weight: float
    """The effect on the metric of src through dst, in the metric's units."""


@dataclass
class Stage:
    """What pruning kept at one stage (tokens, or one depth)."""

    layer: int | None
    candidates: int
    """Nodes before pruning: tokens, or active (latent, position) pairs."""
    kept: int
    total: float
    """Σ A over every node of the stage (latents and the error)."""
    kept_effect: float
    """Σ A over the kept tokens or latents."""
    error: float | None
    """A of the depth's error node (None for tokens)."""
    total_abs: float
    """Σ |A| over every node of the stage (latents and the error)."""
    kept_abs: float
    """Σ |A| over the kept tokens or latents."""
    ranked_abs: list[float] = field(default_factory=list)
    """The largest |A| of the stage's tokens or latents, descending (at most RANKED): the
    share n nodes would carry is sum(ranked_abs[:n]) / total_abs."""

    def explained_by(self, n: int) -> float:
        """The share of the stage's |attribution| its n strongest tokens or latents carry."""
        return sum(self.ranked_abs[:n]) / self.total_abs if self.total_abs else 0.0

    @property
    def explained(self) -> float:
        """The share of the stage's attribution (Σ |A|) the kept tokens or latents carry."""
        return self.kept_abs / self.total_abs if self.total_abs else 0.0

    @property
    def error_share(self) -> float | None:
        """The share of the depth's attribution (Σ |A|) its SAE error carries."""
        if self.error is None:
            return None
        return abs(self.error) / self.total_abs if self.total_abs else 0.0


@dataclass
class Circuit:
    tokens: list[str]
    target: Target
    target_text: str
    contrast_text: str | None
    metric: float
    layers: list[int]
    nodes: list[Node]
    edges: list[Edge]
    stages: list[Stage]
    seconds: float
    first: int = 1
    _by_id: dict = field(default_factory=dict, repr=False, compare=False)

    def node(self, node_id: str) -> Node:
        if not self._by_id:
            self._by_id = {n.id: n for n in self.nodes}
        return self._by_id[node_id]

    def incoming(self, node_id: str) -> list[Edge]:
        """Edges into a node, strongest |weight| first."""
        edges = [e for e in self.edges if e.dst == node_id]
        return sorted(edges, key=lambda e: -abs(e.weight))

    def outgoing(self, node_id: str) -> list[Edge]:
        edges = [e for e in self.edges if e.src == node_id]
        return sorted(edges, key=lambda e: -abs(e.weight))

    def stage(self, layer: int | None) -> Stage:
        return next(s for s in self.stages if s.layer == layer)

    def to_dict(self) -> dict:
        return {
            "target": self.target.to_dict(self.target_text, self.contrast_text),
            "metric": self.metric,
            "layers": self.layers,
            "tokens": self.tokens,
            "first": self.first,
            "nodes": [{k: v for k, v in asdict(n).items()} for n in self.nodes],
            "edges": [asdict(e) for e in self.edges],
            "stages": [
                {**asdict(s), "explained": s.explained, "error_share": s.error_share}
                for s in self.stages
            ],
            "explained": {
                ("tokens" if s.layer is None else str(s.layer)): s.explained for s in self.stages
            },
            "seconds": self.seconds,
        }


def token_id(pos: int) -> str:
    return f"t{pos}"


def latent_id(layer: int, feature: int, pos: int) -> str:
    return f"L{layer}.f{feature}@{pos}"


def error_id(layer: int) -> str:
    return f"L{layer}.err"


# ---------------------------------------------------------------------- building
def check_saes(lm: LoadedModel, saes: list[TopKSAE]) -> list[tuple[int, TopKSAE]]:
    """(layer, sae) sorted by depth; one SAE per depth, each fitting the model."""
    if not saes:
        raise ValueError("give at least one SAE")
    by_layer: dict[int, TopKSAE] = {}
    for sae in saes:
        layer = sae_layer(lm, sae)
        if layer in by_layer:
            raise ValueError(f"two SAEs read resid_post.{layer}: give one SAE per depth")
        by_layer[layer] = sae
    return sorted(by_layer.items())


def build_circuit(
    lm: LoadedModel,
    saes: list[TopKSAE],
    ids: Tensor | list[int],
    target: Target,
    *,
    nodes: int = 8,
    first: int = 1,
    labelers: dict[int, Callable[[int], str]] | None = None,
) -> Circuit:
    """The pruned graph for the target on the context ids (T,) (run up to its read position).

    nodes: latents kept per depth (and tokens kept), by |effect on the metric|.
    labelers: layer -> (feature -> label), e.g. each SAE's catalog.label.
    """
    if nodes < 1:
        raise ValueError(f"--nodes must be at least 1, got {nodes}")
    depths = check_saes(lm, saes)
    ids = as_ids(ids)
    if not 0 <= target.read_at < len(ids):
        raise ValueError(f"the target reads position {target.read_at}, beyond {len(ids)} tokens")
    ids = ids[: target.read_at + 1]
    first = min(first, target.read_at)
    texts = [lm.tokenizer.decode([int(i)]) for i in ids]
    start = time.perf_counter()
    layers = [layer for layer, _ in depths]
    m, values, grads = gradients_everywhere(lm, ids, layers, target)
    graph = _Graph(texts, first, labelers or {}, dict(depths))
    graph.add_tokens(values[None], grads[None], nodes)
    for layer, sae in depths:
        graph.add_depth(layer, sae, values[layer], grads[layer], target, m, nodes)
    upstream: int | None = None
    for layer, sae in depths:
        graph.connect(lm, ids, upstream, layer, sae, values, grads)
        upstream = layer
    graph.connect_output(layers[-1], m, lm.tokenizer.decode([target.token]))
    target_text, contrast_text = target.texts(lm.tokenizer)
    return Circuit(
        tokens=texts,
        target=target,
        target_text=target_text,
        contrast_text=contrast_text,
        metric=m,
        layers=layers,
        nodes=graph.nodes,
        edges=graph.edges,
        stages=graph.stages,
        seconds=time.perf_counter() - start,
        first=first,
    )


def _ranked(absolute: Tensor) -> list[float]:
    return absolute.sort(descending=True).values[:RANKED].tolist()


class _Graph:
    """The kept nodes and their edges, stage by stage."""

    def __init__(self, texts: list[str], first: int, labelers: dict, saes: dict):
        self.texts, self.first, self.labelers, self.saes = texts, first, labelers, saes
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.stages: list[Stage] = []
        self.kept: dict = {}  # stage -> the kept nodes' ids, values and positions
        self.idx: dict[int, Tensor] = {}  # layer -> (T, K) the clean run's active latents

    def add_tokens(self, e: Tensor, g: Tensor, n: int) -> None:
        effects = (e * g).sum(-1).float().cpu()  # (T,)
        order = effects.abs().argsort(descending=True)[:n]
        order = order[effects[order] != 0].sort().values
        for p in order.tolist():
            self.nodes.append(
                Node(
                    token_id(p), "token", None, p, None, None, float(effects[p]), "", self.texts[p]
                )
            )
        self.kept[None] = {"pos": order}
        kept, absolute = effects[order], effects.abs()
        self.stages.append(
            Stage(
                None, len(effects), len(order), float(effects.sum()), float(kept.sum()), None,
                float(absolute.sum()), float(kept.abs().sum()), _ranked(absolute),
            )
        )  # fmt: skip

    def add_depth(self, layer, sae, x, g, target, m, n) -> None:
        attr = _nodes(sae, x, g, target, "linear", m, self.first)
        self.idx[layer] = sae.encode(x.to(sae.device, sae.dtype)).top_indices  # (T, K)
        order = attr.scores.abs().argsort(descending=True)[:n]
        order = order[attr.scores[order] != 0]  # a node with no effect carries nothing
        label = self.labelers.get(layer)
        for j in order.tolist():
            f, p = int(attr.latents[j]), int(attr.positions[j])
            self.nodes.append(
                Node(
                    latent_id(layer, f, p), "latent", layer, p, f, float(attr.acts[j]),
                    float(attr.scores[j]), label(f) if label else "", self.texts[p],
                )
            )  # fmt: skip
        err = attr.error_total
        self.nodes.append(Node(error_id(layer), "error", layer, None, None, None, err))
        self.kept[layer] = {
            "latents": attr.latents[order],
            "pos": attr.positions[order],
            "acts": attr.acts[order],
            "effects": attr.scores[order],
        }
        kept = attr.scores[order]
        self.stages.append(
            Stage(
                layer, len(attr.scores), len(order), attr.features_total + err,
                float(kept.sum()), err, float(attr.scores.abs().sum()) + abs(err),
                float(kept.abs().sum()), _ranked(attr.scores.abs()),
            )
        )  # fmt: skip

    def connect(self, lm, ids, upstream, layer, sae, values, grads) -> None:
        """Edges from the kept nodes of the upstream stage into those of `layer`."""
        down = self.kept[layer]
        n = len(down["latents"])
        g_b = grads[layer].to(sae.device, sae.dtype)  # (T, d)
        idx, first = self.idx[layer], self.first

        def readout(x_b: Tensor) -> Tensor:  # (n + 1, T, d) -> (n + 1,)
            x_b = x_b.to(sae.device, sae.dtype)
            at = x_b[torch.arange(n), down["pos"].to(x_b.device)]  # (n, d)
            acts = _pre_act(sae, at, down["latents"].to(sae.device))  # (n,)
            x_err = x_b[n, first:]  # (T - first, d)
            eps = x_err - reconstruct(sae, x_err, idx[first:])
            return torch.cat([acts, (eps * g_b[first:]).sum()[None]])

        G = upstream_gradients(lm, ids, upstream, layer, n + 1, readout).float()  # (n+1, T, d)
        # ∂m/∂d: the gradient along a latent's direction; the error row already has it.
        scale = torch.ones(n + 1)
        if n:
            scale[:n] = down["effects"] / down["acts"].clamp_min(1e-12)
        dst = [
            latent_id(layer, int(f), int(p))
            for f, p in zip(down["latents"], down["pos"], strict=True)
        ]
        dst.append(error_id(layer))
        for src, raw in self._upstream_terms(upstream, values, G):
            self._add_edges(src, dst, raw * scale)

    @torch.no_grad()
    def _upstream_terms(self, upstream, values, G):
        """(source id, raw (R,)) per kept upstream node: ∂d/∂u · u for every row."""
        x_a = values[upstream].float()  # (T, d)
        if upstream is None:
            for p in self.kept[None]["pos"].tolist():
                yield token_id(p), G[:, p] @ x_a[p]
            return
        up = self.kept[upstream]
        sae = self.saes[upstream]
        dirs = sae.decoder_directions(up["latents"]).float().cpu()  # (u, d)
        for f, p, act, d in zip(up["latents"], up["pos"], up["acts"], dirs, strict=True):
            yield latent_id(upstream, int(f), int(p)), float(act) * (G[:, int(p)] @ d)
        first = self.first
        x_s = x_a[first:].to(sae.device, sae.dtype)
        eps = (x_s - reconstruct(sae, x_s, self.idx[upstream][first:])).float().cpu()
        yield error_id(upstream), torch.einsum("rtd,td->r", G[:, first:], eps)

    def _add_edges(self, src: str, dst: list[str], weights: Tensor) -> None:
        for d, w in zip(dst, weights.tolist(), strict=True):
            if w != 0.0:
                self.edges.append(Edge(src, d, w))

    def connect_output(self, layer: int, m: float, text: str) -> None:
        for node in self.nodes:
            if node.layer == layer and node.effect != 0.0:
                self.edges.append(Edge(node.id, OUTPUT, node.effect))
        self.nodes.append(Node(OUTPUT, "output", None, None, None, m, m, "", text))
