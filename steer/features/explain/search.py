"""Ranked feature search: an SQLite FTS5 index (BM25) over what is known of each feature.

One row per latent, five columns: its label (without the logit-lens part after " → "),
its explanations (LM texts and N2G pattern
tokens), the tokens it fires on most (one per top context, so a token it fires on in all
its contexts counts more), its logit-lens tokens, and its top contexts' text. BM25 ranks
with per-column weights (COLUMN_WEIGHTS): a word in the label or an explanation counts
more than the same word somewhere in a context. Words are stemmed (FTS5's porter
tokenizer: "bridges" finds "bridge") and the last word of a query also matches as a
prefix, so a find dialog can search as the user types.

The index is a file beside the catalog (`search.sqlite`), rebuilt when the catalog's
files change (their sizes and times are its stamp); where the folder is read-only it is
built in memory. Building it for 9216 latents takes a few seconds, a query milliseconds.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

INDEX_FILE = "search.sqlite"
COLUMNS = ("label", "explanation", "tokens", "lens", "contexts")
COLUMN_WEIGHTS = (5.0, 4.0, 3.0, 1.0, 1.0)
WORD_RE = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """An FTS5 query for free text: any of its words (each quoted, so no syntax leaks in),
    the last one also as a prefix. None when the text has no word characters."""
    words = WORD_RE.findall(text.lower())
    if not words:
        return None
    *rest, last = words
    return " OR ".join([*(f'"{w}"' for w in rest), f'"{last}"', f'"{last}"*'])


class SearchIndex:
    """A BM25 index of feature documents (one per latent, columns as COLUMNS)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    @classmethod
    def build(cls, docs: Sequence[Sequence[str]], path: str | Path | None = None, stamp: str = ""):
        """Index docs (row i = latent i) into `path` (None: in memory)."""
        target = ":memory:" if path is None else str(path)
        if path is not None:
            Path(path).unlink(missing_ok=True)
        conn = sqlite3.connect(target, check_same_thread=False)
        with conn:
            conn.execute(
                f"CREATE VIRTUAL TABLE features USING fts5({', '.join(COLUMNS)}, "
                "tokenize='porter unicode61 remove_diacritics 2')"
            )
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.executemany(
                f"INSERT INTO features (rowid, {', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",
                ((i, *doc) for i, doc in enumerate(docs)),
            )
            conn.execute("INSERT INTO meta VALUES ('stamp', ?)", (stamp,))
        return cls(conn)

    @classmethod
    def open(
        cls, path: str | Path, stamp: str, docs: Callable[[], Sequence[Sequence[str]]]
    ) -> SearchIndex:
        """The index at `path` if it was built for `stamp`; else (re)build it from docs(),
        in memory when `path` cannot be written."""
        path = Path(path)
        if path.is_file():
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
                row = conn.execute("SELECT value FROM meta WHERE key = 'stamp'").fetchone()
                if row is not None and row[0] == stamp:
                    return cls(conn)
                conn.close()
            except sqlite3.Error:
                pass
        try:
            return cls.build(docs(), path, stamp)
        except (sqlite3.Error, OSError):
            return cls.build(docs(), None, stamp)

    def search(self, query: str, limit: int = 20) -> list[tuple[int, float]]:
        """(latent, relevance) best first; relevance = -BM25 (higher is better)."""
        q = fts_query(query)
        if q is None or limit < 1:
            return []
        weights = ", ".join(str(w) for w in COLUMN_WEIGHTS)
        rows = self.conn.execute(
            f"SELECT rowid, bm25(features, {weights}) AS rank FROM features "
            "WHERE features MATCH ? ORDER BY rank LIMIT ?",
            (q, limit),
        ).fetchall()
        return [(int(i), -float(r)) for i, r in rows]

    def close(self) -> None:
        self.conn.close()


def file_stamp(files: Sequence[Path]) -> str:
    """Sizes and modification times of the files that exist: changes when any is rewritten."""
    parts = []
    for f in files:
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def catalog_documents(catalog, explanation_text: Callable[[int], str] | None = None) -> list[tuple]:
    """One document per latent of a FeatureCatalog, columns as COLUMNS."""
    import numpy as np

    def text(raw: str) -> str:  # pieces hold token bytes as latin-1
        return raw.encode("latin-1").decode("utf-8", "replace")

    table = np.array([*catalog.pieces, ""], dtype=object)  # index -1 -> ""
    t = catalog.tensors
    toks = t["ctx_tokens"].numpy()  # (n, C, W)
    live = (t["ctx_values"] > 0).numpy()  # (n, C)
    words = table[toks]
    peak = table[toks[:, :, catalog.window_before]]  # (n, C) the max tokens
    lens = table[t["lens_top"][:, :5].numpy()]
    docs = []
    for i in range(catalog.n_latents):
        contexts = "\n".join("".join(words[i, c]) for c in range(toks.shape[1]) if live[i, c])
        peaks = " ".join(p for p, ok in zip(peak[i], live[i], strict=True) if ok)
        docs.append(
            (
                catalog.label(i).partition(" → ")[0],  # the logit lens has its own column
                explanation_text(i) if explanation_text is not None else "",
                text(peaks),
                text(" ".join(lens[i])),
                text(contexts),
            )
        )
    return docs
