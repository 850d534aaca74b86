"""Search by text: the latents that fire most on a piece of text."""

from __future__ import annotations

import math

import torch

from sae import TopKSAE
from steer.lm.models import LoadedModel
from steer.steering import strength_scales
from steer.steering.readouts import latent_codes, max_over_tokens

from .store import FeatureCatalog


def latents_for_text(
    lm: LoadedModel, sae: TopKSAE, text: str, n: int = 20, catalog: FeatureCatalog | None = None
) -> list[tuple[int, float]]:
    """The latents that fire most on `text` (max over its tokens, the first skipped).

    Without a catalog: (latent, activation), by activation. With one: (latent, relative
    activation), i.e. activation / the latent's max on the corpus (the unit of steering
    strengths), ranked by relative activation x log(1 + 1/frequency): like tf-idf, this
    favours latents specific to the text over dense ones that fire near their max on
    every text.
    """
    if not text or not text.strip():
        raise ValueError("the text is empty")
    ids = lm.tokenizer(text)["input_ids"]
    dense = max_over_tokens(sae, latent_codes(lm, sae, ids)).cpu()  # (n_latents,)
    value, key = dense, dense
    if catalog is not None:
        if catalog.n_latents != sae.n_latents:
            raise ValueError(
                f"the catalog has {catalog.n_latents} latents but the SAE has {sae.n_latents}: rebuild it with `steer index`"
            )
        value = dense / strength_scales(list(range(sae.n_latents)), catalog.max_acts)
        floor = 1.0 / max(int(catalog.meta.get("n_tokens", 0)), 1)
        key = value * torch.log1p(1.0 / catalog.frequency.float().clamp(min=floor))
    order = key.topk(min(n, key.numel())).indices
    return [
        (int(i), float(value[i]))
        for i in order
        if float(key[i]) > 0 and math.isfinite(float(value[i]))
    ]
