"""Why a token: attribution from the input through SAE features to the output.

targets.py   what is explained: a token at a position, as a logit or a logit difference
patching.py  feature -> output: attribution patching (one forward, one backward) or
             integrated gradients, per (latent, position), with the SAE error as a node
exact.py     the check: exact effects of ablating latents (steering's ablate) and the error
inputs.py    input -> feature: gradient × embedding (or IG), checked by dropping tokens
"""

from .exact import ablation_effects, error_effect
from .inputs import InputAttribution, drop_effects, input_attribution, input_attributions
from .patching import METHODS, Attribution, LatentScore, attribute, residual_gradient
from .targets import Target, resolve_target, single_token

__all__ = [
    "METHODS",
    "Attribution",
    "InputAttribution",
    "LatentScore",
    "Target",
    "ablation_effects",
    "attribute",
    "drop_effects",
    "error_effect",
    "input_attribution",
    "input_attributions",
    "resolve_target",
    "residual_gradient",
    "single_token",
]
