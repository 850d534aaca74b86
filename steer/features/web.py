"""The feature web: each feature of a family linked to its parent one level narrower.

A family is a list of levels, narrowest first: the prefixes of one Matryoshka SAE
(`DIR@1152`, `DIR@2304`, ...) or independent SAEs of growing width on one hook point. For
every feature c that a level adds (for independent widths: all of its features; for a
Matryoshka level: the latents past the previous prefix, the others are the same features)
and every feature p of the level below, two measures:

- decoder similarity: cos(W_dec[c], W_dec[p]) over unit decoder rows;
- co-activation: P(p fires | c fires), each level's SAE encoding the same corpus tokens.
  A child should mostly fire when its parent fires (GUIDE.md §10).

c's parent is its nearest decoder row in the level below; `linked` when co-activation
names the same parent and both measures clear their thresholds (COS_MIN, P_MIN). Stored as
`web.json` in the SAE folder, beside its catalog/.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from sae import TopKSAE
from sae.matryoshka import matryoshka_levels, prefix_path, split_prefix
from sae.model import atomic_write

from .family import family_members

WEB_FILE = "web.json"
COS_MIN = 0.5  # decoder cosine a parent must reach to count as one
P_MIN = 0.5  # P(parent fires | child fires) likewise
TREE_COS_MIN = 0.3  # weaker decoder links still place a feature under a parent in the tree


@dataclass
class Level:
    name: str  # e.g. "2304-k32" or "9216-k32@2304"
    path: str  # what TopKSAE.load opens
    n_latents: int
    new_from: int  # first latent this level adds (0: independent; previous m: Matryoshka)


@dataclass
class FeatureWeb:
    levels: list[Level]
    matryoshka: bool
    tokens: int
    freq: list[Tensor]  # per level (n_j,) firing frequency on the web's tokens
    labels: list[list[str]]  # per level, "" when there is no catalog
    # per level j >= 1, over the latents it adds (n_j - new_from_j,):
    parent: list[Tensor] = field(default_factory=list)  # nearest decoder row in level j-1
    cos: list[Tensor] = field(default_factory=list)
    p_parent: list[Tensor] = field(default_factory=list)  # P(parent fires | child fires)
    coact_parent: list[Tensor] = field(default_factory=list)  # argmax_p P(p | c)
    coact_p: list[Tensor] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ queries
    def linked(self, j: int) -> Tensor:
        """(n_new_j,) bool: a parent by both measures (the same parent, both above threshold)."""
        return (
            (self.parent[j] == self.coact_parent[j])
            & (self.cos[j] >= COS_MIN)
            & (self.p_parent[j] >= P_MIN)
        )

    def home(self, j: int, i: int) -> tuple[int, int]:
        """The node of latent i of level j: a Matryoshka latent lives at the level adding it."""
        if self.matryoshka:
            j = next(lv for lv in range(len(self.levels)) if i < self.levels[lv].n_latents)
        return j, i

    def parent_of(self, j: int, i: int) -> tuple[int, int] | None:
        """The tree parent (level, latent) of node (j, i), or None for a root."""
        j, i = self.home(j, i)
        if j == 0:
            return None
        row = i - self.levels[j].new_from
        if float(self.cos[j][row]) < TREE_COS_MIN:
            return None
        return self.home(j - 1, int(self.parent[j][row]))

    def children(self) -> dict[tuple[int, int], list[tuple[int, int]]]:
        """(level, latent) -> its children's nodes, nearest decoder row first."""
        out: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for j in range(1, len(self.levels)):
            start = self.levels[j].new_from
            order = self.cos[j].argsort(descending=True).tolist()
            for row in order:
                up = self.parent_of(j, start + row)
                if up is not None:
                    out.setdefault(up, []).append((j, start + row))
        return out

    def roots(self) -> list[tuple[int, int]]:
        """Nodes without a parent, broadest first: level 0 by frequency, then orphans."""
        nodes = [(0, int(i)) for i in self.freq[0].argsort(descending=True).tolist()]
        for j in range(1, len(self.levels)):
            start = self.levels[j].new_from
            for row in (self.cos[j] < TREE_COS_MIN).nonzero().flatten().tolist():
                nodes.append((j, start + row))
        return nodes

    def node(self, j: int, i: int) -> dict:
        return {"level": j, "latent": i, "label": self.labels[j][i], "freq": float(self.freq[j][i])}

    def summary(self) -> list[dict]:
        """Per level: how many added features have a parent by each measure and by both."""
        rows = []
        for j, level in enumerate(self.levels):
            row = {"level": level.name, "n_latents": level.n_latents}
            if j:
                n = len(self.cos[j])
                row |= {
                    "children": n,
                    "parent_by_cos": float((self.cos[j] >= COS_MIN).float().mean()),
                    "parent_by_coact": float((self.coact_p[j] >= P_MIN).float().mean()),
                    "parent_by_both": float(self.linked(j).float().mean()) if n else 0.0,
                }
            rows.append(row)
        return rows

    # ------------------------------------------------------------------ storage
    def to_json(self) -> dict:
        def r(t: Tensor) -> list[float]:
            return [round(float(v), 4) for v in t.tolist()]

        links = [
            {
                "parent": self.parent[j].tolist(),
                "cos": r(self.cos[j]),
                "p_parent": r(self.p_parent[j]),
                "coact_parent": self.coact_parent[j].tolist(),
                "coact_p": r(self.coact_p[j]),
            }
            for j in range(1, len(self.levels))
        ]
        return {
            "version": 1,
            "matryoshka": self.matryoshka,
            "tokens": self.tokens,
            "thresholds": {"cos": COS_MIN, "p": P_MIN, "tree_cos": TREE_COS_MIN},
            "levels": [vars(lv) for lv in self.levels],
            "freq": [[float(f"{v:.4g}") for v in f.tolist()] for f in self.freq],
            "labels": self.labels,
            "links": links,
            "summary": self.summary(),
            "meta": self.meta,
        }

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / WEB_FILE
        text = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FeatureWeb:
        path = Path(folder) / WEB_FILE if Path(folder).is_dir() else Path(folder)
        try:
            data = json.loads(path.read_text())
            levels = [Level(**lv) for lv in data["levels"]]
            links = data["links"]
            web = cls(
                levels=levels,
                matryoshka=bool(data["matryoshka"]),
                tokens=int(data["tokens"]),
                freq=[torch.tensor(f) for f in data["freq"]],
                labels=data["labels"],
                meta=data.get("meta", {}),
            )
            for name in ("parent", "coact_parent"):
                getattr(web, name).extend([torch.zeros(0, dtype=torch.long)])
                getattr(web, name).extend(torch.tensor(lk[name], dtype=torch.long) for lk in links)
            for name in ("cos", "p_parent", "coact_p"):
                getattr(web, name).extend([torch.zeros(0)])
                getattr(web, name).extend(torch.tensor(lk[name]) for lk in links)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"cannot read the feature web {path}: {err}") from None
        return web


def web_exists(folder: str | Path) -> bool:
    return (Path(folder) / WEB_FILE).is_file()


def find_web(sae_dir: str | Path) -> Path | None:
    """The web.json for an SAE: in its folder, else in a family member's folder."""
    folder, _ = split_prefix(sae_dir)
    if web_exists(folder):
        return folder / WEB_FILE
    try:
        members = family_members(folder)
    except (OSError, ValueError):
        return None
    return next((m / WEB_FILE for m in members if web_exists(m)), None)


def family_levels(sae_dir: str | Path) -> list[Level]:
    """The levels of the family `sae_dir` names: a Matryoshka SAE's prefixes, else the
    independent widths beside it on the same hook point (narrowest first)."""
    folder, _ = split_prefix(Path(sae_dir).expanduser())
    if not (folder / "cfg.json").is_file():
        raise ValueError(f"no SAE checkpoint at {folder} (cfg.json is missing)")
    levels = matryoshka_levels(folder)
    if levels:
        out, prev = [], 0
        for m in levels:
            path = prefix_path(folder, m) if m != levels[-1] else str(folder)
            out.append(Level(f"{folder.name}@{m}", path, m, prev))
            prev = m
        return out
    members = family_members(folder)
    if len(members) < 2:
        raise ValueError(
            f"{folder} is neither a Matryoshka SAE nor one of a family of widths "
            "(no other SAE on its hook point beside it): a web needs two levels"
        )
    widths = [json.loads((m / "cfg.json").read_text())["n_latents"] for m in members]
    return [Level(m.name, str(m), n, 0) for m, n in zip(members, widths, strict=True)]


@torch.no_grad()
def build_web(
    levels: list[Level],
    saes: list[TopKSAE],
    batches: Iterable[Tensor],
    labels: list[list[str]] | None = None,
    max_tokens: int | None = None,
) -> FeatureWeb:
    """Link the levels' features by decoder cosine and co-activation on `batches` (raw
    activations (N, d)); each level's SAE encodes every token."""
    if len(levels) != len(saes) or len(levels) < 2:
        raise ValueError("a web needs two or more levels, one SAE each")
    matryoshka = any(lv.new_from for lv in levels)
    fires = [torch.zeros(s.n_latents) for s in saes]
    # joint[j][c - new_from_j, p]: tokens on which child c (level j) and p (level j-1) fire
    joint = [None] + [
        torch.zeros(lv.n_latents - lv.new_from, levels[j - 1].n_latents)
        for j, lv in enumerate(levels)
        if j
    ]
    tokens = 0
    for x in batches:
        if max_tokens is not None and tokens >= max_tokens:
            break
        if max_tokens is not None:
            x = x[: max_tokens - tokens]
        tokens += len(x)
        codes = []
        for sae, count in zip(saes, fires, strict=True):
            acts, idx = sae.encode(x.to(sae.device))  # (N, k)
            on = (acts > 0).float().cpu()
            idx = idx.cpu()
            count.index_add_(0, idx.reshape(-1), on.reshape(-1))
            codes.append((idx, on))
        for j in range(1, len(levels)):
            _add_pairs(joint[j], codes[j], codes[j - 1], levels[j].new_from)
    if tokens == 0:
        raise ValueError("no activations to build the web from")
    web = FeatureWeb(
        levels=levels,
        matryoshka=matryoshka,
        tokens=tokens,
        freq=[f / tokens for f in fires],
        labels=labels or [[""] * lv.n_latents for lv in levels],
    )
    for name in ("parent", "cos", "p_parent", "coact_parent", "coact_p"):
        getattr(web, name).append(torch.zeros(0))
    for j in range(1, len(levels)):
        _link_level(web, j, saes[j - 1], saes[j], joint[j], fires[j][levels[j].new_from :])
    return web


def _add_pairs(joint: Tensor, child: tuple, parent: tuple, new_from: int) -> None:
    """joint[c - new_from, p] += 1 for every token where c and p both fire."""
    c_idx, c_on = child  # (N, k)
    p_idx, p_on = parent
    n_par = joint.shape[1]
    keep = c_on * (c_idx >= new_from)  # only the latents the child level adds
    keys = (c_idx - new_from).clamp_min(0)[:, :, None] * n_par + p_idx[:, None, :]  # (N, k, k)
    weights = keep[:, :, None] * p_on[:, None, :]
    joint.view(-1).index_add_(0, keys.reshape(-1), weights.reshape(-1))


def _link_level(web: FeatureWeb, j: int, narrow: TopKSAE, wide: TopKSAE, joint, child_fires):
    start = web.levels[j].new_from
    par_dec = _unit(narrow.W_dec.detach().float().cpu())  # (n_p, d)
    child_dec = _unit(wide.W_dec.detach().float().cpu()[start:])  # (n_c, d)
    best_cos, best = [], []
    for chunk in child_dec.split(2048):
        sims = chunk @ par_dec.T  # (chunk, n_p)
        value, index = sims.max(dim=1)
        best_cos.append(value)
        best.append(index)
    parent, cos = torch.cat(best), torch.cat(best_cos)
    cond = joint / child_fires.clamp_min(1)[:, None]  # (n_c, n_p) P(p fires | c fires)
    coact_p, coact_parent = cond.max(dim=1)
    web.parent.append(parent)
    web.cos.append(cos)
    web.p_parent.append(cond.gather(1, parent[:, None]).squeeze(1))
    web.coact_parent.append(coact_parent)
    web.coact_p.append(coact_p)


def _unit(w: Tensor) -> Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)
