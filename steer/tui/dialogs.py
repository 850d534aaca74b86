"""The playground's dialogs: help, find features (by text or label, or toward a concept),
the feature web and the generation settings. A mixin of PlaygroundApp (steer.tui.app)."""

from __future__ import annotations

from .screens import FindScreen, HelpScreen, SettingsScreen, WebScreen


class DialogActions:
    """Mixin for PlaygroundApp (before App among the bases)."""

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_find(self) -> None:
        if not self.engine.has_sae:
            self.notify("no SAE loaded: there are no features to find", severity="warning")
            return
        self.push_screen(FindScreen(self.engine))

    def action_steer_toward(self) -> None:
        if not self.engine.has_sae:
            self.notify("no SAE loaded: there are no features to steer with", severity="warning")
            return
        self.push_screen(FindScreen(self.engine, toward=True))

    def action_web(self) -> None:
        if not self.engine.has_sae:
            self.notify("no SAE loaded: there is no feature web", severity="warning")
            return
        view = self.attempt(self.engine.feature_web)
        if view is None:
            self.notify(
                f"no feature web for this SAE: build one with  steer web --sae {self.engine.sae_path}",
                severity="warning",
            )
            return
        self.push_screen(WebScreen(self.engine, view))

    def action_settings(self) -> None:
        e = self.engine
        self.push_screen(
            SettingsScreen(e.settings, e.is_chat_model, e.chat_mode, self.auto_regenerate),
            self.settings_closed,
        )

    def settings_closed(self, changes: dict | None) -> None:
        if changes is None:
            return
        self.auto_regenerate = bool(changes.pop("auto_regenerate", self.auto_regenerate))
        if self.attempt(self.engine.update_settings, **changes) is not None:
            self.notify("settings applied", timeout=2)
        self.refresh_status()
        self.refresh_panes()
