"""The command palette (ctrl+p): a guarded Textual palette and its providers (features,
presets and SAE checkpoints)."""

from __future__ import annotations

from functools import partial

from textual.command import CommandList, CommandPalette, DiscoveryHit, Hit, Hits, Provider
from textual.widgets import OptionList

from steer.app.query import feature_number

from .errors import Dialog


def pages_ready(option_list: OptionList) -> bool:
    """Whether `option_list` can move by a page.

    Textual 8.2's `OptionList._move_page` reads a map from options to screen lines that
    is filled only once the list has a size: PageDown on a list that has options but has
    not been laid out yet (the palette right after ctrl+p) raised KeyError and ended the
    app. The map is private; reading it here is the narrowest check that is exact."""
    if not option_list.scrollable_content_region:
        return False
    highlighted = option_list.highlighted
    return highlighted is None or highlighted in option_list._index_to_line


class SafeOptionList(OptionList):
    """An OptionList whose PageUp/PageDown move one option until it has been laid out."""

    def _move_page(self, direction) -> None:
        if pages_ready(self):
            super()._move_page(direction)
        elif direction > 0:
            self.action_cursor_down()
        else:
            self.action_cursor_up()


class SafePalette(Dialog, CommandPalette):
    """Textual's command palette, with PageUp/PageDown safe before its list is laid out,
    dismissed once (escape, then a selection already on its way, dismissed the screen
    beneath), and its errors contained."""

    def _composed(self) -> bool:
        """False for a key that arrives before the palette has built its list."""
        return bool(self.query(CommandList))

    def _action_command_list(self, action: str) -> None:
        if not self._composed():
            return
        if action in ("page_up", "page_down") and not pages_ready(self.query_one(CommandList)):
            action = "cursor_down" if action == "page_down" else "cursor_up"
        super()._action_command_list(action)

    def _action_cursor_down(self) -> None:
        if self._composed():
            super()._action_cursor_down()

    def _watch__list_visible(self) -> None:
        # Results can arrive from the search worker while the palette is being taken
        # down (escape), its list already gone: Textual's watcher then raised NoMatches.
        if self._composed():
            super()._watch__list_visible()


class FeatureCommands(Provider):
    """`#123` or a label word: add a feature to the active set, or inspect it."""

    async def search(self, query: str) -> Hits:
        app = self.app
        engine = app.engine
        if engine.sae is None:
            return
        query = query.strip()
        latent = feature_number(query)
        if latent is not None and latent < engine.n_latents:
            label = engine.label(latent)
            yield Hit(
                1.0,
                f"Add feature #{latent} {label}".rstrip(),
                partial(app.add_feature, latent),
                help="add it to the active set",
            )
            yield Hit(
                0.9,
                f"Inspect feature #{latent} {label}".rstrip(),
                partial(app.inspect_feature, latent),
                help="top contexts, logit lens, statistics",
            )
            return
        matcher = self.matcher(query)
        for feature in engine.features:
            text = (
                f"Inspect active feature #{feature.latent} {engine.label(feature.latent)}".rstrip()
            )
            score = matcher.match(text)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(text), partial(app.inspect_feature, feature.latent)
                )
        if engine.catalog is None or len(query) < 2:
            return
        try:
            entries = engine.search(query, limit=10)
        except ValueError:
            return
        for hit in entries:
            text = f"Add feature #{hit.latent} {hit.label}".rstrip()
            yield Hit(
                max(matcher.match(text), 0.5),
                matcher.highlight(text),
                partial(app.add_feature, hit.latent),
                help=hit.explanation or "label search",
            )


class _ListProvider(Provider):
    """A provider over a fixed list of (text, callback, help) from `_commands()`."""

    def _commands(self):
        raise NotImplementedError

    async def discover(self) -> Hits:
        for text, command, help_text in self._commands():
            yield DiscoveryHit(text, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, command, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), command, help=help_text)


class PresetCommands(_ListProvider):
    """Load a saved preset, or save the active set."""

    def _commands(self):
        app = self.app
        for path in app.engine.list_presets():
            yield f"Load preset {path.stem}", partial(app.load_preset, str(path)), str(path)
        yield "Save active features as preset…", partial(app.action_presets, True), "ctrl+s"


class CheckpointCommands(_ListProvider):
    """Open another SAE checkpoint (folders with cfg.json + sae.safetensors)."""

    def _commands(self):
        from steer.app.engine import list_checkpoints

        app = self.app
        for folder in list_checkpoints():
            try:
                shown = folder.relative_to(folder.parents[2])
            except (ValueError, IndexError):
                shown = folder
            yield f"Open SAE {shown}", partial(app.open_sae, str(folder)), str(folder)
