"""The feature catalog: what each SAE latent does, measured on a corpus sample.

Per latent: firing frequency, mean activation (over the tokens where it fires), max
activation, the top activating contexts (a token window around each context's max, with
the latent's activation on every token), logit-lens tokens, and a short label. Built by
build.py, the logit lens in lens.py, labels in labels.py, its files in files.py (~18 MB
for 18k latents, loads in well under a second), search by a query in query.py, token
strings in token_text.py, the records it hands out in entries.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from sae import TopKSAE
from steer.steering import check_latent

from .entries import ContextExample, FeatureEntry
from .files import CATALOG_DIR, catalog_dir, files_exist, read_files, write_files
from .query import QuerySearch
from .token_text import decode_pieces, token_bytes

# Re-exported: this module was the catalog's only one, and callers import these from it.
__all__ = [
    "CATALOG_DIR",
    "CatalogMismatch",
    "ContextExample",
    "FeatureCatalog",
    "FeatureEntry",
    "catalog_dir",
    "decode_pieces",
    "sae_fingerprint",
    "token_bytes",
]


def sae_fingerprint(sae: TopKSAE) -> str:
    """A short hash of the first decoder rows: tells a catalog built for another SAE."""
    rows = sae.W_dec.detach()[:8].float().cpu().contiguous()
    return hashlib.sha1(rows.numpy().tobytes()).hexdigest()[:16]


class CatalogMismatch(ValueError):
    """A catalog found beside an SAE was built for another SAE (rebuild it with steer index)."""


class FeatureCatalog(QuerySearch):
    def __init__(
        self, tensors: dict[str, Tensor], labels: list[str], pieces: list[str], meta: dict
    ):
        """pieces: the bytes of each catalog token id, as latin-1 strings (see token_bytes)."""
        self.tensors = tensors
        self.labels = labels
        self.pieces = pieces
        self.meta = meta
        self._search_text: list[str] | None = None
        self.folder: Path | None = None
        """Where it was loaded from (its search index lives there too)."""
        self.explanations = None
        """steer.features.explain.store.Explanations stored beside it, or None."""
        self._index = None

    # ------------------------------------------------------------------ access
    @property
    def n_latents(self) -> int:
        return self.tensors["max_act"].shape[0]

    @property
    def max_acts(self) -> Tensor:
        return self.tensors["max_act"]

    @property
    def frequency(self) -> Tensor:
        return self.tensors["frequency"]

    @property
    def mean_acts(self) -> Tensor:
        return self.tensors["mean_act"]

    @property
    def output_scores(self) -> Tensor | None:
        """(n,) output scores (output.py), or None: a catalog from before them."""
        return self.tensors.get("output_score")

    def output_table(self) -> tuple[Tensor, Tensor] | None:
        """(token ids (n, K) in the model's vocabulary, their probability rise (n, K)),
        or None without output scores."""
        if "output_ids" not in self.tensors:
            return None
        return self.tensors["output_ids"], self.tensors["output_rise"].float()

    def set_output_scores(self, scores: Tensor, ids: Tensor, rise: Tensor, tokenizer, meta):
        """Store output scores (output.output_scores) with the strings of their tokens."""
        if scores.shape != (self.n_latents,) or ids.shape != rise.shape:
            raise ValueError("output scores do not match the catalog's latents")
        used = sorted(set(ids.flatten().tolist()))
        strings = token_bytes(tokenizer, used)
        self.tensors["output_score"] = scores.float()
        self.tensors["output_ids"] = ids.to(torch.int32)
        self.tensors["output_rise"] = rise.clamp(-1, 1).half()
        self.meta["output"] = {
            **meta,
            "pieces": {str(i): b.decode("latin-1") for i, b in zip(used, strings, strict=True)},
        }

    def _output_strings(self, i: int, n: int = 8) -> list[str]:
        pieces = self.meta.get("output", {}).get("pieces", {})
        ids = self.tensors["output_ids"][i, :n].tolist()
        return [pieces.get(str(t), "").encode("latin-1").decode("utf-8", "replace") for t in ids]

    def by_output_score(
        self, latents: list[int], min_score: float | None = None, sort: bool = False
    ) -> list[int]:
        """`latents` with an output score of at least `min_score`, highest first when
        `sort`. ValueError for a catalog without output scores."""
        scores = self.output_scores
        if scores is None:
            raise ValueError(
                "this catalog has no output scores: add them with `steer index --sae DIR "
                "--output-scores-only`"
            )
        kept = [i for i in latents if min_score is None or float(scores[i]) >= min_score]
        return sorted(kept, key=lambda i: -float(scores[i])) if sort else kept

    @property
    def window_before(self) -> int:
        return int(self.meta.get("window", [16, 4])[0])

    def label(self, i: int) -> str:
        """The best explanation's label when one is good enough (see
        steer.features.explain.store), else the tokens it fires on → its logit lens."""
        self._check(i)
        if self.explanations is not None:
            return self.explanations.label(i, self.labels[i])
        return self.labels[i]

    def set_explanations(self, explanations) -> None:
        """Attach explanations (labels, entries and search use them from now on)."""
        self.explanations = explanations
        self._index = None

    def matches(self, sae: TopKSAE) -> bool:
        """Was this catalog built for this SAE?"""
        return self.n_latents == sae.n_latents and self.meta.get("sae_fingerprint") in (
            None,
            sae_fingerprint(sae),
        )

    def _check(self, i: int) -> None:
        check_latent(i, self.n_latents)

    def _strings(self, ids: Tensor) -> list[str]:
        """Each token's own text (a partial character shows as U+FFFD)."""
        return [
            self.pieces[j].encode("latin-1").decode("utf-8", "replace")
            for j in ids.tolist()
            if j >= 0
        ]

    def _window(self, ids: Tensor) -> list[str]:
        """A window's per-token texts, characters split across tokens kept whole."""
        return decode_pieces([self.pieces[j].encode("latin-1") for j in ids.tolist() if j >= 0])

    def entry(self, i: int) -> FeatureEntry:
        self._check(i)
        t = self.tensors
        contexts = []
        for c in range(t["ctx_values"].shape[1]):
            if float(t["ctx_values"][i, c]) <= 0:
                continue
            toks = t["ctx_tokens"][i, c]  # (W,) -1 = outside the context
            valid = toks >= 0
            left_pad = int((~valid[: self.window_before]).sum())
            contexts.append(
                ContextExample(
                    tokens=self._window(toks),
                    acts=[round(a, 4) for a in t["ctx_acts"][i, c][valid].float().tolist()],
                    max_pos=self.window_before - left_pad,
                )
            )
        shown = self.explanations.explanation(i) if self.explanations is not None else None
        scores = self.output_scores
        return FeatureEntry(
            index=i,
            label=self.label(i),
            frequency=float(t["frequency"][i]),
            mean_act=float(t["mean_act"][i]),
            max_act=float(t["max_act"][i]),
            top_tokens=self._strings(t["lens_top"][i]),
            bottom_tokens=self._strings(t["lens_bottom"][i]),
            contexts=contexts,
            explanation=shown.text if shown else "",
            explanation_source=shown.source if shown else "",
            explanation_score=shown.score if shown else "",
            output_score=None if scores is None else round(float(scores[i]), 4),
            output_tokens=[] if scores is None else self._output_strings(i),
        )

    # ------------------------------------------------------------------ files
    @staticmethod
    def exists(folder: str | Path) -> bool:
        return files_exist(folder)

    def save(self, folder: str | Path) -> Path:
        """Write into `folder` (an SAE folder: into its catalog/). Returns the folder."""
        folder = write_files(folder, self.tensors, self.labels, self.pieces, self.meta)
        self.folder, self._index = folder, None
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureCatalog:
        """Load a catalog folder, or the catalog/ of an SAE folder. ValueError if absent or bad."""
        folder, tensors, labels, pieces, meta = read_files(folder)
        catalog = cls(tensors, labels, pieces, meta)
        catalog.folder = folder
        catalog.load_explanations()
        return catalog

    def load_explanations(self) -> None:
        """Attach the explanations stored beside the catalog, if any were made for its SAE
        (older catalogs have none; unreadable ones are left out, the catalog still works)."""
        from steer.features.explain.store import Explanations

        if self.folder is None or not Explanations.exists(self.folder):
            return
        try:
            found = Explanations.load(self.folder, self.n_latents)
        except ValueError:
            return
        if found.meta.get("sae_fingerprint") in (None, self.meta.get("sae_fingerprint")):
            self.set_explanations(found)

    @classmethod
    def for_sae(cls, sae_dir: str | Path, sae: TopKSAE) -> FeatureCatalog | None:
        """The catalog beside an SAE folder, or None when it has none. Raises
        CatalogMismatch when the catalog was built for another SAE, ValueError when it is
        unreadable: each caller says so in its own way (a CLI note, a playground notice)."""
        if not cls.exists(sae_dir):
            return None
        catalog = cls.load(sae_dir)
        if not catalog.matches(sae):
            raise CatalogMismatch(f"the feature catalog in {sae_dir} was built for another SAE")
        return catalog
