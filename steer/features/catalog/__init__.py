"""The feature catalog: per-latent statistics, top contexts, logit lens, labels and search,
stored beside each SAE in `catalog/`."""

from .store import (
    CATALOG_DIR,
    ContextExample,
    FeatureCatalog,
    FeatureEntry,
    build_catalog,
    catalog_dir,
    decode_pieces,
    latents_for_text,
    logit_lens,
    make_label,
    sae_fingerprint,
    token_bytes,
)

__all__ = [
    "CATALOG_DIR",
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
