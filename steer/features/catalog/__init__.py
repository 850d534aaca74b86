"""The feature catalog: per-latent statistics, top contexts, logit lens, labels and search,
stored beside each SAE in `catalog/`.

store.py (the FeatureCatalog), files.py (its on-disk format), entries.py (the records it
hands out), token_text.py (token bytes), query.py (search by a query: FTS5 index, substring
fallback), build.py (indexing a corpus), lens.py (logit lens), output.py (output scores),
labels.py (short labels), search.py (the latents firing on a text).
"""

from .build import build_catalog
from .labels import make_label
from .lens import logit_lens
from .search import latents_for_text
from .store import (
    CATALOG_DIR,
    CatalogMismatch,
    ContextExample,
    FeatureCatalog,
    FeatureEntry,
    catalog_dir,
    decode_pieces,
    sae_fingerprint,
    token_bytes,
)

__all__ = [
    "CATALOG_DIR",
    "CatalogMismatch",
    "ContextExample",
    "FeatureCatalog",
    "FeatureEntry",
    "build_catalog",
    "catalog_dir",
    "decode_pieces",
    "latents_for_text",
    "logit_lens",
    "make_label",
    "sae_fingerprint",
    "token_bytes",
]
