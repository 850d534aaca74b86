"""A feature catalog's top contexts as N2G fit data, and N2G for a whole catalog.

The catalog stores each latent's top activating contexts as windows of catalog token
ids (a compact vocabulary of token byte strings, see steer.features.catalog) with the
latent's activation on every token. N2G fits from model token ids, so the windows are
mapped back through the tokenizer's own byte strings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from sae import TopKSAE
from steer.features.catalog import FeatureCatalog, token_bytes
from steer.lm.models import LoadedModel

from .heldout import fit_and_score, sae_codes_many
from .n2g import FIRE_FRACTION, Examples, Patterns, Scores


def catalog_to_model_ids(catalog: FeatureCatalog, tokenizer) -> Tensor:
    """(len(pieces),) the model token id of each catalog token id (-1: not in the vocabulary)."""
    vocab = len(tokenizer)
    by_bytes: dict[bytes, int] = {}
    for i, piece in enumerate(token_bytes(tokenizer, list(range(vocab)))):
        by_bytes.setdefault(piece, i)  # the first id spelling these bytes
    return torch.tensor(
        [by_bytes.get(p.encode("latin-1"), -1) for p in catalog.pieces], dtype=torch.long
    )


def catalog_examples(
    catalog: FeatureCatalog, tokenizer, fraction: float = FIRE_FRACTION
) -> Examples:
    """Every latent's top-context windows, in model token ids, with where it fires."""
    to_model = catalog_to_model_ids(catalog, tokenizer)
    t = catalog.tensors
    n, C, W = t["ctx_tokens"].shape
    live = t["ctx_values"] > 0  # (n, C) slots holding a context
    tokens = t["ctx_tokens"].long()  # (n, C, W)
    tokens = torch.where(tokens >= 0, to_model[tokens.clamp(min=0)], -1)
    thresholds = fraction * catalog.max_acts.float()  # (n,)
    fires = (t["ctx_acts"].float() >= thresholds[:, None, None]) & (t["ctx_acts"].float() > 0)
    latent = torch.arange(n)[:, None].expand(n, C)
    valid = tokens >= 0
    valid[:, :, :2] = False  # the tokens before these are not stored
    return Examples(latent[live], tokens[live], fires[live] & valid[live], valid[live])


def explain_catalog(
    lm: LoadedModel,
    sae: TopKSAE,
    catalog: FeatureCatalog,
    source,
    n_tokens: int = 100_000,
    *,
    fraction: float = FIRE_FRACTION,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> tuple[Patterns, Scores]:
    """N2G patterns of every latent of `catalog`, fitted on its top contexts and half of
    n_tokens of held-out `source`, scored on the other half. A latent fires at
    `fraction` of its max activation in the catalog."""
    return explain_catalogs(
        lm, [sae], [catalog], source, n_tokens, fraction=fraction, progress=progress, **options
    )[0]


def explain_catalogs(
    lm: LoadedModel,
    saes: list[TopKSAE],
    catalogs: list[FeatureCatalog],
    source,
    n_tokens: int = 100_000,
    *,
    fraction: float = FIRE_FRACTION,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> list[tuple[Patterns, Scores]]:
    """`explain_catalog` for SAEs at one hook point (a family), from one model pass."""
    for sae, catalog in zip(saes, catalogs, strict=True):
        if not catalog.matches(sae):
            raise ValueError("a catalog was built for another SAE: rebuild it with `steer index`")
    all_codes = sae_codes_many(lm, saes, source, n_tokens, progress=progress, **options)
    out = []
    for codes, catalog in zip(all_codes, catalogs, strict=True):
        examples = catalog_examples(catalog, lm.tokenizer, fraction)
        out.append(fit_and_score(codes, catalog.max_acts, fraction=fraction, examples=examples))
    return out
