"""Views of one token of the last generation: a feature's activation per token, why a
token was said (steer.app.why) and its feature circuit (steer.app.circuits), with a
circuit node turned into a lever. A mixin of PlaygroundEngine (steer.app.engine)."""

from __future__ import annotations

import torch

from steer.steering import Intervention
from steer.steering.generate import feature_activations

from .views import TokenActs, TokenView


class TokenViewsMixin:
    """Needs the engine's lm, sae, last, _lock, check_latent, label, max_act, token_text
    and add_feature."""

    def _feature_acts(self, token_ids: list[int], latent: int) -> list[float]:
        ids = torch.tensor(token_ids, dtype=torch.long, device=self.lm.device)
        return feature_activations(self.lm, self.sae, ids, [latent])[:, 0].float().tolist()

    def token_activations(self, latent: int) -> TokenView:
        """Per-token activations of `latent` on the last prompt and both completions.

        Each text is read by the unsteered model (so a clamped feature shows how much the
        steered text itself evokes it, not the clamp value)."""
        latent = self.check_latent(latent)
        gen = self.last
        if gen is None:
            raise ValueError(
                "generate something first: the per-token view reads the last prompt and completions"
            )
        n_prompt = len(gen.prompt_ids)
        rows = []
        with self._lock, torch.inference_mode():
            for ids in gen.token_ids:
                rows.append(self._feature_acts(gen.prompt_ids + ids, latent))
        prompt = TokenActs([self.token_text(t) for t in gen.prompt_ids], rows[0][:n_prompt])
        views = [
            TokenActs([self.token_text(t) for t in ids], acts[n_prompt:])
            for ids, acts in zip(gen.token_ids, rows, strict=True)
        ]
        observed = max([abs(a) for acts in rows for a in acts] or [0.0])
        scale = self.max_act(latent) or observed or 1.0
        return TokenView(
            latent,
            self.label(latent),
            prompt,
            views[0],
            views[1] if len(views) > 1 else None,
            max(scale, 1e-6),
        )

    # ------------------------------------------------------------ why this token?
    def explain_token(self, row: int, index: int, top: int = 8):
        """The latents that caused token `index` of the last completion `row` (0 baseline,
        1 steered), checked by ablation, with the tokens driving each (steer.app.why)."""
        from .why import explain_token

        with self._lock:
            return explain_token(self, row, index, top)

    # ------------------------------------------------------------ the circuit of a token
    def circuit_token(self, row: int, index: int, nodes: int = 6):
        """The feature circuit behind token `index` of the last completion `row`, through
        the loaded SAE and its siblings at other depths (steer.app.circuits)."""
        from .circuits import DepthSAEs, circuit_for_token

        with self._lock:
            if getattr(self, "_depth_saes", None) is None:
                self._depth_saes = DepthSAEs()
            return circuit_for_token(self, self._depth_saes, row, index, nodes)

    def circuit_lever(self, layer: int, latent: int, mode: str = "ablate"):
        """A latent node of a circuit as a lever: (the lever, whether the SAE was switched
        to the node's depth first)."""
        from .circuits import circuit_lever

        with self._lock:
            return circuit_lever(self, layer, latent, mode)

    def ablate_lever(self, latent: int) -> Intervention:
        """Make `latent` an active ablation lever (added, or switched to ablate and on)."""
        feature = self.add_feature(latent, mode="ablate")
        feature.mode, feature.enabled = "ablate", True
        return feature
