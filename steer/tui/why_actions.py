"""Why this token, in the playground: the why screen (with its circuit view), and the
lever it hands back: a latent to ablate, or a circuit node, at whichever depth, made a
lever. A mixin of PlaygroundApp (steer.tui.app)."""

from __future__ import annotations

from textual import work

from .screens import WhyScreen, first_line


class WhyActions:
    """Mixin for PlaygroundApp (before App among the bases)."""

    def action_why(self) -> None:
        """Pick a token of either completion: the latents that caused it (steer.app.why)."""
        gen = self.engine.last
        if gen is None or not any(gen.token_ids):
            self.notify("generate something first: then ask why a token came", severity="warning")
            return
        if not self.engine.has_sae:
            self.notify("no SAE loaded: attribution needs one", severity="warning")
            return
        self.push_screen(WhyScreen(self.engine), self.why_closed)

    def why_closed(self, latent: int | tuple | None) -> None:
        """The lever pulled in the why screen: ablate that latent and regenerate; or a
        circuit node (layer, latent, mode) to make a lever of."""
        if isinstance(latent, tuple):
            self.circuit_lever(*latent)
            return
        if latent is None or self.attempt(self.engine.ablate_lever, latent) is None:
            return
        self.notify(f"ablating #{latent} {self.engine.label(latent)}; regenerating", timeout=4)
        self.refresh_features()
        self.action_regenerate()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def circuit_lever(self, layer: int, latent: int, mode: str) -> None:
        """A circuit node as a lever: at another depth the engine opens that SAE first."""
        try:
            lever, switched = self.engine.circuit_lever(layer, latent, mode)
        except Exception as err:  # noqa: BLE001
            self.call_from_thread(
                self.notify, first_line(err), title="No lever", severity="error", timeout=8
            )
            return
        self.call_from_thread(self.circuit_lever_set, lever, switched)

    def circuit_lever_set(self, lever, switched: bool) -> None:
        if switched:
            self.notify(f"SAE: {self.engine.sae_name} (the previous SAE's levers are cleared)")
            self.refresh_all()
        else:
            self.refresh_features()
        what = "ablating" if lever.mode == "ablate" else "added"
        self.notify(f"{what} #{lever.latent} {self.engine.label(lever.latent)}", timeout=4)
        if lever.mode == "ablate":
            self.action_regenerate()
