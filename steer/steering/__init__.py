"""The levers: interventions on the residual stream and steered generation.

intervention.py  what a lever is (feature, strength, mode, positions) and the hook that applies it
generate.py      baseline and steered completions side by side, token by token
presets.py       levers and settings saved to / read from JSON
readouts.py      which latents fire on a text (the SAE read without editing anything)
"""

from .intervention import (
    MODES,
    POSITIONS,
    Intervention,
    Mode,
    Positions,
    SteeringHook,
    check_latents,
    open_sae,
    parse_feature,
    sae_layer,
    strength_scales,
)

__all__ = [
    "MODES",
    "POSITIONS",
    "Intervention",
    "Mode",
    "Positions",
    "SteeringHook",
    "check_latents",
    "open_sae",
    "parse_feature",
    "sae_layer",
    "strength_scales",
]
