"""Dose-response: how a set of levers behaves as its strength grows.

A sweep multiplies the strengths of an expression's terms by each value s on the
strength axis (the expression's own strengths are the unit: `2 #2374 + 0.5 v:dog` at
s = 3 is `6 #2374 + 1.5 v:dog`). One curve scales the whole expression; `per_term` draws
one curve per term, that term alone. Ablations have no strength and stay as they are. At
s = 0 an `add` does nothing, but a clamp clamps to 0 (an ablation), so s = 0 is not
always the baseline: the baseline (no levers) is measured on its own.

At each point, over the prompts (greedy replies, success.py's meters):
    hit rate        share of replies naming a concept word (None without concept words)
    coherent        share of replies the coherence meter passes (coherence.py, with its
                    repetition check)
    hit & coherent  share of replies that do both
    excess CE       mean over prompts of the unsteered model's cross-entropy on the reply
                    minus that on the baseline reply (nats/token)
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from sae import TopKSAE
from steer.lm.models import LoadedModel

from .coherence import MARGIN_NATS
from .generate import build_prompt_ids
from .intervention import Intervention
from .success import coherence, greedy_replies
from .toward import names_concept


@dataclass
class Curve:
    name: str
    terms: list[Intervention]
    """The levers at s = 1."""


@dataclass
class SweepPoint:
    curve: str
    strength: float
    hit_rate: float | None
    coherent_rate: float
    success_rate: float | None
    excess_ce: float
    replies: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    points: list[SweepPoint]
    strengths: list[float]
    prompts: list[str]
    words: list[str]
    baseline_hit_rate: float | None
    baseline_replies: list[str]

    def to_dict(self) -> dict:
        return {
            "strengths": self.strengths,
            "prompts": self.prompts,
            "concept_words": self.words,
            "baseline": {"hit_rate": self.baseline_hit_rate, "replies": self.baseline_replies},
            "points": [dataclasses.asdict(p) for p in self.points],
        }


def scaled(terms: list[Intervention], s: float) -> list[Intervention]:
    """The terms with every strength multiplied by s (ablations unchanged)."""
    return [
        t if t.mode == "ablate" else dataclasses.replace(t, strength=t.strength * s) for t in terms
    ]


def check_strengths(strengths: list[float]) -> list[float]:
    if not strengths:
        raise ValueError("no strengths to sweep")
    if any(s != s or abs(s) == float("inf") for s in strengths):
        raise ValueError("strengths must be finite numbers")
    out = sorted(set(strengths))
    return out


@torch.inference_mode()
def run_sweep(
    lm: LoadedModel,
    sae: TopKSAE,
    curves: list[Curve],
    strengths: list[float],
    prompts: list[str],
    words: list[str] = (),
    n_tokens: int = 40,
    max_acts: Tensor | None = None,
) -> Sweep:
    """Every curve at every strength on every prompt: one generation batch per prompt."""
    strengths = check_strengths(list(strengths))
    if not curves:
        raise ValueError("nothing to sweep: the expression has no terms")
    if not prompts:
        raise ValueError("no prompts to sweep on")
    words = list(words)
    grid = [(c, s) for c in curves for s in strengths]
    rows = [[]] + [scaled(c.terms, s) for c, s in grid]
    replies = []  # per prompt: [baseline, *grid]
    for prompt in prompts:
        ids = build_prompt_ids(lm, prompt)
        replies.append(greedy_replies(lm, sae, ids, rows, n_tokens, max_acts))
    base = [r[0] for r in replies]
    points = []
    for j, (curve, s) in enumerate(grid, start=1):
        mine = [r[j] for r in replies]
        ok = [coherence(m, b).ok for m, b in zip(mine, base, strict=True)]
        hit = [names_concept(m.text, words) for m in mine] if words else None
        points.append(
            SweepPoint(
                curve=curve.name,
                strength=s,
                hit_rate=_share(hit),
                coherent_rate=_share(ok),
                success_rate=_share([h and o for h, o in zip(hit, ok, strict=True)])
                if hit
                else None,
                excess_ce=sum(m.ce - b.ce for m, b in zip(mine, base, strict=True)) / len(base),
                replies=[m.text for m in mine],
            )
        )
    base_hit = _share([names_concept(b.text, words) for b in base]) if words else None
    return Sweep(points, strengths, list(prompts), words, base_hit, [b.text for b in base])


def _share(flags: list[bool] | None) -> float | None:
    return None if flags is None else sum(flags) / len(flags)


# ---------------------------------------------------------------------- files
CSV_FIELDS = ("curve", "strength", "hit_rate", "coherent_rate", "success_rate", "excess_ce")


def write_sweep(sweep: Sweep, out: Path, title: str = "") -> dict[str, Path]:
    """sweep.csv (one row per point), sweep.json (everything, replies included), sweep.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "sweep.csv", "json": out / "sweep.json", "png": out / "sweep.png"}
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for p in sweep.points:
            writer.writerow({k: _cell(getattr(p, k)) for k in CSV_FIELDS})
    paths["json"].write_text(json.dumps(sweep.to_dict(), indent=1, ensure_ascii=False))
    plot_sweep(sweep, paths["png"], title)
    return paths


def _cell(value):
    return "" if value is None else round(value, 4) if isinstance(value, float) else value


def plot_sweep(sweep: Sweep, path: Path, title: str = "") -> None:
    """Left: concept hit rate (solid) and hit & coherent (dashed) per curve; right: the
    excess cross-entropy over the baseline, the coherence bound drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    names = list(dict.fromkeys(p.curve for p in sweep.points))
    for i, name in enumerate(names):
        pts = [p for p in sweep.points if p.curve == name]
        xs = [p.strength for p in pts]
        color = f"C{i % 10}"
        label = name if len(name) <= 32 else name[:31] + "…"  # long expressions
        if sweep.words:
            left.plot(xs, [p.hit_rate for p in pts], "o-", color=color, label=f"{label}: names it")
            left.plot(
                xs,
                [p.success_rate for p in pts],
                "s--",
                color=color,
                label=f"{label}: and coherent",
            )
        else:
            left.plot(
                xs, [p.coherent_rate for p in pts], "o-", color=color, label=f"{label}: coherent"
            )
        right.plot(xs, [p.excess_ce for p in pts], "o-", color=color, label=label)
    if sweep.words and sweep.baseline_hit_rate is not None:
        left.axhline(sweep.baseline_hit_rate, color="grey", ls=":", label="no steering")
    concept = ", ".join(sweep.words)
    left.set(
        xlabel="strength (x the expression's)",
        ylabel=f"share of {len(sweep.prompts)} replies",
        title=f"concept: {concept}" if concept else "coherent replies",
        ylim=(-0.05, 1.05),
    )
    right.axhline(MARGIN_NATS, color="grey", ls=":", label="coherence bound")
    right.set(
        xlabel="strength (x the expression's)",
        ylabel="CE over the baseline reply (nats/token)",
        title="coherence",
    )
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
