"""The active lever set of the playground: adding, removing (with undo), muting and
editing levers, and the set as one steering expression. A mixin of PlaygroundEngine
(steer.app.engine)."""

from __future__ import annotations

import dataclasses

from steer.steering import MODES, Intervention


class LeverSetMixin:
    """The engine's `features` (one lever per latent) and `removed` (the undo stack); needs
    the engine's sae, sae_path, _lock, check_latent, default_strength, slider_steps and
    _require_sae."""

    # ------------------------------------------------------------ the active feature set
    def feature(self, latent: int) -> Intervention | None:
        return next((f for f in self.features if f.latent == latent), None)

    def add_feature(
        self, latent: int, strength: float | None = None, mode: str = "clamp"
    ) -> Intervention:
        """Add a latent to the active set (or return it if already there)."""
        latent = self.check_latent(latent)
        existing = self.feature(latent)
        if existing is not None:
            return existing
        _check_mode(mode)
        value = self.default_strength(mode) if strength is None else float(strength)
        intervention = Intervention(latent=latent, strength=value, mode=mode, enabled=True)
        self.features.append(intervention)
        return intervention

    def _get(self, latent: int) -> Intervention:
        found = self.feature(latent)
        if found is None:
            raise ValueError(f"feature {latent} is not in the active set")
        return found

    def remove_feature(self, latent: int) -> None:
        feature = self._get(latent)
        self.removed.append((self.features.index(feature), feature))
        self.features.remove(feature)

    def undo_remove(self) -> Intervention:
        """Bring back the last removed feature, where it was, as it was (strength, mode,
        muted or not). ValueError when there is nothing to bring back."""
        while self.removed:
            position, feature = self.removed.pop()
            if self.feature(feature.latent) is None:  # not added again since
                self.features.insert(min(position, len(self.features)), feature)
                return feature
        raise ValueError("no removed feature to bring back")

    def set_strength(self, latent: int, value: float) -> Intervention:
        lo_hi = self.slider_steps()[2]
        self._get(latent).strength = max(-lo_hi, min(lo_hi, float(value)))
        return self._get(latent)

    def toggle(self, latent: int) -> Intervention:
        feature = self._get(latent)
        feature.enabled = not feature.enabled
        return feature

    def set_mode(self, latent: int, mode: str) -> Intervention:
        _check_mode(mode)
        self._get(latent).mode = mode
        return self._get(latent)

    def cycle_mode(self, latent: int) -> Intervention:
        feature = self._get(latent)
        # ctrl+e cycles the three SAE modes; set / cap (from an expression) go back to clamp
        cycle = ("clamp", "add", "ablate")
        now = cycle.index(feature.mode) if feature.mode in cycle else -1
        return self.set_mode(latent, cycle[(now + 1) % len(cycle)])

    def clear_features(self) -> None:
        self.features = []

    # ------------------------------------------------------------ the steering expression
    @property
    def expression(self) -> str:
        """The active set as a steering expression (muted levers with `~`)."""
        from steer.steering.expr import format_steering

        return format_steering(self.features)

    def set_expression(self, text: str) -> list[Intervention]:
        """Replace the active set with the levers of a steering expression (README: Steering
        expressions). ValueError (naming the column) leaves the set as it was."""
        from steer.steering.expr import parse_steering

        self._require_sae()
        levers = self.resolve_levers(parse_steering(text).interventions())
        with self._lock:
            self.features, self.removed = levers, []
        return self.features

    def resolve_levers(self, levers: list[Intervention]) -> list[Intervention]:
        """Levers checked against the SAE, saved vectors loaded from beside it; one lever
        per feature (the panel has one row per feature: the last one listed wins)."""
        from steer.steering.expr import Recipe, resolve_recipe

        resolved = resolve_recipe(Recipe(tuple(levers)), self.sae, self.sae_path)
        return list({iv.latent: iv for iv in resolved}.values())

    def active_interventions(self) -> list[Intervention]:
        """Copies of the enabled interventions (the UI may edit the originals meanwhile)."""
        return [dataclasses.replace(f) for f in self.features if f.enabled]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
