"""The coherence meter on the steered pane: after each finished generation with levers,
the unsteered model reads the steered reply (steer.steering.coherence via the engine) and
the pane's subtitle says whether it is still text, so the user sees when a slider has
pushed the model into gibberish."""

from __future__ import annotations

from textual import work
from textual.message import Message

from .screens import first_line


class CoherenceMeasured(Message):
    def __init__(self, gen_id: int, meter) -> None:
        super().__init__()
        self.gen_id = gen_id
        self.meter = meter  # steer.steering.coherence.Coherence


class CoherenceMeter:
    """Mixin for PlaygroundApp (before App among the bases): `measure_coherence(gen_id)`
    once a generation has ended; the verdict is appended to the steered pane's status."""

    @work(thread=True, exclusive=True, group="coherence", exit_on_error=False)
    def measure_coherence(self, gen_id: int) -> None:
        try:
            meter = self.engine.coherence()
        except Exception as err:  # noqa: BLE001 - the meter is optional, the reply stands
            self.log.error(f"coherence meter: {first_line(err)}")
            return
        if meter is not None:
            self.post_message(CoherenceMeasured(gen_id, meter))

    def on_coherence_measured(self, message: CoherenceMeasured) -> None:
        # A newer generation (or one running now) has its own meter coming.
        if message.gen_id != self.gen_id or self.generating:
            return
        meter = message.meter
        verdict = "coherent" if meter.ok else "⚠ gibberish"
        self.status_text[1] += (
            f" · {verdict} {meter.steered:.1f} nats/tok (unsteered {meter.baseline:.1f})"
        )
        self.refresh_panes()
        if not meter.ok:
            self.notify(
                f"the steered reply reads as gibberish: {meter.describe()}; lower the strength",
                severity="warning",
                timeout=6,
            )
