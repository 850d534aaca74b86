"""The feature catalog's storage: what each SAE latent does, measured on a corpus sample.

Per latent: firing frequency, mean activation (over the tokens where it fires), max
activation, the top activating contexts (a token window around each context's max, with
the latent's activation on every token), logit-lens tokens, and a short label. Built by
build.py, the logit lens in lens.py, labels in labels.py.

Storage, in `<sae folder>/catalog/`: `catalog.safetensors` (statistics, context token ids
and activations, logit-lens token ids) and `catalog.json` (metadata, labels, and the
strings of the token ids used). ~18 MB for 18k latents, loads in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from sae import TopKSAE, atomic_write
from sae.matryoshka import split_prefix
from steer.steering import check_latent

CATALOG_DIR = "catalog"
TENSORS_FILE = "catalog.safetensors"
META_FILE = "catalog.json"
FORMAT_VERSION = 2
BYTE_TOKEN_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


# ---------------------------------------------------------------------- token strings
# Catalog token strings are stored as each token's UTF-8 *bytes* (held in a str through
# latin-1), because byte-level tokenizers split characters: "–" is three tokens, each
# undecodable alone. A window is decoded token by token, a character showing on the
# token that completes it.
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE token spelling)."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def token_bytes(tokenizer, ids: list[int]) -> list[bytes]:
    """The bytes each token stands for (special tokens: their text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    inverse = {c: b for b, c in _byte_to_unicode().items()} if byte_level else {}
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(
        getattr(tokenizer, "added_tokens_decoder", {})
    )
    out = []
    for i, spelled in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
        spelled = spelled or ""
        if i in special:
            out.append(spelled.encode())
        elif byte_level and all(c in inverse for c in spelled):
            out.append(bytes(inverse[c] for c in spelled))
        elif (m := BYTE_TOKEN_RE.match(spelled)) is not None:  # SentencePiece byte fallback
            out.append(bytes([int(m.group(1), 16)]))
        elif "\u2581" in spelled:  # SentencePiece word start
            out.append(spelled.replace("\u2581", " ").encode())
        else:
            out.append(tokenizer.decode([i]).encode())
    return out


def decode_pieces(pieces: list[bytes]) -> list[str]:
    """Per-token text of a token window: a split character shows on its last token."""
    out, pending = [], b""
    for piece in pieces:
        pending += piece
        try:
            out.append(pending.decode("utf-8"))
            pending = b""
        except UnicodeDecodeError as err:
            if err.reason == "unexpected end of data" and len(pending) < 4:
                out.append("")  # wait for the rest of the character
            else:  # a window starting mid-character, or bad bytes
                out.append(pending.decode("utf-8", "replace"))
                pending = b""
    return out


@dataclass
class ContextExample:
    tokens: list[str]
    """The token strings of the window."""
    acts: list[float]
    """The latent's activation on each token."""
    max_pos: int
    """Index in `tokens` of the context's maximum activation."""

    @property
    def max_act(self) -> float:
        return self.acts[self.max_pos]

    @property
    def text(self) -> str:
        return "".join(self.tokens)


@dataclass
class FeatureEntry:
    index: int
    label: str
    frequency: float
    """Fraction of corpus tokens on which the latent is active (in the TopK, > 0)."""
    mean_act: float
    """Mean activation over the tokens where it is active."""
    max_act: float
    top_tokens: list[str]
    """Logit lens: tokens whose logits its decoder direction raises most."""
    bottom_tokens: list[str]
    """Logit lens: tokens whose logits it lowers most."""
    contexts: list[ContextExample] = field(default_factory=list)
    """Top activating contexts, strongest first."""
    explanation: str = ""
    """The best explanation (an LM's phrase or the N2G token patterns), "" if none."""
    explanation_source: str = ""
    """`n2g` or the explainer model's name."""
    explanation_score: str = ""
    """Its score in words: `precision 0.92 · recall 0.41` or `detection 0.81`."""
    output_score: float | None = None
    """Share of the next-token probability its direction moves onto its output tokens
    (output.py); None for a catalog built before output scores."""
    output_tokens: list[str] = field(default_factory=list)
    """The tokens adding its direction makes likelier, most first (measured)."""


# ---------------------------------------------------------------------- the catalog
def catalog_dir(sae_dir: str | Path) -> Path:
    """`<sae>/catalog`; for level m of a Matryoshka SAE (`DIR@m`), `DIR/catalog@m`."""
    folder, prefix = split_prefix(sae_dir)
    return folder / (CATALOG_DIR if prefix is None else f"{CATALOG_DIR}@{prefix}")


def _resolve(folder: str | Path) -> Path:
    """A catalog folder, or an SAE folder holding one in catalog/ (DIR@m: catalog@m)."""
    if split_prefix(folder)[1] is not None:
        return catalog_dir(folder)
    folder = Path(folder)
    if not (folder / META_FILE).is_file() and (folder / CATALOG_DIR / META_FILE).is_file():
        return folder / CATALOG_DIR
    return folder


def sae_fingerprint(sae: TopKSAE) -> str:
    """A short hash of the first decoder rows: tells a catalog built for another SAE."""
    rows = sae.W_dec.detach()[:8].float().cpu().contiguous()
    return hashlib.sha1(rows.numpy().tobytes()).hexdigest()[:16]


class CatalogMismatch(ValueError):
    """A catalog found beside an SAE was built for another SAE (rebuild it with steer index)."""


class FeatureCatalog:
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

    # ------------------------------------------------------------------ search
    def _build_search_text(self) -> list[str]:
        """One lowercase string per latent: its contexts, then its max tokens, tab-separated."""
        import numpy as np

        table = np.array([*self.pieces, ""], dtype=object)  # index -1 -> ""
        toks = self.tensors["ctx_tokens"].numpy()
        n, C, _ = toks.shape
        words = table[toks]  # (n, C, W) latin-1 byte strings
        peak = table[toks[:, :, self.window_before]]  # (n, C) the max tokens
        texts = []
        for i in range(n):
            contexts = "\n".join("".join(words[i, c]) for c in range(C))
            raw = contexts + "\t" + "\n".join(peak[i])
            texts.append(raw.encode("latin-1").decode("utf-8", "replace").lower())
        return texts

    def search(self, query: str, limit: int = 20) -> list[FeatureEntry]:
        """Features ranked by relevance to `query` (BM25 over labels, explanations, the
        tokens they fire on, logit-lens tokens and top contexts: see
        steer.features.explain.search). A query without word characters ("(", "->")
        falls back to a substring match."""
        from steer.features.explain.search import WORD_RE

        if WORD_RE.search(query) is None:
            return self.substring_search(query, limit)
        return [self.entry(i) for i, _ in self.search_index().search(query, limit)]

    def search_index(self):
        """The FTS5 index (built on first use, kept in search.sqlite beside the catalog)."""
        from steer.features.explain.search import (
            INDEX_FILE,
            SearchIndex,
            catalog_documents,
            file_stamp,
        )

        if self._index is None:
            ex = self.explanations
            docs = lambda: catalog_documents(self, ex.search_text if ex else None)  # noqa: E731
            if self.folder is None:
                self._index = SearchIndex.build(docs())
            else:
                names = (META_FILE, TENSORS_FILE, "explanations.json", "explanations.safetensors")
                stamp = file_stamp([self.folder / f for f in names])
                self._index = SearchIndex.open(self.folder / INDEX_FILE, stamp, docs)
        return self._index

    def substring_search(self, query: str, limit: int = 20) -> list[FeatureEntry]:
        """Latents whose label, logit-lens tokens or top contexts contain `query`
        (case-insensitive), best first: label > the activating tokens > logit-lens
        tokens > contexts; ties by max activation."""
        q = query.strip().lower()
        if not q:
            return []
        if self._search_text is None:
            self._search_text = self._build_search_text()
        n_ctx = max(1, self.tensors["ctx_values"].shape[1])
        scored = []
        for i in range(self.n_latents):
            text = self._search_text[i]
            if q not in text and q not in self.label(i).lower():
                lens = "".join(self._strings(self.tensors["lens_top"][i])).lower()
                if q not in lens:
                    continue
            contexts, _, peaks = text.partition("\t")
            lens = " ".join(self._strings(self.tensors["lens_top"][i])).lower()
            score = (
                4.0 * (q in self.label(i).lower())
                + 2.0 * sum(q in p for p in peaks.split("\n")) / n_ctx
                + 1.0 * (q in lens)
                + 1.0 * sum(q in c for c in contexts.split("\n")) / n_ctx
            )
            scored.append((score, float(self.max_acts[i]), i))
        scored.sort(reverse=True)
        return [self.entry(i) for _, _, i in scored[:limit]]

    # ------------------------------------------------------------------ files
    @staticmethod
    def exists(folder: str | Path) -> bool:
        folder = _resolve(folder)
        return (folder / META_FILE).is_file() and (folder / TENSORS_FILE).is_file()

    def save(self, folder: str | Path) -> Path:
        """Write into `folder` (an SAE folder: into its catalog/). Returns the folder."""
        folder = Path(folder)
        if split_prefix(folder)[1] is not None:
            folder = catalog_dir(folder)
        elif (folder / "cfg.json").is_file() and (folder / "sae.safetensors").is_file():
            folder = folder / CATALOG_DIR
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous().cpu() for k, v in self.tensors.items()}
        meta = {
            **self.meta,
            "version": FORMAT_VERSION,
            "labels": self.labels,
            "pieces": self.pieces,
        }
        atomic_write(folder / TENSORS_FILE, lambda tmp: save_file(tensors, tmp))
        atomic_write(
            folder / META_FILE,
            lambda tmp: Path(tmp).write_text(json.dumps(meta, ensure_ascii=False)),
        )
        self.folder, self._index = folder, None
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureCatalog:
        """Load a catalog folder, or the catalog/ of an SAE folder. ValueError if absent or bad."""
        folder = _resolve(folder)
        if not cls.exists(folder):
            raise ValueError(f"no feature catalog in {folder}: build one with `steer index`")
        try:
            meta = json.loads((folder / META_FILE).read_text())
            tensors = load_file(str(folder / TENSORS_FILE))
            labels, pieces = meta.pop("labels"), meta.pop("pieces")
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"corrupt feature catalog in {folder}: {err}") from None
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"feature catalog in {folder} has format {meta.get('version')}, expected {FORMAT_VERSION}: rebuild it"
            )
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
