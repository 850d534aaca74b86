"""The feature web for the playground: a tree from broad features to their splits, which of
its nodes the loaded SAE can steer with, and search into it. No Textual here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sae.matryoshka import split_prefix
from steer.features.web import FeatureWeb, find_web

Node = tuple[int, int]  # (level, latent)


@dataclass
class NodeView:
    node: Node
    text: str  # "2304-k32 #17 label · 0.41%  cos 0.83 · P 0.92"
    has_children: bool
    lever: int | None  # the loaded SAE's latent for this node, or None (another member's)


class WebView:
    def __init__(self, web: FeatureWeb, sae_path: str | Path, n_latents: int):
        self.web = web
        self._children = web.children()
        self._parents = {kid: up for up, kids in self._children.items() for kid in kids}
        self.loaded = self._loaded_level(Path(sae_path), n_latents)

    @classmethod
    def for_sae(cls, sae_path: str | Path, n_latents: int) -> WebView | None:
        """The web of the loaded SAE's family (built by `steer web`), or None."""
        path = find_web(sae_path)
        return cls(FeatureWeb.load(path), sae_path, n_latents) if path is not None else None

    def _loaded_level(self, sae_path: Path, n_latents: int) -> int | None:
        folder, _ = split_prefix(sae_path)
        for j, level in enumerate(self.web.levels):
            base, _ = split_prefix(level.path)
            if base.resolve() == folder.resolve() and level.n_latents == n_latents:
                return j
        return None

    def lever(self, node: Node) -> int | None:
        """The latent of the loaded SAE this node is, or None."""
        j, i = node
        if self.loaded is None:
            return None
        if self.web.matryoshka:  # every level is a prefix of the same latents
            return i if i < self.web.levels[self.loaded].n_latents else None
        return i if j == self.loaded else None

    def roots(self) -> list[NodeView]:
        return [self.view(node) for node in self.web.roots()]

    def children(self, node: Node) -> list[NodeView]:
        return [self.view(kid) for kid in self._children.get(node, [])]

    def view(self, node: Node) -> NodeView:
        j, i = node
        web = self.web
        text = (
            f"{web.levels[j].name} #{i} {web.labels[j][i] or '(no label)'} · "
            f"{float(web.freq[j][i]):.2%}"
        )
        if node in self._parents:
            row = i - web.levels[j].new_from
            text += f"  cos {float(web.cos[j][row]):.2f} · P {float(web.p_parent[j][row]):.2f}"
        return NodeView(node, text, node in self._children, self.lever(node))

    def path_to(self, node: Node) -> list[Node]:
        """Root ... node: the branch to open to show it."""
        out = [node]
        while out[-1] in self._parents:
            out.append(self._parents[out[-1]])
        return out[::-1]

    def find(self, query: str, limit: int = 20) -> list[Node]:
        """`#123`: that latent of the loaded SAE (else of the widest level); text: nodes whose
        label contains it, broad levels first."""
        query = query.strip()
        if query.startswith("#") and query[1:].isdigit():
            i = int(query[1:])
            j = self.loaded if self.loaded is not None else len(self.web.levels) - 1
            if i >= self.web.levels[j].n_latents:
                return []
            return [self.web.home(j, i)]
        words = query.lower()
        hits: list[Node] = []
        for j, labels in enumerate(self.web.labels):
            start = self.web.levels[j].new_from
            for i in range(start, len(labels)):
                if words and words in labels[i].lower():
                    hits.append((j, i))
                    if len(hits) >= limit:
                        return hits
        return hits
