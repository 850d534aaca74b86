"""A circuit as one self-contained HTML page: an inline SVG drawn here, one column per
stage (tokens, each depth, the output), edges as curves whose width is |weight| (blue
raises the metric, red lowers it), the weight written on the strong ones and in every
edge's tooltip. A few lines of inline script highlight a node's edges on hover. Nothing
is fetched at view time."""

from __future__ import annotations

import html
from pathlib import Path

from sae.model import atomic_write

from .circuit import Circuit, Node
from .circuit_view import describe, metric_text, summary

COL_W, COL_GAP, BOX_H, ROW_GAP, TOP = 230, 120, 44, 12, 40

_PAGE_STYLE = "body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222}"
_STYLE = """
svg text{font-size:11px;fill:#222}svg .sub{fill:#666;font-size:10px}
svg .hd{font-weight:bold;font-size:12px}svg rect{stroke:#888;stroke-width:1}
svg .token rect{fill:#e6f4fb}svg .latent rect{fill:#fff}svg .error rect{fill:#fdf3d8}
svg .output rect{fill:#e3f5e3}svg path{fill:none;opacity:.55}svg .ew{font-size:9px;fill:#333;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg g.dim{opacity:.15}svg path.dim{opacity:.05}svg path.hi{opacity:.95}
"""

_SCRIPT = """
const edges=[...document.querySelectorAll('path[data-s]')];
document.querySelectorAll('g[data-id]').forEach(g=>{
 g.addEventListener('mouseenter',()=>{const id=g.dataset.id;const near=new Set([id]);
  edges.forEach(e=>{const on=e.dataset.s===id||e.dataset.d===id;e.classList.toggle('hi',on);
   e.classList.toggle('dim',!on);if(on){near.add(e.dataset.s);near.add(e.dataset.d);}});
  document.querySelectorAll('g[data-id]').forEach(o=>o.classList.toggle('dim',!near.has(o.dataset.id)));});
 g.addEventListener('mouseleave',()=>{edges.forEach(e=>e.classList.remove('hi','dim'));
  document.querySelectorAll('g[data-id]').forEach(o=>o.classList.remove('dim'));});});
"""


def _columns(circuit: Circuit) -> list[tuple[str, list[Node]]]:
    cols = [("tokens", [n for n in circuit.nodes if n.kind == "token"])]
    for layer in circuit.layers:
        here = [n for n in circuit.nodes if n.layer == layer]
        here.sort(key=lambda n: (n.kind == "error", n.pos or 0, -abs(n.effect)))
        cols.append((f"resid_post.{layer}", here))
    cols.append(("output", [n for n in circuit.nodes if n.kind == "output"]))
    return cols


def _box_text(circuit: Circuit, node: Node) -> tuple[str, str]:
    """Two short lines for a node's box."""
    if node.kind == "token":
        return f"{node.token!r} @{node.pos}", f"effect {node.effect:+.3g}"
    if node.kind == "error":
        return f"L{node.layer} SAE error", f"effect {node.effect:+.3g}"
    if node.kind == "output":
        return metric_text(circuit), f"= {node.effect:.3g}"
    head = f"#{node.feature} {node.token!r}@{node.pos} {node.effect:+.3g}"
    return head, node.label or f"act {node.activation:.3g}"


def _clip(text: str, n: int = 34) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def render_svg(circuit: Circuit) -> str:
    cols = _columns(circuit)
    place: dict[str, tuple[float, float]] = {}
    tallest = max(len(nodes) for _, nodes in cols)
    height = TOP + tallest * (BOX_H + ROW_GAP) + 20
    width = len(cols) * COL_W + (len(cols) - 1) * COL_GAP
    boxes, heads = [], []
    for c, (name, nodes) in enumerate(cols):
        x = c * (COL_W + COL_GAP)
        offset = (tallest - len(nodes)) * (BOX_H + ROW_GAP) / 2
        heads.append(f"<text class='hd' x='{x}' y='20'>{html.escape(name)}</text>")
        for r, node in enumerate(nodes):
            y = TOP + offset + r * (BOX_H + ROW_GAP)
            place[node.id] = (x, y)
            top, sub = _box_text(circuit, node)
            boxes.append(
                f"<g class='{node.kind}' data-id='{html.escape(node.id)}'>"
                f"<title>{html.escape(describe(circuit, node))}</title>"
                f"<rect x='{x}' y='{y:.1f}' width='{COL_W}' height='{BOX_H}' rx='5'/>"
                f"<text x='{x + 6}' y='{y + 17:.1f}'>{html.escape(_clip(top))}</text>"
                f"<text class='sub' x='{x + 6}' y='{y + 33:.1f}'>{html.escape(_clip(sub, 40))}</text></g>"
            )
    return (
        f"<svg width='{width}' height='{height:.0f}' viewBox='0 0 {width} {height:.0f}'>"
        + f"<style>{_STYLE}</style>"  # inside: the drawing stands alone when cut out
        + "".join(_edges(circuit, place))
        + "".join(heads)
        + "".join(boxes)
        + "</svg>"
    )


def _edges(circuit: Circuit, place: dict) -> list[str]:
    strongest = max((abs(e.weight) for e in circuit.edges), default=0.0) or 1.0
    out = []
    for e in sorted(circuit.edges, key=lambda e: abs(e.weight)):
        if e.src not in place or e.dst not in place:
            continue
        (x0, y0), (x1, y1) = place[e.src], place[e.dst]
        x0, y0, x1, y1 = x0 + COL_W, y0 + BOX_H / 2, x1, y1 + BOX_H / 2
        share = abs(e.weight) / strongest
        colour = "#2563eb" if e.weight > 0 else "#dc2626"
        mid = (x0 + x1) / 2
        tip = f"{e.src} → {e.dst}: {e.weight:+.4g}"
        out.append(
            f"<path data-s='{html.escape(e.src)}' data-d='{html.escape(e.dst)}' "
            f"d='M{x0},{y0:.1f} C{mid},{y0:.1f} {mid},{y1:.1f} {x1},{y1:.1f}' "
            f"stroke='{colour}' stroke-width='{0.5 + 6 * share:.2f}'>"
            f"<title>{html.escape(tip)}</title></path>"
        )
        if share >= 0.3:  # the strong ones, at the curve's middle
            tx, ty = mid - 10, (y0 + y1) / 2 - 2
            out.append(f"<text class='ew' x='{tx:.1f}' y='{ty:.1f}'>{e.weight:+.2g}</text>")
    return out


def render_html(circuit: Circuit, title: str = "feature circuit") -> str:
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary(circuit))
    context = html.escape("".join(circuit.tokens))
    return "".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p><code>{context}</code> → <b>{html.escape(repr(circuit.target_text))}</b>; "
            f"metric {html.escape(metric_text(circuit))} = {circuit.metric:.4g}</p>",
            f"<ul>{lines}</ul>",
            "<p>Edge width: |effect on the metric through the downstream node| (blue raises it, "
            "red lowers it). Hover a node to see its edges; hover an edge for its weight.</p>",
            render_svg(circuit),
            f"<script>{_SCRIPT}</script></body></html>",
        ]
    )


def write_html(circuit: Circuit, path: str | Path, title: str = "feature circuit") -> Path:
    path = Path(path)
    text = render_html(circuit, title)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
