"""A circuit as people read it: one line per node, a tree from the output back to the
input, a summary of what pruning kept. Plain strings and records, shared by the CLI (rich),
the playground (a Textual Tree) and the HTML page."""

from __future__ import annotations

from dataclasses import dataclass, field

from .circuit import OUTPUT, Circuit, Node


@dataclass
class TreeItem:
    node: Node
    weight: float | None
    """The edge into the parent: the node's effect on the metric through the parent."""
    children: list[TreeItem] = field(default_factory=list)
    repeated: bool = False
    """Shown (and expanded) higher up the tree already: not expanded again."""


def metric_text(circuit: Circuit) -> str:
    text = f"logit({circuit.target_text!r})"
    if circuit.contrast_text is not None:
        text += f" - logit({circuit.contrast_text!r})"
    return text


def describe(circuit: Circuit, node: Node) -> str:
    """One line for a node, without the edge weight."""
    if node.kind == "output":
        return f"{metric_text(circuit)} = {circuit.metric:.3g}"
    if node.kind == "token":
        return f"token {node.token!r} @{node.pos} · effect {node.effect:+.3g}"
    if node.kind == "error":
        return f"L{node.layer} SAE error (all positions) · effect {node.effect:+.3g}"
    text = (
        f"L{node.layer} #{node.feature} at {node.token!r}@{node.pos} · act {node.activation:.3g}"
        f" · effect {node.effect:+.3g}"
    )
    return f"{text} · {node.label}" if node.label else text


def tree(circuit: Circuit, branch: int = 3) -> TreeItem:
    """From the output back to the tokens: each node's `branch` strongest incoming edges.
    A node met again is listed, marked repeated, and not expanded twice. An error node is
    listed where it ranks but not expanded: it sums every position of its depth, and a
    path through it says nothing about which feature carried what (its inputs are in the
    JSON and the HTML page)."""
    if branch < 1:
        raise ValueError(f"--branch must be at least 1, got {branch}")
    expanded: set[str] = set()

    def grow(node: Node, weight: float | None) -> TreeItem:
        if node.id in expanded:
            return TreeItem(node, weight, repeated=True)
        expanded.add(node.id)
        item = TreeItem(node, weight)
        if node.kind == "error":
            return item
        for edge in circuit.incoming(node.id)[:branch]:
            item.children.append(grow(circuit.node(edge.src), edge.weight))
        return item

    return grow(circuit.node(OUTPUT), None)


def tree_line(circuit: Circuit, item: TreeItem) -> str:
    """The text of one tree row: the edge weight, then the node."""
    text = describe(circuit, item.node)
    if item.weight is not None:
        text = f"{item.weight:+.3f}  {text}"
    return text + ("  (above)" if item.repeated and item.node.kind != "token" else "")


def summary(circuit: Circuit) -> list[str]:
    """One line per stage: the nodes pruning kept, the share of |attribution| they carry."""
    lines = []
    for s in circuit.stages:
        signed = f"Σ effect {s.kept_effect:+.3g} of {s.total:+.3g}"
        if s.layer is None:
            lines.append(
                f"tokens: {s.kept} of {s.candidates} kept, carry {s.explained:.0%} of the "
                f"tokens' |attribution| ({signed})"
            )
        else:
            lines.append(
                f"L{s.layer}: {s.kept} of {s.candidates} active latents kept, carry "
                f"{s.explained:.0%} of the depth's |attribution|, the SAE error "
                f"{s.error_share:.0%} ({signed})"
            )
    return lines
