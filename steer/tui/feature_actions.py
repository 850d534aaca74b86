"""The feature panel's actions: adding a lever, a row's keys (mute, mode, remove with
undo, inspect, per-token view) and its slider. A mixin of PlaygroundApp (steer.tui.app)."""

from __future__ import annotations

from .screens import InspectorScreen, TokenViewScreen
from .widgets import FeatureRow, PromptInput, Slider


class FeatureActions:
    """Mixin for PlaygroundApp (before App among the bases)."""

    def add_feature(
        self, latent: int, strength: float | None = None, mode: str | None = None
    ) -> None:
        existed = self.engine.feature(latent) is not None
        extra = {"mode": mode} if mode is not None else {}
        feature = self.attempt(self.engine.add_feature, latent, strength, **extra)
        if feature is None:
            return
        self.refresh_features()
        self.refresh_panes()
        label = self.engine.label(latent)
        if existed:
            self.notify(f"#{latent} is already active", timeout=3)
        else:
            self.notify(
                f"added #{latent} {label} · {feature.mode} {feature.strength:g} "
                f"{self.engine.strength_unit}".replace("  ", " "),
                timeout=3,
            )
        self.call_after_refresh(self.focus_feature, latent)

    def on_slider_typed_text(self, message: Slider.TypedText) -> None:
        """Text typed on the feature panel is the start of a prompt: it goes there."""
        self.query_one("#prompt", PromptInput).take_text(message.text)

    def action_undo_remove(self) -> None:
        feature = self.attempt(self.engine.undo_remove)
        if feature is None:
            return
        self.refresh_features()
        self.refresh_panes()
        self.notify(f"brought back #{feature.latent}", timeout=3)
        self.call_after_refresh(self.focus_feature, feature.latent)
        self.schedule_auto_regenerate()

    def focus_feature(self, latent: int) -> None:
        row = self.feature_panel.row(latent)
        if row is not None:
            row.slider.focus()

    def inspect_feature(self, latent: int) -> None:
        self.push_screen(InspectorScreen(self.engine, latent))

    def show_token_view(self, latent: int) -> None:
        if self.engine.last is None:
            self.notify(
                "generate something first: the per-token view reads the last prompt and completions",
                severity="warning",
            )
            return
        self.push_screen(TokenViewScreen(self.engine, latent))

    def focused_latent(self) -> int | None:
        node = self.focused
        while node is not None:
            if isinstance(node, FeatureRow):
                return node.latent
            node = node.parent
        return None

    def action_tokens(self) -> None:
        latent = self.focused_latent()
        if latent is None and self.engine.features:
            latent = self.engine.features[0].latent
        if latent is None:
            self.notify("add a feature first (ctrl+f)", severity="warning")
            return
        self.show_token_view(latent)

    def on_feature_row_request(self, message: FeatureRow.Request) -> None:
        latent, what = message.latent, message.what
        if self.engine.feature(latent) is None:
            return  # a row already removed (a second key before it left the screen)
        if what == "toggle":
            self.attempt(self.engine.toggle, latent)
        elif what == "mode":
            self.attempt(self.engine.cycle_mode, latent)
        elif what == "remove":
            rows = [f.latent for f in self.engine.features]
            self.attempt(self.engine.remove_feature, latent)
            rest = [x for x in rows if x != latent]
            if rest:
                index = min(rows.index(latent), len(rest) - 1)
                self.call_after_refresh(self.focus_feature, rest[index])
            else:
                self.call_after_refresh(self.prompt_box.focus)
        elif what == "inspect":
            self.inspect_feature(latent)
            return
        elif what == "tokens":
            self.show_token_view(latent)
            return
        self.refresh_features()
        self.refresh_panes()
        self.schedule_auto_regenerate()

    def on_slider_changed(self, message: Slider.Changed) -> None:
        row = message.slider.parent.parent if message.slider.parent else None
        if isinstance(row, FeatureRow) and self.engine.feature(row.latent) is not None:
            feature = self.engine.feature(row.latent)
            if feature.strength != message.value:
                self.engine.set_strength(row.latent, message.value)
                self.show_expression()
                self.schedule_auto_regenerate()
