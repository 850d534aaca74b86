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
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from steer.lm.models import DEFAULT_MODEL  # re-exported: the TUI names the model it opens
from steer.steering import MODES, Intervention, check_latent, sae_layer
from steer.steering.generate import (
    GenerationSettings,
    TokenEvent,
    build_prompt_ids,
    feature_activations,
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
from .query import feature_number
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


class PlaygroundEngine:
    """The playground's view-model. Build it empty and `load`, or hand it a model and SAE."""

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

    def feature_web(self):
        """The loaded SAE's family web (`steer web`) as a steer.app.web.WebView, or None."""
        from .web import WebView

        self._require_sae()
        key = (str(self.sae_path), self.sae.n_latents)
        if getattr(self, "_web", (None, None))[0] != key:
            self._web = (key, WebView.for_sae(self.sae_path, self.sae.n_latents))
        return self._web[1]

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

    def label(self, latent: int | str) -> str:
        if isinstance(latent, str):  # a saved vector (the row shows v:NAME)
            return "saved vector"
        if self.catalog is None:
            return ""
        try:
            return self.catalog.entry(latent).label or ""
        except (IndexError, KeyError, ValueError):
            return ""

    def _shown(self, latent: int):
        ex = getattr(self.catalog, "explanations", None) if self.catalog is not None else None
        if ex is None or isinstance(latent, str) or not 0 <= latent < self.catalog.n_latents:
            return None
        return ex.explanation(latent)

    def explanation(self, latent: int) -> str:
        """The best explanation with what made it and its score, or ""."""
        shown = self._shown(latent)
        return f"{shown.text} ({shown.source} · {shown.score})" if shown else ""

    def caption(self, latent: int) -> str:
        """The label and, in a few characters, its explanation's score: `... P.92 R.41`."""
        shown = self._shown(latent)
        label = self.label(latent)
        return f"{label}  {shown.short}" if shown and shown.short else label

    def _hit(self, latent: int, score: float | None, label: str | None = None) -> FeatureHit:
        return FeatureHit(
            latent, score, self.label(latent) if label is None else label, self.explanation(latent)
        )

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

    # ------------------------------------------------------------ finding features
    def find_by_text(self, text: str, n: int = 20) -> list[FeatureHit]:
        """The latents that fire most on `text`, strongest first."""
        from steer.features.catalog import latents_for_text

        self._require_sae()
        if not text.strip():
            raise ValueError("type some text to see which features fire on it")
        with self._lock, torch.inference_mode():
            found = latents_for_text(self.lm, self.sae, text, n=n, catalog=self.catalog)
        return [self._hit(int(i), float(score)) for i, score in found]

    def search(self, query: str, limit: int = 20) -> list[FeatureHit]:
        """Ranked search (BM25) over labels, explanations, activating tokens, logit lens
        and top contexts; `#123` or `123` jumps to latent 123."""
        self._require_sae()
        query = query.strip()
        number = feature_number(query)
        if number is not None:
            latent = self.check_latent(number)
            return [self._hit(latent, None)]
        if not query:
            raise ValueError("type a word to search feature labels, or #N for feature N")
        if self.catalog is None:
            raise ValueError(
                "this SAE has no feature catalog, so labels cannot be searched "
                "(run `steer index`); search by text works without it"
            )
        return [
            self._hit(int(e.index), None, e.label or "")
            for e in self.catalog.search(query, limit=limit)
        ]

    def toward(self, text: str, top: int = 5) -> list[LeverHit]:
        """Features that make the model talk about `text`, each with a recommended mode
        and strength (in this engine's strength units), best first."""
        from steer.steering.toward import toward

        self._require_sae()
        if not text.strip():
            raise ValueError("type a word or phrase to steer toward")
        with self._lock:
            output = self.catalog.output_table() if self.catalog is not None else None
            levers = toward(self.lm, self.sae, text, max_acts=self.max_acts, top=top, output=output)
        return [
            LeverHit(
                lv.feature, lv.score, self.label(lv.feature), mode=lv.mode, strength=lv.strength
            )
            for lv in levers
        ]

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

    def related_features(self, latent: int, n: int = 3) -> list[FeatureHit]:
        """Feature splitting: the nearest features (decoder cosine) of `latent` in every
        wider SAE of the same family (sibling folders at the same hook point)."""
        if self.sae_path is None:
            return []
        from steer.features.family import family_neighbours

        try:
            neighbours = family_neighbours(self.sae_path, latent, n=n)
        except (ValueError, OSError):
            return []
        return [
            FeatureHit(nb.latent, nb.cosine, f"[{member}] cos {nb.cosine:.2f}  {nb.label}".rstrip())
            for member, hits in neighbours.items()
            for nb in hits
        ]

    def inspect(self, latent: int) -> FeatureInfo:
        """Catalog entry of a latent; the logit lens is computed when there is no catalog."""
        latent = self.check_latent(latent)
        related = self.related_features(latent)
        if self.catalog is not None:
            entry = self.catalog.entry(latent)
            return FeatureInfo(**vars(entry), related=related)
        top, bottom = self.logit_lens(latent)
        return FeatureInfo(latent, "", None, None, None, top, bottom, [], related=related)

    def logit_lens(self, latent: int, n: int = 10) -> tuple[list[str], list[str]]:
        """Tokens the decoder direction promotes / suppresses (see steer.features.catalog.logit_lens)."""
        from steer.features.catalog import logit_lens

        latent = self.check_latent(latent)
        with self._lock, torch.inference_mode():
            top, bottom = logit_lens(
                self.lm, self.sae.decoder_directions([latent]), n=n, fast=False
            )
        return [self.token_text(t) for t in top[0].tolist()], [
            self.token_text(t) for t in bottom[0].tolist()
        ]

    def token_text(self, token_id: int) -> str:
        return self.lm.tokenizer.decode([int(token_id)])

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

    def _feature_acts(self, token_ids: list[int], latent: int) -> list[float]:
        ids = torch.tensor(token_ids, dtype=torch.long, device=self.lm.device)
        return feature_activations(self.lm, self.sae, ids, [latent])[:, 0].float().tolist()

    def token_activations(self, latent: int) -> TokenView:
        """Per-token activations of `latent` on the last prompt and both completions.

        Each text is read by the unsteered model (so a clamped feature shows how much the
        steered text itself evokes it, not the clamp value)."""
        latent = self.check_latent(latent)
        gen = self.last
        if gen is None:
            raise ValueError(
                "generate something first: the per-token view reads the last prompt and completions"
            )
        n_prompt = len(gen.prompt_ids)
        rows = []
        with self._lock, torch.inference_mode():
            for ids in gen.token_ids:
                rows.append(self._feature_acts(gen.prompt_ids + ids, latent))
        prompt = TokenActs([self.token_text(t) for t in gen.prompt_ids], rows[0][:n_prompt])
        views = [
            TokenActs([self.token_text(t) for t in ids], acts[n_prompt:])
            for ids, acts in zip(gen.token_ids, rows, strict=True)
        ]
        observed = max([abs(a) for acts in rows for a in acts] or [0.0])
        scale = self.max_act(latent) or observed or 1.0
        return TokenView(
            latent,
            self.label(latent),
            prompt,
            views[0],
            views[1] if len(views) > 1 else None,
            max(scale, 1e-6),
        )

    # ------------------------------------------------------------ why this token?
    def explain_token(self, row: int, index: int, top: int = 8):
        """The latents that caused token `index` of the last completion `row` (0 baseline,
        1 steered), checked by ablation, with the tokens driving each (steer.app.why)."""
        from .why import explain_token

        with self._lock:
            return explain_token(self, row, index, top)

    # ------------------------------------------------------------ the circuit of a token
    def circuit_token(self, row: int, index: int, nodes: int = 6):
        """The feature circuit behind token `index` of the last completion `row`, through
        the loaded SAE and its siblings at other depths (steer.app.circuits)."""
        from .circuits import DepthSAEs, circuit_for_token

        with self._lock:
            if getattr(self, "_depth_saes", None) is None:
                self._depth_saes = DepthSAEs()
            return circuit_for_token(self, self._depth_saes, row, index, nodes)

    def circuit_lever(self, layer: int, latent: int, mode: str = "ablate"):
        """A latent node of a circuit as a lever: (the lever, whether the SAE was switched
        to the node's depth first)."""
        from .circuits import circuit_lever

        with self._lock:
            return circuit_lever(self, layer, latent, mode)

    def ablate_lever(self, latent: int) -> Intervention:
        """Make `latent` an active ablation lever (added, or switched to ablate and on)."""
        feature = self.add_feature(latent, mode="ablate")
        feature.mode, feature.enabled = "ablate", True
        return feature

    # ------------------------------------------------------------ presets
    def preset_path(self, name_or_path: str | Path) -> Path:
        """`golden` -> <presets_dir>/golden.json; a path (with / or .json) is used as is."""
        text = str(name_or_path).strip()
        if not text:
            raise ValueError("give the preset a name")
        if os.sep in text or "/" in text or text.endswith(".json"):
            path = Path(text).expanduser()
            return path if path.suffix == ".json" else path.with_suffix(".json")
        return self.presets_dir / f"{text}.json"

    def list_presets(self) -> list[Path]:
        return sorted(self.presets_dir.glob("*.json")) if self.presets_dir.is_dir() else []

    def save_preset(self, name_or_path: str | Path) -> Path:
        """Write the active features and the settings as JSON (`steer generate --preset`)."""
        from steer.steering import presets

        path = self.preset_path(name_or_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        presets.save_preset(
            path,
            [dataclasses.replace(f) for f in self.features],
            self.settings,
            sae=str(self.sae_path) if self.sae_path else None,
        )
        return path

    def load_preset(self, name_or_path: str | Path) -> Path:
        """Replace the active features (and settings) with a preset's."""
        from steer.steering import presets

        path = self.preset_path(name_or_path)
        if not path.is_file():
            raise ValueError(f"no preset at {path}")
        preset = presets.load_preset(path)
        self._require_sae()
        self.features = self.resolve_levers(preset.interventions)
        if preset.settings is not None:
            self.settings = dataclasses.replace(preset.settings)
            if self.settings.chat and not self.is_chat_model:
                self.settings.chat = None
        return path


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")


def _same_model(a: str, b: str) -> bool:
    from steer.lm.models import EMBEDDED_HUB_ID

    embedded = {DEFAULT_MODEL, EMBEDDED_HUB_ID}
    return a == b or (a in embedded and b in embedded)
