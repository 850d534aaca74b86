"""What the playground's main screen shows, redrawn from the engine: the status line, the
feature panel and its expression line, and the two completion panes (chat turns or plain
text). A mixin of PlaygroundApp (steer.tui.app)."""

from __future__ import annotations

from textual.content import Content


class MainView:
    """Mixin for PlaygroundApp (before App among the bases)."""

    def refresh_all(self) -> None:
        self.refresh_status()
        self.refresh_features()
        self.refresh_panes()

    def refresh_status(self) -> None:
        e = self.engine
        s = e.settings
        sampling = (
            "greedy"
            if s.temperature == 0
            else f"T={s.temperature:g} top-p={s.top_p:g} seed={s.seed}"
        )
        mode = "chat" if e.chat_mode else "completion"
        parts = [
            ("steer", "bold $accent"),
            "  ",
            (e.model_name, "bold"),
            " · ",
            e.sae_name,
            " · ",
            (mode, "$accent"),
            " · ",
            sampling,
            f" · {s.max_new_tokens} tok",
            f" · steer {s.positions}",
        ]
        if self.auto_regenerate:
            parts.append(" · auto")
        self.status_line.update(Content.assemble(*parts))
        prompt = self.prompt_box
        prompt.placeholder = (
            "Message the model · enter sends · ctrl+l new chat"
            if e.chat_mode
            else "Text to complete · enter generates"
        )

    def slider_span(self) -> float:
        return self.engine.slider_steps()[1] * 4

    def refresh_features(self) -> None:
        e = self.engine
        panel = self.feature_panel
        if not e.has_sae:
            empty = "No SAE loaded: baseline only.\nOpen one with --sae DIR or ctrl+p."
        else:
            empty = "No active features.\nctrl+f finds features by text or label."
        panel.sync(e.features, e.caption, e.slider_steps(), self.slider_span(), empty)
        self.show_expression()
        on = sum(f.enabled for f in e.features)
        panel.border_title = f"Features {on}/{len(e.features)}" if e.features else "Features"
        panel.border_subtitle = f"strength {e.strength_unit}" if e.has_sae else ""

    def show_expression(self) -> None:
        """The expression line follows the levers, except under the user's cursor."""
        if not self.expression_line.has_focus:
            self.expression_line.value = self.engine.expression

    def transcript(self, row: int) -> Content:
        """What a pane shows: past chat turns (dim), the prompt, and this row's reply."""
        parts: list = []
        if self.view_prompt is None:
            if row == 1 and not self.engine.has_sae:
                return Content.styled("No SAE loaded: only the baseline runs.", "dim")
            return Content.styled("Completions appear here.", "dim")
        chat = self.engine.chat_mode
        if chat:
            for turn in self.view_history:
                parts += [
                    ("you › ", "bold $accent"),
                    (turn.user, "dim"),
                    "\n",
                    # Both rows continue the steered conversation: say so in the baseline pane.
                    ("model › " if row == 1 else "steered › ", "bold"),
                    (turn.steered, "dim"),
                    "\n\n",
                ]
            parts += [("you › ", "bold $accent"), self.view_prompt, "\n", ("model › ", "bold")]
        else:
            parts.append((self.view_prompt, "dim"))
        if row == 1 and not self.engine.has_sae:
            parts.append(("\n(no SAE loaded: baseline only)", "dim italic"))
        else:
            parts.append(self.texts[row].lstrip() if chat else self.texts[row])
        return Content.assemble(*parts)

    def refresh_panes(self) -> None:
        for row, pane in enumerate(self.panes):
            pane.show(self.transcript(row))
            pane.border_subtitle = self.status_text[row]
        n_on = sum(f.enabled for f in self.engine.features)
        title = "Steered"
        if self.engine.has_sae:
            title += f" · {n_on} feature{'s' if n_on != 1 else ''}"
        self.panes[1].border_title = title

    def on_descendant_blur(self, event) -> None:
        if event.widget is getattr(self, "expression_line", None):  # show what is in force
            self.expression_line.value = self.engine.expression
