"""The levers: interventions on the residual stream and steered generation.

intervention.py  what a lever is (feature, strength, mode), parsed and checked; open_sae
plan.py          a batch's levers turned into tensors (raw units, clamp masks)
hook.py          the forward hook on block L that applies a plan
generate.py      baseline and steered completions side by side, token by token
presets.py       levers and settings saved to / read from JSON
expr.py          one steering expression (`2.5 #2374 + 0.4 #55:add @generated`): parse, print
terms.py         levers off plan.py's fast path: vectors, set / cap, own positions, gates
vectors.py       saved steering vectors beside the SAE (load_vector)
readouts.py      which latents fire on a text (the SAE read without editing anything)
"""

from .hook import SteeringHook
from .intervention import (
    MODES,
    POSITIONS,
    Intervention,
    Mode,
    Positions,
    check_latent,
    check_latents,
    open_sae,
    parse_feature,
    sae_layer,
)
from .plan import SteeringPlan, strength_scales

__all__ = [
    "MODES",
    "POSITIONS",
    "Intervention",
    "Mode",
    "Positions",
    "SteeringHook",
    "SteeringPlan",
    "check_latent",
    "check_latents",
    "open_sae",
    "parse_feature",
    "sae_layer",
    "strength_scales",
]
