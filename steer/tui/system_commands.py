"""The playground's command palette: Textual's, guarded, with the playground's actions
among its system commands. A mixin of PlaygroundApp (steer.tui.app)."""

from __future__ import annotations

from functools import partial

from textual.app import SystemCommand

from .palette import SafePalette


class SystemCommands:
    """Mixin for PlaygroundApp (before App among the bases: it extends App's commands)."""

    def action_command_palette(self) -> None:
        """Textual's palette, guarded (steer.tui.palette.SafePalette)."""
        if self.use_command_palette and not SafePalette.is_open(self):
            self.push_screen(SafePalette(id="--command-palette"))

    def get_system_commands(self, screen):
        """The palette's actions: Textual's own plus the playground's."""
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Find features",
            "which features fire on a text, or search labels (ctrl+f)",
            self.action_find,
        )
        yield SystemCommand(
            "Steer toward…",
            "features that make the model talk about a concept, at a sane strength",
            self.action_steer_toward,
        )
        yield SystemCommand(
            "Regenerate", "run the last prompt again (ctrl+r)", self.action_regenerate
        )
        yield SystemCommand(
            "Generation settings",
            "temperature, top-p, max tokens, seed, positions (ctrl+g)",
            self.action_settings,
        )
        yield SystemCommand(
            "Save preset",
            "save the active features as JSON (ctrl+s)",
            partial(self.action_presets, True),
        )
        yield SystemCommand(
            "Load preset",
            "replace the active features with a saved set (ctrl+o)",
            self.action_presets,
        )
        yield SystemCommand(
            "New chat", "clear the history and the panes (ctrl+l)", self.action_new_chat
        )
        yield SystemCommand(
            "Chat / completion mode",
            "switch between chat template and plain text (ctrl+n)",
            self.action_toggle_chat,
        )
        yield SystemCommand(
            "Per-token view", "how a feature fires on each token (ctrl+t)", self.action_tokens
        )
        yield SystemCommand(
            "Why this token?",
            "the features that caused a token of either completion (ctrl+y)",
            self.action_why,
        )
        yield SystemCommand(
            "Run history", "earlier runs: show, bring back, export (f6)", self.action_history
        )
        yield SystemCommand(
            "Export run history", "JSON and Markdown of every run", self.export_runs
        )
        yield SystemCommand("Help: every key", "the playground's keys (F1)", self.action_help)
