"""Explanations stored beside a feature catalog, and the labels and texts made from them.

Files in `<sae>/catalog/` (absent in older catalogs, which load as before):
  explanations.safetensors  N2G pattern rows (P, 4), their fit hits and matches, and per
                            latent the held-out precision, recall, hits, matches, fires
  explanations.json         how they were made (corpus, tokens, firing fraction, means),
                            the text of every token the patterns use, and the LM
                            explanations: per latent a list of {explainer, text, score}

The label a catalog shows for a latent is, in order: the best LM explanation when its
detection score (balanced accuracy) is at least LM_LABEL_SCORE; else the N2G pattern when
its held-out precision is at least N2G_LABEL_PRECISION; else the catalog's own label
(top tokens -> logit lens). The logit-lens part of the catalog's label is kept after " → ".
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sae import atomic_write

from .n2g import ANY, START, Patterns, Scores

TENSORS_FILE = "explanations.safetensors"
META_FILE = "explanations.json"
LM_LABEL_SCORE = 0.75
N2G_LABEL_PRECISION = 0.5


@dataclass
class LMExplanation:
    explainer: str
    """The model that wrote it."""
    text: str
    score: float | None = None
    """Detection score: balanced accuracy of the scorer's yes/no calls (0.5 = chance)."""
    n_scored: int = 0
    """How many held-out contexts the score was measured on."""


@dataclass
class Explanation:
    """What a feature's display shows: a text, what made it and how well it scores."""

    text: str
    source: str
    """`n2g` or the explainer's name."""
    score: str
    """The score in words, e.g. `precision 0.92 · recall 0.41`."""
    short: str = ""
    """The score in a few characters, e.g. `P.92 R.41`, `det .81`."""


def _frac(x: float) -> str:
    """0.92 -> `.92`, 1.0 -> `1`, nan -> `–`."""
    if math.isnan(x):
        return "–"
    return "1" if x >= 0.995 else f"{x:.2f}"[1:]


def _short_det(score: float) -> str:
    return f"det {_frac(score)}"


def _show_token(piece: str) -> str:
    text = piece.replace("\n", "⏎")
    return text if len(text) <= 16 else text[:15] + "…"


@dataclass
class Explanations:
    patterns: Patterns | None = None
    scores: Scores | None = None
    pieces: dict[int, str] = field(default_factory=dict)
    """Model token id -> its text, for the tokens the patterns use."""
    meta: dict = field(default_factory=dict)
    lm: dict[int, list[LMExplanation]] = field(default_factory=dict)

    # ------------------------------------------------------------------ N2G
    def set_n2g(self, patterns: Patterns, scores: Scores, tokenizer, **meta) -> None:
        """Store N2G results; tokenizer gives the text of the tokens they use."""
        ids = torch.unique(patterns.rows[:, 1:])
        ids = [int(i) for i in ids if int(i) >= 0]
        self.pieces = {i: tokenizer.decode([i]) for i in ids}
        self.patterns, self.scores = patterns, scores
        p, r = scores.mean()
        self.meta["n2g"] = {**meta, "mean_precision": p, "mean_recall": r}

    def _token(self, t: int) -> str:
        if t == START:
            return "⟨start⟩"
        return '"' + _show_token(self.pieces.get(t, f"#{t}")) + '"'

    def pattern_texts(self, latent: int) -> list[str]:
        """Each pattern as text, best first: `"in" _ " Paris"` (_ = any token)."""
        if self.patterns is None:
            return []
        out = []
        for _, t0, t1, t2 in self.patterns.of(latent).tolist():
            parts = [("_" if t == ANY else self._token(t)) for t in (t2, t1)]
            if t2 == ANY:
                parts = parts[1:] if t1 != ANY else []
            out.append(" ".join([*parts, self._token(t0)]))
        return out

    def n2g_label(self, latent: int) -> str | None:
        """`" Paris" after "in"/"to"` from the patterns of the most hits; None without."""
        if self.patterns is None:
            return None
        rows = self.patterns.of(latent).tolist()
        if not rows:
            return None
        groups: dict[int, list[list[int]]] = {}
        for row in rows:  # rows are best first: groups in order of their best pattern
            groups.setdefault(row[1], []).append(row)
        (t0, first), *rest = groups.items()
        if first[0][2] == ANY and first[0][3] == ANY:  # a token alone
            alone = [t for t, g in groups.items() if g[0][2] == ANY and g[0][3] == ANY]
            return "/".join(self._token(t) for t in alone[:3])
        contexts = []
        for _, _, t1, t2 in first[:2]:
            before = [self.pieces.get(t, "") if t >= 0 else "" for t in (t2, t1)]
            if t2 == ANY:
                text = before[1] if t1 >= 0 else "⟨start⟩"
            elif t1 == ANY:
                text = (before[0] if t2 >= 0 else "⟨start⟩") + " _"
            else:
                text = "".join(before) if t2 >= 0 else "⟨start⟩" + before[1]
            contexts.append('"' + _show_token(text) + '"')
        return f"{self._token(t0)} after {'/'.join(contexts)}"

    def n2g_score(self, latent: int) -> tuple[float, float] | None:
        if self.scores is None:
            return None
        return float(self.scores.precision[latent]), float(self.scores.recall[latent])

    # ------------------------------------------------------------------ LM
    def add_lm(self, latent: int, explanation: LMExplanation) -> None:
        """Add (or replace: same explainer) an LM explanation of a latent."""
        kept = [e for e in self.lm.get(latent, []) if e.explainer != explanation.explainer]
        self.lm[latent] = [*kept, explanation]

    def best_lm(self, latent: int) -> LMExplanation | None:
        scored = [e for e in self.lm.get(latent, []) if e.score is not None]
        if scored:
            return max(scored, key=lambda e: e.score)
        return (self.lm.get(latent) or [None])[0]

    # ------------------------------------------------------------------ what is shown
    def label(self, latent: int, fallback: str) -> str:
        """The label to show (see the module docstring); fallback: the catalog's own."""
        lens = fallback.partition(" → ")[2]
        best = self.best_lm(latent)
        if best is not None and best.score is not None and best.score >= LM_LABEL_SCORE:
            text = best.text
        else:
            score = self.n2g_score(latent)
            pattern = self.n2g_label(latent)
            if pattern is None or score is None or not score[0] >= N2G_LABEL_PRECISION:
                return fallback
            text = pattern
        return f"{text} → {lens}" if lens else text

    def explanation(self, latent: int) -> Explanation | None:
        """The best explanation of a latent with its score, for display."""
        best = self.best_lm(latent)
        if best is not None and best.score is not None and best.score >= LM_LABEL_SCORE:
            return Explanation(
                best.text, best.explainer, f"detection {best.score:.2f}", _short_det(best.score)
            )
        score = self.n2g_score(latent)
        patterns = self.pattern_texts(latent)
        if patterns and score is not None:
            p, r = score
            words = (
                f"precision {p:.2f} · recall {r:.2f}"
                if not math.isnan(p)
                else "no match in held-out text"
            )
            shown = ", ".join(patterns[:4]) + (" …" if len(patterns) > 4 else "")
            short = f"P{_frac(p)} R{_frac(r)}" if not math.isnan(p) else ""
            return Explanation(shown, "n2g", words, short)
        if best is not None:
            det = "unscored" if best.score is None else f"detection {best.score:.2f}"
            short = "" if best.score is None else _short_det(best.score)
            return Explanation(best.text, best.explainer, det, short)
        return None

    def search_text(self, latent: int) -> str:
        """Explanation text for the search index: LM explanations and pattern tokens."""
        parts = [e.text for e in self.lm.get(latent, [])]
        if self.patterns is not None:
            for _, t0, t1, t2 in self.patterns.of(latent).tolist():  # in text order
                parts.append("".join(self.pieces.get(t, "") for t in (t2, t1, t0) if t >= 0))
        return "\n".join(parts)

    # ------------------------------------------------------------------ files
    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / META_FILE).is_file()

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.patterns is not None and self.scores is not None:
            p, s = self.patterns, self.scores
            tensors = {
                "n2g_rows": p.rows.int(),
                "n2g_hits": p.hits.int(),
                "n2g_matches": p.matches.int(),
                "n2g_precision": s.precision.float(),
                "n2g_recall": s.recall.float(),
                "n2g_held_hits": s.hits.int(),
                "n2g_held_matches": s.matches.int(),
                "n2g_fires": s.fires.int(),
            }
            atomic_write(folder / TENSORS_FILE, lambda tmp: save_file(tensors, tmp))
        meta = {
            "version": 1,
            **self.meta,
            "pieces": {str(k): v for k, v in self.pieces.items()},
            "lm": {str(i): [asdict(e) for e in es] for i, es in sorted(self.lm.items())},
        }
        text = json.dumps(meta, ensure_ascii=False)
        atomic_write(folder / META_FILE, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def for_catalog(cls, folder: str | Path, catalog) -> Explanations:
        """The explanations stored for this catalog's SAE, or new empty ones (also when the
        stored ones were made for another SAE or cannot be read)."""
        fingerprint = catalog.meta.get("sae_fingerprint")
        if cls.exists(folder):
            try:
                found = cls.load(folder, catalog.n_latents)
            except ValueError:
                found = None
            if found is not None and found.meta.get("sae_fingerprint") == fingerprint:
                return found
        return cls(meta={"sae_fingerprint": fingerprint})

    @classmethod
    def load(cls, folder: str | Path, n_latents: int) -> Explanations:
        """ValueError when the files are unreadable or do not fit n_latents."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META_FILE).read_text())
            pieces = {int(k): v for k, v in meta.pop("pieces", {}).items()}
            lm = {int(i): [LMExplanation(**e) for e in es] for i, es in meta.pop("lm", {}).items()}
            t = load_file(str(folder / TENSORS_FILE)) if (folder / TENSORS_FILE).is_file() else {}
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ValueError(f"corrupt explanations in {folder}: {err}") from None
        out = cls(pieces=pieces, meta=meta, lm=lm)
        if t:
            if t["n2g_precision"].shape[0] != n_latents:
                raise ValueError(
                    f"the explanations in {folder} are for another SAE: rerun steer index"
                )
            out.patterns = Patterns(
                t["n2g_rows"].long(), t["n2g_hits"].long(), t["n2g_matches"].long(), n_latents
            )
            out.scores = Scores(
                t["n2g_precision"],
                t["n2g_recall"],
                t["n2g_held_hits"].long(),
                t["n2g_held_matches"].long(),
                t["n2g_fires"].long(),
            )
        return out
