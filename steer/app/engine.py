"""PlaygroundEngine: the state and the actions behind `steer chat`, with no Textual in sight.

The terminal UI (steer/tui/) is a thin view over this object: it shows what the engine
holds and calls its methods; everything here can be driven and tested without a terminal.

The engine holds the model, the SAE, the SAE's feature catalog (may be None), the active
interventions (one per latent), the generation settings and the chat history. All model
work goes through one lock, because interventions are forward hooks on the shared model:
two threads running it at once would see each other's hooks.

Strength units: when the catalog knows each latent's max activation, a strength is a
multiple of it (10 = Golden Gate Claude's clamp); otherwise it is in raw latent units.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from steer.lm.models import DEFAULT_MODEL  # re-exported: the TUI names the model it opens
from steer.steering import Intervention, check_latent, sae_layer
from steer.steering.generate import (
    GenerationSettings,
    TokenEvent,
    build_prompt_ids,
    generate_rows,
)

# Re-exported: callers (the CLI, the palette, tests) import these from the engine.
from .checkpoints import (  # noqa: F401
    DEFAULT_SAE_ROOT,
    checkpoint_roots,
    default_presets_dir,
    find_default_sae,
    is_sae_folder,
    list_checkpoints,
)
from .feature_lookup import FeatureLookupMixin
from .levers import LeverSetMixin
from .presets import PresetsMixin
from .token_views import TokenViewsMixin
from .views import (  # noqa: F401
    Context,
    FeatureHit,
    FeatureInfo,
    Generation,
    LeverHit,
    TokenActs,
    TokenView,
    Turn,
)

Progress = Callable[[float, str], None]
"""progress(fraction in 0..1, message): called while loading."""


class PlaygroundEngine(FeatureLookupMixin, LeverSetMixin, TokenViewsMixin, PresetsMixin):
    """The playground's view-model. Build it empty and `load`, or hand it a model and SAE.

    This class holds the state, loading, settings, history and generation; its mixins add
    feature lookup (feature_lookup.py), the lever set and its expression (levers.py), the
    views of a token (token_views.py) and presets (presets.py)."""

    def __init__(
        self,
        lm=None,
        sae=None,
        catalog=None,
        settings: GenerationSettings | None = None,
        sae_path: str | Path | None = None,
        presets_dir: str | Path | None = None,
        device: str = "cpu",
    ):
        self.lm = lm
        self.sae = sae
        self.catalog = catalog
        self.sae_path = Path(sae_path) if sae_path else None
        self.settings = settings or GenerationSettings()
        self.presets_dir = Path(presets_dir) if presets_dir else default_presets_dir()
        self.features: list[Intervention] = []
        self.removed: list[tuple[int, Intervention]] = []  # (position, feature): undo stack
        self.history: list[Turn] = []
        self.last: Generation | None = None
        self.notices: list[str] = []  # things the UI should tell the user after loading
        self.device = device
        self._lock = threading.RLock()

    # ------------------------------------------------------------ loading
    def load(
        self,
        model: str | None = None,
        sae_path: str | Path | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Load the model (and the SAE with its catalog). Raises ValueError on bad input."""
        from steer.lm.models import load_model

        report = progress or (lambda fraction, message: None)
        name = model or DEFAULT_MODEL
        report(0.05, f"loading model {name}")
        self.lm = load_model(name, device=self.device)
        report(0.7, f"model {name} loaded: {self.lm.n_layers} blocks, d={self.lm.d_model}")
        self.notices = []
        if sae_path is not None:
            self.load_sae(sae_path, progress=report)
        else:
            self.notices.append("no SAE loaded: baseline only (pass --sae DIR to steer)")
        report(1.0, "ready")

    def load_sae(self, path: str | Path, progress: Progress | None = None) -> None:
        """Swap in another SAE (and its catalog). Active features are cleared."""
        from sae import load_sae

        report = progress or (lambda fraction, message: None)
        self._require_model()
        folder = Path(path).expanduser()
        report(0.75, f"loading SAE {folder}")
        sae = load_sae(folder, device=self.lm.device)  # any format, any arch
        sae_layer(self.lm, sae)  # fits the model? (d_in, hookpoint in range)
        notices = []
        if sae.cfg.model_name and not _same_model(sae.cfg.model_name, self.lm.name):
            notices.append(f"SAE was trained on {sae.cfg.model_name}, the model is {self.lm.name}")
        report(0.85, "loading feature catalog")
        catalog = None
        from steer.features.catalog import CatalogMismatch, FeatureCatalog

        try:
            catalog = FeatureCatalog.for_sae(folder, sae)
            if catalog is None:
                notices.append(
                    f"no feature catalog beside {folder.name}: labels and label search are off "
                    f"(run `steer index --sae {folder}`); strengths are raw units"
                )
        except CatalogMismatch:
            notices.append(
                f"the feature catalog beside {folder.name} was built for another SAE: "
                "ignored (rebuild it with `steer index`); strengths are raw units"
            )
        except ValueError as err:
            notices.append(f"feature catalog unreadable ({err}); strengths are raw units")
        with self._lock:
            self.sae, self.catalog, self.sae_path = sae, catalog, folder
            self.features, self.removed = [], []  # latents of another SAE mean nothing here
            self.last = None
        self.notices = [n for n in self.notices if not n.startswith("no SAE loaded")] + notices

    def _require_model(self) -> None:
        if self.lm is None:
            raise ValueError("no model loaded")

    def _require_sae(self) -> None:
        self._require_model()
        if self.sae is None:
            raise ValueError("no SAE loaded: open one with --sae DIR or the command palette")

    # ------------------------------------------------------------ descriptions
    @property
    def model_name(self) -> str:
        return self.lm.name if self.lm is not None else "(no model)"

    @property
    def sae_name(self) -> str:
        """`run/resid_post.8 · 4096 latents · k=32` (the folder, and the hook point if the
        folder's name does not already say it)."""
        if self.sae is None:
            return "no SAE"
        hookpoint = self.sae.cfg.hookpoint
        folder = self.sae_path
        if folder is None:
            name = hookpoint
        elif folder.name == hookpoint:
            name = f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name
        else:
            name = f"{folder.name} @ {hookpoint}"
        sparsity = f"k={self.sae.k}" if self.sae.arch == "topk" else self.sae.arch
        return f"{name} · {self.sae.n_latents} latents · {sparsity}"

    @property
    def has_sae(self) -> bool:
        return self.sae is not None

    @property
    def n_latents(self) -> int:
        return self.sae.n_latents if self.sae is not None else 0

    @property
    def max_acts(self):
        return getattr(self.catalog, "max_acts", None) if self.catalog is not None else None

    @property
    def strength_unit(self) -> str:
        return "×max" if self.max_acts is not None else "raw"

    def slider_steps(self) -> tuple[float, float, float]:
        """(fine step, coarse step, limit) for strength sliders, in the current unit."""
        return (0.5, 5.0, 200.0) if self.max_acts is not None else (1.0, 10.0, 1000.0)

    def default_strength(self, mode: str) -> float:
        if mode == "ablate":
            return 0.0
        return 10.0 if self.max_acts is not None else 40.0

    @property
    def is_chat_model(self) -> bool:
        return bool(self.lm is not None and self.lm.is_chat)

    @property
    def chat_mode(self) -> bool:
        """Chat template with multi-turn history (instruct models) or plain completion."""
        if self.settings.chat is not None:
            return bool(self.settings.chat) and self.is_chat_model
        return self.is_chat_model

    def max_act(self, latent: int) -> float | None:
        acts = self.max_acts
        if acts is None:
            return None
        try:
            return float(acts[latent])
        except (IndexError, TypeError):
            return None

    def check_latent(self, latent: int) -> int:
        self._require_sae()
        return check_latent(latent, self.sae.n_latents)

    def coherence(self):
        """The coherence meter of the last finished generation: the unsteered model's
        cross-entropy on the steered reply against the baseline reply's
        (steer.steering.coherence.Coherence), or None without a finished steered row."""
        from steer.steering.coherence import measure

        gen = self.last
        if gen is None or not gen.finished or len(gen.token_ids) < 2 or not gen.levers:
            return None
        if not gen.token_ids[0] or not gen.token_ids[1]:
            return None
        with self._lock, torch.inference_mode():
            prompt = torch.tensor(gen.prompt_ids, dtype=torch.long)
            (meter,) = measure(self.lm, prompt, gen.token_ids[0], [gen.token_ids[1]])
        return meter

    # ------------------------------------------------------------ settings
    def update_settings(self, **changes) -> GenerationSettings:
        """Validate and apply settings changes; raises ValueError naming the bad field."""
        for key, cast in (
            ("max_new_tokens", int),
            ("seed", int),
            ("temperature", float),
            ("top_p", float),
        ):
            if key in changes:
                try:
                    changes[key] = cast(changes[key])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{key.replace('_', ' ')} must be a number, got {changes[key]!r}"
                    ) from None
        if changes.get("max_new_tokens", 1) > 4096:
            raise ValueError("max tokens must be at most 4096")
        if changes.get("chat") and not self.is_chat_model:
            raise ValueError(f"{self.model_name} has no chat template: chat mode is unavailable")
        try:
            self.settings = dataclasses.replace(self.settings, **changes)  # __post_init__ validates
        except TypeError as err:
            raise ValueError(f"unknown setting: {err}") from None
        return self.settings

    # ------------------------------------------------------------ chat history
    def clear_history(self) -> None:
        self.history = []
        self.last = None

    def forget_last_turn(self, user: str) -> bool:
        """Before regenerating: drop the last chat turn if it answered `user`, so the same
        message is answered again rather than repeated. True when a turn was dropped."""
        if self.chat_mode and self.history and self.history[-1].user == user:
            self.history.pop()
            return True
        return False

    def messages_for(self, prompt: str) -> list[dict]:
        """The conversation sent to the model: past turns follow the steered replies (the
        conversation the user is having); the baseline row answers the same conversation."""
        messages: list[dict] = []
        for turn in self.history:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.steered})
        messages.append({"role": "user", "content": prompt})
        return messages

    # ------------------------------------------------------------ generation
    def inference_context(self):
        """Entered by the UI's worker thread around a generation."""
        return torch.inference_mode()

    def generate(
        self, prompt: str, cancel: Callable[[], bool] | None = None
    ) -> Iterator[list[TokenEvent]]:
        """Baseline (row 0) and steered (row 1) completions of `prompt`, one batch, streamed.

        Yields lists of TokenEvent as tokens arrive; `cancel()` is checked between tokens.
        Close the iterator (or exhaust it) to release the model. Without an SAE only the
        baseline row runs. `self.last` holds the result; in chat mode a finished exchange
        is appended to `self.history`.
        """
        self._require_model()
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        with self._lock:  # held until the stream ends or is closed: the hooks are on a shared model
            chat = self.chat_mode
            source = self.messages_for(prompt) if chat else prompt
            settings = dataclasses.replace(self.settings)
            rows: list[list[Intervention]] = [[]]
            if self.sae is not None:
                rows.append(self.active_interventions())
            prompt_ids = self._prompt_ids(source, chat)
            gen = Generation(
                prompt,
                prompt_ids,
                [[] for _ in rows],
                ["" for _ in rows],
                [False for _ in rows],
                chat,
                levers=[dataclasses.replace(iv) for iv in rows[1]] if len(rows) > 1 else [],
                positions=settings.positions,
            )
            self.last = gen
            stream = self._stream(prompt_ids, rows, settings, cancel)
            try:
                for events in stream:
                    for event in events:
                        if not self._is_stop(event):
                            gen.token_ids[event.row].append(int(event.token_id))
                        gen.texts[event.row] += event.text
                        gen.done[event.row] = gen.done[event.row] or event.done
                    yield events
                gen.cancelled = bool(cancel is not None and cancel()) and not all(gen.done)
                gen.finished = not gen.cancelled
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
                if not gen.finished:
                    gen.cancelled = True
        if chat and gen.finished:
            self.history.append(Turn(prompt, gen.texts[0].strip(), gen.texts[-1].strip()))

    def _prompt_ids(self, source: str | list[dict], chat: bool) -> list[int]:
        return build_prompt_ids(self.lm, source, chat=chat).tolist()

    def _stream(self, prompt_ids: list[int], rows, settings, cancel) -> Iterator[list[TokenEvent]]:
        ids = torch.tensor(prompt_ids, dtype=torch.long)
        return generate_rows(
            self.lm, self.sae, ids, rows, settings, max_acts=self.max_acts, cancel=cancel
        )

    def _is_stop(self, event: TokenEvent) -> bool:
        """The EOS token that ends a row is not part of its completion."""
        from steer.steering.generate import eos_ids

        return bool(event.done and event.token_id in eos_ids(self.lm))


def _same_model(a: str, b: str) -> bool:
    from steer.lm.models import EMBEDDED_HUB_ID

    embedded = {DEFAULT_MODEL, EMBEDDED_HUB_ID}
    return a == b or (a in embedded and b in embedded)
