"""The feature web as one self-contained HTML page: a collapsible tree (nested <details>),
broad features at the top, with labels, firing frequencies and both link measures. No
scripts or styles from the network; a few lines of inline script filter by text."""

from __future__ import annotations

import html

from .web import FeatureWeb

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#222}
details{margin-left:1.2em}summary{cursor:pointer}
.lv{display:inline-block;min-width:7.5em;color:#555;font-size:12px}
.f{color:#777;font-size:12px}.m{color:#2a6;font-size:12px}.w{color:#b60;font-size:12px}
.leaf{margin-left:2.35em}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
"""

_SCRIPT = """
function filt(q){q=q.toLowerCase();document.querySelectorAll('#tree>details').forEach(d=>{
const hit=!q||d.textContent.toLowerCase().includes(q);d.style.display=hit?'':'none';
if(q&&hit)d.open=true;});}
"""


def render_html(web: FeatureWeb, title: str = "feature web") -> str:
    children = web.children()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _summary_table(web),
        "<p>Each feature opens onto its children one level wider: the features whose "
        "nearest decoder row in the narrower level is this one. <span class=m>cos</span> is "
        "that decoder cosine, <span class=m>P</span> = P(parent fires | child fires) on "
        f"{web.tokens:,} corpus tokens; <span class=w>weak</span> marks a link below "
        "cos 0.5 or P 0.5.</p>",
        "<input placeholder='filter broad features by text' oninput='filt(this.value)' size=40>",
        "<div id=tree>",
    ]
    for node in web.roots():
        parts.append(_node_html(web, node, children, None))
    parts.append(f"</div><script>{_SCRIPT}</script></body></html>")
    return "".join(parts)


def _summary_table(web: FeatureWeb) -> str:
    rows = [
        "<table><tr><th>level</th><th>latents</th><th>new</th><th>parent by cos</th>"
        "<th>by P</th><th>by both</th></tr>"
    ]
    for row in web.summary():
        cells = [html.escape(row["level"]), f"{row['n_latents']:,}"]
        if "children" in row:
            cells.append(f"{row['children']:,}")
            for key in ("parent_by_cos", "parent_by_coact", "parent_by_both"):
                cells.append(f"{row[key]:.1%}")
        else:
            cells += ["", "", "", ""]
        rows.append("<tr><td>" + "</td><td>".join(cells) + "</td></tr>")
    return "".join(rows) + "</table>"


def _line(web: FeatureWeb, node: tuple[int, int], link: tuple[float, float] | None) -> str:
    j, i = node
    label = web.labels[j][i] or "(no label)"
    text = (
        f"<span class=lv>{html.escape(web.levels[j].name)}</span> #{i} "
        f"<b>{html.escape(label)}</b> <span class=f>{float(web.freq[j][i]):.3%}</span>"
    )
    if link is not None:
        cos, p = link
        cls = "m" if cos >= 0.5 and p >= 0.5 else "w"
        weak = " weak" if cls == "w" else ""
        text += f" <span class={cls}>cos {cos:.2f} · P {p:.2f}{weak}</span>"
    return text


def _node_html(web, node, children, link) -> str:
    kids = children.get(node, [])
    line = _line(web, node, link)
    if not kids:
        return f"<div class=leaf>{line}</div>"
    inner = []
    for kid in kids:
        j, i = kid
        row = i - web.levels[j].new_from
        inner.append(
            _node_html(web, kid, children, (float(web.cos[j][row]), float(web.p_parent[j][row])))
        )
    return f"<details><summary>{line} <span class=f>({len(kids)})</span></summary>{''.join(inner)}</details>"
