"""Presets in the playground: the presets dialog, then saving the levers and settings
or loading a saved set (steer.app.presets via the engine). A mixin of PlaygroundApp
(steer.tui.app)."""

from __future__ import annotations

from pathlib import Path

from .screens import PresetsScreen


class PresetActions:
    """Mixin for PlaygroundApp (before App among the bases)."""

    def action_presets(self, save: bool = False) -> None:
        self.push_screen(
            PresetsScreen(self.engine.list_presets(), self.engine.presets_dir, save),
            self.presets_closed,
        )

    def presets_closed(self, result: tuple[str, str] | None) -> None:
        if result is None:
            return
        what, name = result
        if what == "save":
            self.save_preset(name)
        else:
            self.load_preset(name)

    def save_preset(self, name: str) -> None:
        if not self.engine.features:
            self.notify("no active features: the preset would be empty", severity="warning")
        path = self.attempt(self.engine.save_preset, name)
        if path is not None:
            self.notify(
                f"saved {path}\n(steer generate --preset {path})", title="Preset saved", timeout=6
            )

    def load_preset(self, name: str) -> None:
        path = self.attempt(self.engine.load_preset, name)
        if path is not None:
            self.notify(
                f"loaded {Path(path).name}: {len(self.engine.features)} features", timeout=4
            )
            self.refresh_all()
