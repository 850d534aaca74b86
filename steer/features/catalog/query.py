"""Searching the catalog by a query (unlike search.py, which finds the latents firing on a
text): BM25 over the SQLite FTS5 index kept beside the catalog (search.sqlite, see
steer.features.explain.search), and a substring match for queries without word characters.

QuerySearch is a part of FeatureCatalog: it uses the catalog's tensors, token strings,
labels, explanations and entries.
"""

from __future__ import annotations

from .entries import FeatureEntry
from .files import META_FILE, TENSORS_FILE


class QuerySearch:
    """FeatureCatalog's search methods; the index and the search text are built on first use."""

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
